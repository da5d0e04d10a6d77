"""Built datasets, found without TensorFlow: commands check their data in a second, before
TensorFlow takes seconds to load."""

from __future__ import annotations

import logging
from pathlib import Path


def prepared_builder(config: str, data_dir: str | Path | None):
    """The builder of an already built config, or a FileNotFoundError saying how to build it."""
    from iam_writers_tfds import iam_writers_tfds_dataset_builder as b

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # TFDS warns of a folder without dataset_info; ours says more
    try:
        builder = b.Builder(config=config, data_dir=str(data_dir) if data_dir else None)
        prepared = builder.is_prepared()
    finally:
        absl.setLevel(level)
    if not prepared:
        raise FileNotFoundError(
            f"iam_writers_tfds/{config} is not built in {builder.data_dir_root}. "
            f"Run: iam-writers build --config {config}"
            + (f" --data-dir {data_dir}" if data_dir else "")
        )
    return builder


def writer_names(config: str, data_dir: str | Path | None = None) -> list[str]:
    """The writer ids of a built config, in class-index order."""
    return list(prepared_builder(config, data_dir).info.features["writer"].names)
