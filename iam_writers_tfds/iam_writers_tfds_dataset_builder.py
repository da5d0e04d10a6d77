"""iam_writers_tfds: writer identification on the IAM handwriting database's top writers."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from iam_writers_tfds import images, kaggle_layout, synth

logger = logging.getLogger(__name__)

_DESCRIPTION = """
Handwritten text images from the IAM Handwriting Database, labelled by writer, in the layout
of the Kaggle subset `tejasreddy/iam-handwriting-top50`. Images are grayscale PNGs at native
resolution. Splits are form-disjoint and stratified by writer (see metadata `split_rule`).
The `synthetic` config is generated offline by the project's own generator.
"""


@dataclasses.dataclass
class IamWritersConfig(tfds.core.BuilderConfig):
    """`top_k` keeps the k writers with most images (None: all); `synthetic` generates data."""

    top_k: int | None = None
    synthetic: bool = False
    split_seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    synth_config: synth.SynthConfig = dataclasses.field(default_factory=synth.SynthConfig)


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for iam_writers_tfds."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: top50, top10 and synthetic configs, form-disjoint splits.",
    }
    BUILDER_CONFIGS = [
        IamWritersConfig(name="top50", description="Every writer of the Kaggle top-50 subset."),
        IamWritersConfig(
            name="top10", description="The 10 writers with most images (ties: writer id).",
            top_k=10,
        ),
        IamWritersConfig(
            name="synthetic", description="Generated offline: 10 writers, 6 forms, 8 lines each.",
            synthetic=True,
        ),
    ]
    DEFAULT_CONFIG_NAME = "synthetic"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download https://www.kaggle.com/datasets/{kaggle_layout.KAGGLE_HANDLE} (Kaggle account
    needed) and put the zip, or its extracted contents, in the manual folder, so that it holds
    `forms_for_parsing.txt` and `data_subset/data_subset/*.png`:
        tfds build --imports iam_writers_tfds.iam_writers_tfds_dataset_builder \
            iam_writers_tfds --config top10 --manual_dir DIR
    Without a manual folder the builder tries kagglehub (honours KAGGLEHUB_CACHE). The
    `synthetic` config needs neither. The IAM terms allow non-commercial research use only.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                "writer": tfds.features.ClassLabel(),
                "writer_id": tfds.features.Text(),
                "form_id": tfds.features.Text(),
                "image_id": tfds.features.Text(),
            }),
            supervised_keys=("image", "writer"),
            homepage="https://fki.tic.heia-fr.ch/databases/iam-handwriting-database",
            metadata=tfds.core.MetadataDict(
                split_rule=kaggle_layout.SPLIT_RULE,
                split_seed=self.builder_config.split_seed,
                val_fraction=self.builder_config.val_fraction,
                test_fraction=self.builder_config.test_fraction,
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        roots = self._source_roots(dl_manager)
        records, skipped = kaggle_layout.scan_all(roots)
        if self.builder_config.top_k:
            keep = set(kaggle_layout.top_writers(records, self.builder_config.top_k))
            records = [r for r in records if r.writer_id in keep]
        forms = {r.form_id: r.writer_id for r in records}
        config = self.builder_config
        assignment, train_only = kaggle_layout.split_forms(
            forms, config.split_seed, config.val_fraction, config.test_fraction
        )
        if "train" in assignment.values() and set(assignment.values()) == {"train"}:
            raise kaggle_layout.LayoutError(
                f"{', '.join(map(str, roots))}: no writer has 3 or more forms, so the "
                "validation and test splits would be empty. Add a folder of writers with at "
                "least 3 forms each (another --manual-dir), or use --config synthetic.")
        if train_only:
            logger.warning(
                "%d writer(s) have fewer than 3 forms and go to train only: %s",
                len(train_only), ", ".join(train_only),
            )
        if skipped:
            logger.warning(
                "Skipped %d file(s) in %s: %s", len(skipped), ", ".join(map(str, roots)),
                "; ".join(skipped[:20])
            )
        self.info.features["writer"].names = sorted({r.writer_id for r in records})
        return {
            split: self._generate_examples([r for r in records if assignment[r.form_id] == split])
            for split in ("train", "validation", "test")
        }

    def _generate_examples(self, records: list[kaggle_layout.Record]):
        corrupt = []
        for record in records:
            try:
                image = images.read_gray(record.path)
            except images.CorruptImageError as err:
                corrupt.append(str(err))
                continue
            yield record.image_id, {
                "image": image[:, :, np.newaxis],
                "writer": record.writer_id,
                "writer_id": record.writer_id,
                "form_id": record.form_id,
                "image_id": record.image_id,
            }
        if corrupt:
            logger.warning("Skipped %d unreadable image(s): %s", len(corrupt), " | ".join(corrupt))

    def _source_roots(self, dl_manager: tfds.download.DownloadManager) -> list[Path]:
        """manual_dir first (one layout, or one per subfolder), then (real configs)
        kagglehub, then (synthetic) the generator."""
        extract_to = Path(dl_manager.download_dir) / "iam_writers_extracted"
        try:
            manual = Path(dl_manager.manual_dir)
        except AssertionError:  # tfds: no manual dir given, or it is missing or empty
            manual = None
        if manual:
            return kaggle_layout.roots_in(manual, extract_to) or _no_layout_in(manual)
        config = self.builder_config
        if config.synthetic:
            sc = config.synth_config
            out = Path(dl_manager.download_dir) / (
                f"synthetic_w{sc.writers}_f{sc.forms_per_writer}_l{sc.lines_per_form}_s{sc.seed}"
            )
            return [out if out.is_dir() else synth.generate(out, sc)]
        return [kaggle_layout.root_in(kaggle_layout.kaggle_download(), extract_to)
                or _no_layout()]


def _no_layout_in(manual: Path) -> list[Path]:
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in manual.iterdir())
    raise kaggle_layout.LayoutError(
        f"{manual}: no data in a known layout. Looked for {kaggle_layout.FORMS_FILE} with "
        "data_subset/ (the Kaggle layout) there, one level below, in a .zip there, or in "
        f"each subfolder; found: {', '.join(found[:10]) or 'nothing'}"
        f"{' ...' if len(found) > 10 else ''}. Pass the folder that holds the data.")


def _no_layout() -> Path:
    raise kaggle_layout.LayoutError(
        f"The kagglehub download holds no {kaggle_layout.FORMS_FILE}. Pass the Kaggle data "
        "with --manual-dir DIR instead."
    )
