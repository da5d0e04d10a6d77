"""The builder's config names, importable without TFDS: the command line's choices; and the
check of a seed, which every configuration takes.

`iam_writers_tfds_dataset_builder.Builder.BUILDER_CONFIGS` defines one config per name, in
this order (its test checks that they agree).
"""

NAMES = ("top50", "top10", "synthetic", "iam", "iam_ok")


def check_seed(seed: int) -> None:
    """Refuse a seed that NumPy's and TensorFlow's generators refuse (in a traceback, after
    the output folder was made): one from 0 to 2**32 - 1."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be from 0 to {2**32 - 1}, got {seed}")
