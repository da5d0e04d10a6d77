"""IAM handwriting top-50 writers as a TFDS dataset folder.

Kept free of imports on purpose: `tfds build iam_writers_tfds` imports the
builder module by path, and package-level imports break that.
"""
