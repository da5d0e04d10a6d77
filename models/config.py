"""Training configuration: one dataclass, filled in by `iam-writers train` and the tuners."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
from pathlib import Path

from pipelines.config import PipelineConfig

PATCH_DOWNSAMPLING = 16  # px per feature-map cell of the patch trunk: stem /4, pools /4

MODELS = ("patch_cnn", "patch_embed", "resnet50_classifier", "siamese_resnet50")
PATCH_MODELS = ("patch_cnn", "patch_embed")
GALLERY_MODELS = ("patch_embed", "siamese_resnet50")  # identify by nearest writer centroid
METRIC_LOSSES = ("supcon", "triplet", "cosface")
LR_SCHEDULES = ("plateau", "cosine")
BACKBONES = ("resnet50", "mobilenetv2", "efficientnetb0")
# the writers a run held out of training for export's calibration (models/train.py)
CALIBRATION_FILE = "calibration_writers.json"
# export's --quantize values and the TFLite variant each writes (model_<variant>.tflite)
VARIANTS = {"none": "float32", "float16": "float16", "dynamic": "dynamic", "int8": "int8"}
# how an image is read (runtime/pages.py): `auto` takes it for a page when it is at least
# PAGE_MIN_HEIGHT px tall and holds two or more text lines (an IAM line at 300 dpi is under
# 300 px high)
INPUTS = ("auto", "line", "page")
PAGE_MIN_HEIGHT = 400
# what identify ranks writers by (runtime/identify.py)
SCORES = ("embedding", "hinge", "vlad", "fused")
# the fused score of a query is taken relative to the mean of its best COHORT_TOP scores
# against the training writers (runtime.fuse; docs/results.md, open set)
COHORT_TOP = 5
COHORT_FILE = "cohort.npz"


# the help of the options that train and tune share (the rest come from TrainConfig)
CONFIG_HELP = "the dataset config, built first by `iam-writers build`"
DATA_DIR_HELP = "the TFDS data dir the dataset was built in (default ~/tensorflow_datasets)"


def _flag(default, help: str) -> dataclasses.Field:
    """A field whose `help` is its flag's line in `iam-writers train --help`."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs. Model hyperparameters are named here, once.

    The defaults are the CPU recipe (patch_cnn on 64-px patches); `patch_embed` is the same
    trunk trained with a metric loss on P x K batches for open-set identification. The
    notebook recipes
    (`resnet50_classifier` at 224, `siamese_resnet50` at 128) get their input settings
    from `pipeline_config()`.
    """

    # model, config, backbone, weights, lr_schedule and metric_loss: choices the CLI lists
    model: str = "patch_cnn"
    config: str = "synthetic"
    out: Path = _flag(Path("runs/default"), "the new run directory (or the one to --resume)")
    data_dir: Path | None = _flag(None, DATA_DIR_HELP)
    epochs: int = _flag(36, "training epochs")
    batch_size: int = _flag(64, "examples a step (patch_embed: writers_per_batch writers x "
                                "batch_size // writers_per_batch patches each)")
    learning_rate: float = _flag(2e-3, "Adam's learning rate at the start")
    patience: int = _flag(6, "plateau schedule: epochs without improvement before stopping "
                             "early (half of them before the rate is cut)")
    # cosine ends every run on its lowest rate; plateau (the notebooks') mistakes the swings
    # of high-rate epochs for plateaus. Figures: docs/results.md, closed set
    lr_schedule: str = "cosine"
    seed: int = _flag(0, "the seed of every random choice: weights, crops, batches, the "
                         "writers or forms held out for calibration")
    # patch_cnn
    patch_size: int = _flag(64, "patch models: the side of the square patches, in px")
    # so every line keeps its writer's handwriting size. Figures: docs/results.md, closed set
    line_band: int = _flag(128, "patch models: the scan rows around each line's ink (at 300 "
                                "dpi) scaled to the patch height; 0 scales each line's ink "
                                "bounding box instead")
    patches_per_image: int = _flag(12, "patch models: random inked crops of each line an "
                                       "epoch")
    # as accurate as the earlier, wider trunk at less than half its time per epoch.
    # Figures: docs/results.md, closed set
    width: int = _flag(24, "patch models: channels of the trunk's stem (blocks: x2, x4, x8)")
    embedding_dim: int = _flag(0, "patch_cnn: above 0 adds an L2-normalised embedding head "
                                  "of that size; other models: the embedding's size (0: 128)")
    # cosface names unseen writers best. Figures: docs/results.md, open set
    metric_loss: str = "cosface"
    temperature: float = _flag(0.1, "supcon and cosface: the softmax temperature (1 / scale)")
    writers_per_batch: int = _flag(16, "patch_embed: the writers of each P x K batch (P)")
    # resnet50-style models
    backbone: str = "resnet50"
    image_size: int = _flag(0, "resize models: the input's side in px (0: the notebook's, "
                               "224 classifier, 128 Siamese)")
    weights: str = "imagenet"
    head_units: int = _flag(1024, "resize models: units of the dense head")
    dropout: float | None = _flag(None, "dropout before the head (default: 0.2 patch models, "
                                        "0.5 the notebooks')")
    fine_tune_blocks: int = _flag(0, "resnet50_classifier: backbone blocks unfrozen for a "
                                     "second phase (0: none)")
    fine_tune_learning_rate: float = _flag(1e-5, "the second phase's learning rate")
    fine_tune_epochs: int = _flag(5, "the second phase's epochs")
    margin: float | None = _flag(None, "the loss's margin (default: 1.0 Siamese contrastive, "
                                       "0.2 triplet and cosface)")
    pairs_per_epoch: int = _flag(2048, "siamese_resnet50: image pairs an epoch")
    # off: within the time budget it costs more than it gives, and its scale jitter blurs
    # handwriting size. Figures: docs/results.md, closed set
    augment: bool = _flag(False, "jitter training patches: shear, rotation, scale, contrast, "
                                 "stroke width")
    # writers no model saw, as in use, for gallery models; for classifiers, lines they did
    # not learn (README, calibration)
    calibration_share: float = _flag(0.2, "the seeded share held out of training for "
                                          "export's calibration: of the writers (gallery "
                                          "models; 0 calibrates on the validation lines), or of "
                                          "the validation forms (classifiers with "
                                          "--fit-on-validation)")
    fit_on_validation: bool = _flag(False, "train on train + validation (a classifier less "
                                           "its calibration forms), watching the training "
                                           "figures; tuning's --retrain-best")
    resume: bool = _flag(False, "continue the interrupted run in --out from its last "
                                "completed epoch")

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.data_dir = Path(self.data_dir) if self.data_dir else None
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; allowed: {', '.join(MODELS)}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; allowed: {', '.join(BACKBONES)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; "
                             f"allowed: {', '.join(LR_SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and "
                             f"{self.batch_size}")
        for name in ("learning_rate", "fine_tune_learning_rate"):  # nan or inf: weights nan
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a number > 0, got {getattr(self, name)}")
        if self.patience < 0 or self.fine_tune_epochs < 0:
            raise ValueError(f"patience and fine_tune_epochs must be >= 0, got "
                             f"{self.patience} and {self.fine_tune_epochs}")
        if self.metric_loss not in METRIC_LOSSES:
            raise ValueError(f"unknown metric_loss {self.metric_loss!r}; "
                             f"allowed: {', '.join(METRIC_LOSSES)}")
        if not 0 < self.temperature < math.inf or self.writers_per_batch < 2:
            raise ValueError(f"temperature must be a number > 0 and writers_per_batch >= 2, "
                             f"got {self.temperature} and {self.writers_per_batch}")
        if self.model == "patch_embed" and self.batch_size < 2 * self.writers_per_batch:
            raise ValueError(f"batch_size {self.batch_size} gives fewer than 2 patches per "
                             f"writer with writers_per_batch {self.writers_per_batch}; pass "
                             f"--batch-size {2 * self.writers_per_batch} or more")
        if not 0 <= self.calibration_share < 1:
            raise ValueError(f"calibration_share must be in [0, 1), got "
                             f"{self.calibration_share}")
        if self.margin is None:
            self.margin = 1.0 if self.model == "siamese_resnet50" else 0.2
        if not 0 <= self.margin < math.inf:
            raise ValueError(f"margin must be a number >= 0, got {self.margin}")
        if self.dropout is None:
            self.dropout = 0.2 if self.model in PATCH_MODELS else 0.5
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if min(self.width, self.head_units, self.pairs_per_epoch) < 1 or min(
                self.embedding_dim, self.image_size, self.fine_tune_blocks) < 0:
            raise ValueError("width, head_units and pairs_per_epoch must be >= 1; "
                             "embedding_dim, image_size and fine_tune_blocks >= 0")
        self.pipeline_config()  # its checks (patch size, line band, ...) before any training

    def pipeline_config(self) -> PipelineConfig:
        """The input recipe that goes with this model."""
        if self.model in PATCH_MODELS:
            return PipelineConfig(
                mode="patches", patch_size=self.patch_size, line_band=self.line_band,
                patches_per_image=self.patches_per_image, batch_size=self.batch_size,
                augment=self.augment, seed=self.seed,
            )
        size = self.image_size or (224 if self.model == "resnet50_classifier" else 128)
        norm = "resnet50" if self.backbone == "resnet50" and self.model == "resnet50_classifier" \
            else "unit"
        return PipelineConfig(mode="resize", image_size=size, normalization=norm,
                              batch_size=self.batch_size, augment=False, seed=self.seed)

    def inference_pipeline(self, stride: int = 0) -> PipelineConfig:
        """The input recipe with the inference stride: `stride`, or the evaluation stride
        rounded to the model's 16-px downsampling (the line pass needs a multiple)."""
        pcfg = self.pipeline_config()
        step = PATCH_DOWNSAMPLING
        stride = stride or max(step, round(pcfg.stride / step) * step)
        if pcfg.mode == "patches" and (stride > pcfg.patch_size or stride % step):
            raise ValueError(f"--stride {stride}: the line pass needs a multiple of {step} px "
                             f"(the model's downsampling) up to the patch size, "
                             f"{pcfg.patch_size}")
        return dataclasses.replace(pcfg,
                                   patch_stride=stride if pcfg.mode == "patches" else None)

    @property
    def by_gallery(self) -> bool:
        """Whether the model identifies by nearest writer centroid (no softmax head)."""
        return self.model in GALLERY_MODELS

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["out"], d["data_dir"] = str(self.out), str(self.data_dir) if self.data_dir else None
        return d

    def check_out(self) -> None:
        """Refuse to train over a finished run (unless resuming) before anything starts; only
        the chief of several workers writes the run directory, so only it checks."""
        if self.resume:
            TrainConfig.load(self.out)
        elif worker_role()[0] and self.out.exists() and any(self.out.iterdir()):
            raise FileExistsError(f"{self.out}: run directory already exists. Pass --resume "
                                  "to continue it, or choose a new --out.")

    @classmethod
    def load(cls, run_dir: Path) -> TrainConfig:
        path = Path(run_dir) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not a run directory (no config.json). "
                                    "Pass a folder written by `iam-writers train`.")
        known = {f.name for f in dataclasses.fields(cls)}
        saved = {"line_band": 0, **_json(path, dict)}  # runs before line_band
        return cls(**{k: v for k, v in saved.items() if k in known})


def worker_role() -> tuple[bool, int]:
    """(whether this process is the chief, its task index) from TF_CONFIG: the `chief`
    task, or worker 0 of a cluster without one; a single process is its own chief."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task, cluster = config.get("task", {}), config.get("cluster", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster), index


class RunFileError(ValueError):
    """A run's file that cannot be read: damaged JSON, a model file that is not a Keras
    archive, or one that holds Python code."""


def _json(path: Path, kind: type) -> dict | list:
    """A run's JSON file, which must hold a `kind`; damage raises RunFileError naming it."""
    try:
        value = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError):
        value = None
    if not isinstance(value, kind):
        raise RunFileError(f"{path}: damaged (not the JSON `iam-writers train` writes). "
                           "Train the run again, or restore the file.")
    return value


def run_labels(run_dir: Path) -> list[str]:
    """The writer ids of a run's classes, in label order."""
    return _json(Path(run_dir) / "labels.json", list)


def _check_model_file(path: Path) -> None:
    """Refuse, before TensorFlow loads, a model.keras that is not a Keras archive or whose
    configuration holds a function's code (`__lambda__`), which Keras's safe mode refuses."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError):
        raise RunFileError(f"{path}: not a Keras model archive (damaged or cut short). "
                           "Train the run again, or restore the file.") from None

    def code(node: object) -> bool:
        if isinstance(node, dict):
            return node.get("class_name") == "__lambda__" or any(map(code, node.values()))
        return isinstance(node, list) and any(map(code, node))

    if code(config):
        raise RunFileError(
            f"{path}: contains a Lambda layer with Python code, which could run arbitrary "
            "code when loaded; refusing it (Keras safe mode). Use a model trained by "
            "`iam-writers train`, or rebuild this one without Lambda layers.")


def trained_run(run_dir: Path) -> TrainConfig:
    """The configuration of a run directory holding a trained model that loads safely; a
    folder that is not one raises, saying what to pass."""
    cfg = TrainConfig.load(run_dir)
    path = Path(run_dir) / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained model. Finish `iam-writers train` "
                                "(or pass --resume) first.")
    _check_model_file(path)
    run_labels(run_dir)
    return cfg


def new_folder(out: Path) -> None:
    """Refuse an --out that exists: exports and runs are written whole, never over others."""
    if Path(out).exists():
        raise FileExistsError(f"{out}: already exists. Choose a new --out or delete it.")
