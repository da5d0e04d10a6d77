"""The builder's config names, importable without TFDS: the command line's choices.

`iam_writers_tfds_dataset_builder.Builder.BUILDER_CONFIGS` defines one config per name, in
this order (its test checks that they agree).
"""

NAMES = ("top50", "top10", "synthetic", "iam", "iam_ok")
