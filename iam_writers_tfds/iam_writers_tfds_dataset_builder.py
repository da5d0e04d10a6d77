"""iam_writers_tfds: writer identification on the IAM handwriting database's top writers."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from iam_writers_tfds import iam_layout, images, kaggle_layout, synth

logger = logging.getLogger(__name__)

_DESCRIPTION = """
Handwritten text lines from the IAM Handwriting Database, labelled by writer: the official
distribution (`iam`, `iam_ok`: lines.tgz and ascii.tgz, with transcriptions) or the layout
of the Kaggle subset `tejasreddy/iam-handwriting-top50` (`top50`, `top10`). Images are
grayscale PNGs at native resolution. Splits are form-disjoint and stratified by writer (see
metadata `split_rule`). The `synthetic` config is generated offline by the project's own
generator.
"""


@dataclasses.dataclass
class IamWritersConfig(tfds.core.BuilderConfig):
    """`top_k` keeps the k writers with most images (None: all); `synthetic` generates data."""

    top_k: int | None = None
    synthetic: bool = False
    layout: str = "kaggle"  # kaggle: forms_for_parsing.txt + data_subset/; iam: lines + ascii
    drop_err: bool = False  # iam: leave out lines whose word segmentation failed
    split_seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    synth_config: synth.SynthConfig = dataclasses.field(default_factory=synth.SynthConfig)


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for iam_writers_tfds."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.1.0": "synthetic: each letter is drawn a little differently every time (a hand "
                 "never repeats a glyph; machine print does).",
        "1.0.0": "Initial release: top50, top10 and synthetic configs, form-disjoint splits; "
                 "iam and iam_ok configs for the official distribution.",
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
        IamWritersConfig(
            name="iam", description="The official IAM distribution (lines.tgz + ascii.tgz): "
            "every writer, grey-level lines, transcriptions.", layout="iam",
        ),
        IamWritersConfig(
            name="iam_ok", description="`iam` without the lines whose word segmentation "
            "failed (`err` in lines.txt).", layout="iam", drop_err=True,
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
    `synthetic` config needs neither. For `iam` and `iam_ok`, {iam_layout.DOWNLOAD}.
    The IAM terms allow non-commercial research use only.
    """

    def _log_download_bytes(self) -> None:
        """TFDS prints the download size here, unknown for local and generated sources
        ("Unknown size"): say what is being built instead."""
        print(f"preparing {self.name}/{self.builder_config.name} in {self.data_dir}",
              flush=True)

    def _log_download_done(self) -> None:
        """TFDS says "downloaded", which local and generated sources are not."""
        print(f"prepared {self.name}/{self.builder_config.name}", flush=True)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "image": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
            "writer": tfds.features.ClassLabel(),
            "writer_id": tfds.features.Text(),
            "form_id": tfds.features.Text(),
            "image_id": tfds.features.Text(),
        }
        if self.builder_config.layout == "iam":  # what lines.txt adds
            features["text"] = tfds.features.Text()
            features["segmentation_ok"] = tfds.features.Scalar(np.bool_)
        info = self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("image", "writer"),
            homepage="https://fki.tic.heia-fr.ch/databases/iam-handwriting-database",
            metadata=tfds.core.MetadataDict(
                split_rule=kaggle_layout.SPLIT_RULE,
                split_seed=self.builder_config.split_seed,
                val_fraction=self.builder_config.val_fraction,
                test_fraction=self.builder_config.test_fraction,
            ),
        )
        # Never on TFDS's GCS bucket, whose lookup (run for every builder of an unbuilt
        # dataset) leaves an empty /tmp/tmp*tfds folder behind each time (tfds 4.9.10).
        info.initialize_from_bucket = lambda: None
        return info

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        extract_to = Path(dl_manager.download_dir) / "iam_writers_extracted"
        roots = self._source_roots(dl_manager, extract_to)
        records, skipped = kaggle_layout.scan_all(
            roots, (lambda root: iam_layout.scan(root, extract_to))
            if config.layout == "iam" else None)
        if config.top_k:
            keep = set(kaggle_layout.top_writers(records, config.top_k))
            records = [r for r in records if r.writer_id in keep]
        forms = {r.form_id: r.writer_id for r in records}
        assignment, train_only = kaggle_layout.split_forms(
            forms, config.split_seed, config.val_fraction, config.test_fraction
        )
        if config.drop_err:  # after the split, so that iam and iam_ok share it
            logger.info("Left out %d line(s) marked err in lines.txt",
                        sum(not r.segmentation_ok for r in records))
            records = [r for r in records if r.segmentation_ok]
        if set(assignment.values()) == {"train"}:
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
        self.info.features["writer"].names = sorted(set(forms.values()))
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
            example = {
                "image": image[:, :, np.newaxis],
                "writer": record.writer_id,
                "writer_id": record.writer_id,
                "form_id": record.form_id,
                "image_id": record.image_id,
            }
            if self.builder_config.layout == "iam":
                example.update(text=record.text, segmentation_ok=record.segmentation_ok)
            yield record.image_id, example
        if corrupt:
            logger.warning("Skipped %d unreadable image(s): %s", len(corrupt), " | ".join(corrupt))

    def _source_roots(self, dl_manager: tfds.download.DownloadManager,
                      extract_to: Path) -> list[Path]:
        """manual_dir first (one layout, or one per subfolder), then (real configs)
        kagglehub, then (synthetic) the generator; archives are extracted to `extract_to`."""
        try:
            manual = Path(dl_manager.manual_dir)
        except AssertionError:  # tfds: no manual dir given, or it is missing or empty
            manual = None
        config = self.builder_config
        if manual:
            roots = (iam_layout.roots_in(manual) if config.layout == "iam"
                     else kaggle_layout.roots_in(manual, extract_to))
            return roots or _no_layout_in(manual)
        if config.layout == "iam":
            raise kaggle_layout.LayoutError(f"--config {config.name} needs --manual-dir DIR: "
                                            f"{iam_layout.DOWNLOAD}.")
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
        f"{manual}: no data in a known layout. Looked there, one level below and in each "
        f"subfolder for the Kaggle layout ({kaggle_layout.FORMS_FILE} with data_subset/, or "
        "a .zip of it; configs top50, top10, synthetic) and the official IAM layout "
        "(ascii/ or ascii.tgz with lines/ or lines.tgz; configs iam, iam_ok); found: "
        f"{', '.join(found[:10]) or 'nothing'}{' ...' if len(found) > 10 else ''}. Pass the "
        "folder that holds the data, with the --config of its layout.")


def _no_layout() -> Path:
    raise kaggle_layout.LayoutError(
        f"The kagglehub download holds no {kaggle_layout.FORMS_FILE}. Pass the Kaggle data "
        "with --manual-dir DIR instead."
    )
