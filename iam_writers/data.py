"""Building and loading the TFDS dataset from the command line's point of view."""

from __future__ import annotations

import collections
import dataclasses
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from iam_writers_tfds.configs import NAMES as CONFIGS


@dataclasses.dataclass
class BuildConfig:
    """What `iam-writers build` needs: config name, manual folders (none, one, or several
    whose layouts are built as one dataset) and the TFDS data folder."""

    config: str = "synthetic"
    manual_dir: Path | Sequence[Path] | None = None
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.config not in CONFIGS:
            raise ValueError(f"unknown config {self.config!r}; choose one of {', '.join(CONFIGS)}")
        if self.manual_dir is None or isinstance(self.manual_dir, str | Path):
            self.manual_dir = () if self.manual_dir is None else (self.manual_dir,)
        self.manual_dir = tuple(Path(m) for m in self.manual_dir)


def builder(cfg: BuildConfig):
    """The TFDS builder for `cfg` (not yet prepared)."""
    from iam_writers_tfds import iam_writers_tfds_dataset_builder as b

    return b.Builder(config=cfg.config, data_dir=str(cfg.data_dir) if cfg.data_dir else None)


def check_manual_dirs(cfg: BuildConfig) -> None:
    """Refuse a missing or empty --manual-dir (before TensorFlow is imported)."""
    for folder in cfg.manual_dir:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: --manual-dir does not exist. Check the path.")
        if not any(folder.iterdir()):
            raise FileNotFoundError(f"{folder}: --manual-dir is empty. Put the Kaggle zip, the "
                                    "IAM archives, or their extracted contents there.")


def build(cfg: BuildConfig):
    """Download (or generate) and prepare the dataset; returns the builder. Re-runnable:
    TFDS writes into a temporary folder and renames it when the build is complete; a failed
    build removes the folders it created. Several manual folders reach the builder as the
    subfolders of one (links to them)."""
    import sys

    check_manual_dirs(cfg)  # before TensorFlow loads
    import tensorflow_datasets as tfds

    if not sys.stderr.isatty():  # TFDS's nested bars leave escape codes in a log file
        tfds.disable_progress_bar()
    b = builder(cfg)
    new = _first_missing(Path(b.data_dir))
    try:
        _prepare(b, cfg)
    except BaseException:
        if new is not None:
            shutil.rmtree(new, ignore_errors=True)
        raise
    return b


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None: it all exists)."""
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def _prepare(b, cfg: BuildConfig) -> None:
    import tensorflow_datasets as tfds

    def prepare(manual: str | None) -> None:
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))

    if len(cfg.manual_dir) <= 1:  # no folder of links: a killed build leaves none in /tmp
        prepare(str(cfg.manual_dir[0]) if cfg.manual_dir else None)
        return
    with tempfile.TemporaryDirectory(prefix="iam-writers-sources-") as links:
        for i, folder in enumerate(cfg.manual_dir):
            (Path(links) / f"{i}-{folder.resolve().name}").symlink_to(folder.resolve())
        prepare(links)


def statistics(b) -> str:
    """A table of images, forms, writers and image sizes per split of a prepared builder."""
    import numpy as np
    import tensorflow_datasets as tfds

    rows = [f"{b.info.full_name} at {b.data_dir}"]
    rows.append(f"{'split':<11}{'images':>8}{'forms':>7}{'writers':>9}  height      width")
    for split in ("train", "validation", "test"):
        forms, writers, heights, widths = set(), collections.Counter(), [], []
        for ex in tfds.as_numpy(b.as_dataset(split=split)):
            forms.add(ex["form_id"])
            writers[ex["writer_id"]] += 1
            heights.append(ex["image"].shape[0])
            widths.append(ex["image"].shape[1])
        h, w = np.array(heights), np.array(widths)
        rows.append(
            f"{split:<11}{len(h):>8}{len(forms):>7}{len(writers):>9}  "
            f"{h.min()}-{h.max():<7}{w.min()}-{w.max()}"
        )
    meta = b.info.metadata
    rows.append(f"writers: {b.info.features['writer'].num_classes}; dataset size "
                f"{b.info.dataset_size / 2**20:.1f} MiB; split seed {meta['split_seed']}, "
                f"validation {meta['val_fraction']}, test {meta['test_fraction']}")
    rows.append(f"split rule: {meta['split_rule']}")
    return "\n".join(rows)
