"""`iam-writers train`: build, compile and fit a model into a run directory.

runs/NAME/ holds model.keras, labels.json, config.json, history.csv, metrics.json,
plots/, logs/ (TensorBoard) and, while training, backup/ for --resume.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import shutil
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

from iam_writers_tfds import atomic
from models import zoo
from models.config import CALIBRATION_FILE, RunFileError, TrainConfig, worker_role
from models.losses import BatchHardTripletLoss, ContrastiveLoss, CosFaceLoss, SupConLoss
from pipelines import (
    eval_dataset,
    load_split,
    pair_dataset,
    pk_dataset,
    train_dataset,
    writer_names,
)

# Keras warns about these for every tf.data pipeline; ours are shuffled and end by design.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
warnings.filterwarnings("ignore", message="Your input ran out of data")


_symbolic_build = TensorFlowTrainer._maybe_symbolic_build
_reduce_per_replica = tf_trainer.reduce_per_replica


def _build_from_local_batch(self, iterator=None, data_batch=None):
    """Build from this worker's first batch: Keras averages the batch across workers first,
    which fails under MultiWorkerMirroredStrategy (keras-team/keras#20585)."""
    if iterator is not None:
        for _, _, it in iterator:
            batch = next(it)
            break
        local = self.distribute_strategy.experimental_local_results
        data_batch = tf.nest.map_structure(lambda v: local(v)[0], batch)
    return _symbolic_build(self, data_batch=data_batch)


def _reduce_scalars_too(values, strategy, reduction):
    """Keras reduces every per-replica log along axis 0 across workers, which fails for the
    scalar loss and metrics (keras-team/keras#20585); scalars are averaged as they are."""
    if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
        def reduce(v):
            if not tf_trainer._is_per_replica_instance(v):
                return v
            rank = strategy.experimental_local_results(v)[0].shape.rank
            return strategy.reduce("MEAN", v, axis=0 if rank else None)

        return tf.nest.map_structure(reduce, values)
    return _reduce_per_replica(values, strategy, reduction)


def choose_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirrored when TF_CONFIG names a cluster, Mirrored on several GPUs,
    otherwise the default (single device) strategy."""
    if os.environ.get("TF_CONFIG"):
        TensorFlowTrainer._maybe_symbolic_build = _build_from_local_batch
        tf_trainer.reduce_per_replica = _reduce_scalars_too
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def atomic_save(model: keras.Model, path: Path) -> None:
    """Save through a temporary file beside `path`: no half-written model."""
    with atomic.replaced(path) as tmp:
        model.save(tmp)


def build_model(cfg: TrainConfig, num_classes: int) -> tuple[keras.Model, keras.losses.Loss, str]:
    """(compiled-ready model, loss, monitored metric) for `cfg.model`."""
    if cfg.model == "patch_cnn":
        model = zoo.patch_cnn((cfg.patch_size, cfg.patch_size, 1), num_classes, cfg.width,
                              cfg.embedding_dim, cfg.dropout)
        return model, keras.losses.SparseCategoricalCrossentropy(), "val_accuracy"
    if cfg.model == "patch_embed":
        model = zoo.patch_embed((cfg.patch_size, cfg.patch_size, 1), cfg.width,
                                cfg.embedding_dim or 128, cfg.dropout,
                                num_classes if cfg.metric_loss == "cosface" else 0)
        if cfg.metric_loss == "cosface":
            return model, CosFaceLoss(cfg.margin, cfg.temperature), "val_loss"
        if cfg.metric_loss == "supcon":
            return model, SupConLoss(cfg.temperature), "val_loss"
        return model, BatchHardTripletLoss(cfg.margin), "val_loss"
    if cfg.model == "resnet50_classifier":
        model = zoo.resnet50_classifier(num_classes, cfg.head_units, cfg.dropout, cfg.weights,
                                        cfg.backbone, cfg.pipeline_config().image_size)
        return model, keras.losses.SparseCategoricalCrossentropy(), "val_accuracy"
    tower = zoo.siamese_tower(cfg.embedding_dim or 128, cfg.head_units, cfg.weights,
                              cfg.backbone, cfg.pipeline_config().image_size)
    return zoo.siamese_pair_model(tower), ContrastiveLoss(cfg.margin), "val_loss"


def calibration_writers(cfg: TrainConfig) -> list[int]:
    """The writers held out of training for export's calibration: a seeded
    `calibration_share` of the writers with two or more forms (one to enrol, others to
    identify), at least two (impostors need another writer), and the same share of the
    writers with one form, who are enrolled and compared only as different writers: the
    unknown-writer thresholds rest on how high different writers score, and eight writers
    did not pin that down (docs/results.md, open set). None for classifiers, whose softmax
    cannot name a writer it did not train on."""
    if not cfg.by_gallery or not cfg.calibration_share:
        return []
    forms: dict[int, set] = {}
    for split in ("train", "validation", "test"):
        meta = load_split(cfg.config, split, cfg.data_dir).map(
            lambda ex: (ex["writer"], ex["form_id"]))
        for writer, form in meta.as_numpy_iterator():
            forms.setdefault(int(writer), set()).add(form)
    eligible = sorted(w for w, f in forms.items() if len(f) >= 2)
    single = sorted(w for w, f in forms.items() if len(f) == 1)
    n = max(2, round(cfg.calibration_share * len(eligible)))
    if len(eligible) - n < 2:  # training needs writers too
        return []
    rng = np.random.default_rng(cfg.seed)
    held = list(rng.choice(eligible, n, replace=False))
    if n_single := round(cfg.calibration_share * len(single)):
        held += list(rng.choice(single, n_single, replace=False))
    return sorted(int(w) for w in held)


def calibration_forms(cfg: TrainConfig) -> list[str]:
    """The validation forms held out of a classifier's train + validation fit for export's
    calibration: a seeded `calibration_share` of them, at least one. A classifier trains on
    every writer, so it is calibrated on lines of theirs it has not seen, the validation
    lines; `fit_on_validation` trains on those, and thresholds set on memorised lines would
    not hold on new ones. None for gallery models, whose held writers calibrate them."""
    if cfg.by_gallery or not cfg.fit_on_validation or not cfg.calibration_share:
        return []
    meta = load_split(cfg.config, "validation", cfg.data_dir).map(lambda ex: ex["form_id"])
    forms = sorted({form.decode() for form in meta.as_numpy_iterator()})
    if not forms:
        return []
    n = max(1, round(cfg.calibration_share * len(forms)))
    return sorted(str(f) for f in np.random.default_rng(cfg.seed).choice(forms, n,
                                                                          replace=False))


def _without(raw: tf.data.Dataset, writers: list[int], forms: list[str] = ()
             ) -> tf.data.Dataset:
    if writers:
        held = tf.constant(writers, tf.int64)
        raw = raw.filter(lambda ex: tf.reduce_all(tf.cast(ex["writer"], tf.int64) != held))
    if forms:
        held_forms = tf.constant(list(forms))
        raw = raw.filter(lambda ex: tf.reduce_all(ex["form_id"] != held_forms))
    return raw


def datasets(cfg: TrainConfig, held: list[int] = (), forms: list[str] = ()):
    """(training, validation) datasets for `cfg`, without the `held` writers and the held
    validation `forms` (`calibration_forms`: only a `fit_on_validation` run holds any). With
    `fit_on_validation` the training set is train + validation and the validation set is
    None: figures on examples the model trains on would choose epochs, checkpoints and
    learning rates by memorisation."""
    pcfg = cfg.pipeline_config()
    train_raw = _without(load_split(cfg.config, "train", cfg.data_dir), list(held))
    val_raw = _without(load_split(cfg.config, "validation", cfg.data_dir), list(held),
                       list(forms))
    if cfg.fit_on_validation:
        return _training_set(train_raw.concatenate(val_raw), pcfg, cfg), None
    val_pcfg = dataclasses.replace(pcfg, seed=pcfg.seed + 1)
    if cfg.model == "patch_embed":
        val = _pk(val_raw, val_pcfg, cfg)
    elif cfg.model == "siamese_resnet50":
        val = pair_dataset(val_raw, val_pcfg, max(64, cfg.pairs_per_epoch // 4))
    else:
        val = eval_dataset(val_raw, pcfg).unbatch().filter(lambda e: e["ink"] >= pcfg.min_ink)
        val = val.map(lambda e: (e["x"], e["writer"])).batch(pcfg.batch_size).cache()
    return _training_set(train_raw, pcfg, cfg), val


def _training_set(raw, pcfg, cfg: TrainConfig):
    if cfg.model == "patch_embed":
        return _pk(raw, pcfg, cfg)
    if cfg.model == "siamese_resnet50":
        return pair_dataset(raw, pcfg, cfg.pairs_per_epoch)
    return train_dataset(raw, pcfg)


def _pk(raw, pcfg, cfg: TrainConfig):
    """P x K batches covering a split's lines `patches_per_image` times per epoch, as the
    classifier's epochs do."""
    k = cfg.batch_size // cfg.writers_per_batch
    lines = int(raw.cardinality())
    if lines < 0:  # a split without its held-out writers: count what is left
        lines = int(raw.reduce(0, lambda n, _: n + 1))
    steps = max(2, lines * cfg.patches_per_image // (k * cfg.writers_per_batch))
    return pk_dataset(raw, pcfg, cfg.writers_per_batch, k, steps)


def _compile(model: keras.Model, learning_rate: float, loss, accuracy: bool) -> None:
    """Compile with Adam, its slots and the accuracy's state made here: state first made
    inside the traced training step makes TensorFlow trace the step twice (a MobileNetV2
    step: 30 s more; docs/results.md, "One trace of the training step")."""
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] if accuracy else []
    model.compile(keras.optimizers.Adam(learning_rate), loss, metrics=metrics)
    model.optimizer.build(model.trainable_variables)


def compiled_model(cfg: TrainConfig, num_classes: int) -> tuple[keras.Model, str]:
    """The model of `cfg`, compiled with Adam; returns it and the metric to monitor."""
    model, loss, monitor = build_model(cfg, num_classes)
    _compile(model, cfg.learning_rate, loss, accuracy=not cfg.by_gallery)
    return model, monitor


def _lr_callback(cfg: TrainConfig, lr: float, first: int, last: int,
                 loss: str) -> keras.callbacks.Callback:
    if cfg.lr_schedule == "plateau":
        return keras.callbacks.ReduceLROnPlateau(loss, factor=0.3,
                                                 patience=max(1, cfg.patience // 2))
    span = max(1, last - first)
    return keras.callbacks.LearningRateScheduler(
        lambda epoch: lr * 0.5 * (1 + math.cos(math.pi * (epoch - first) / span)))


def weights_fit(model: keras.Model, folder: str | Path) -> bool:
    """Whether `model`'s weights plainly fit on the disk of `folder`. h5py, failing on a full
    disk, keeps its file open and fails again at exit (a segmentation fault): a weights file
    is refused before it starts where this says no. (An estimate: their size and 1 MiB.)"""
    needed = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize
                 for v in model.variables) + (1 << 20)
    return shutil.disk_usage(folder).free >= needed


class DivergedError(ValueError):
    """Training whose loss became NaN or infinite: every weight after it is unusable."""


class StopOnDivergence(keras.callbacks.Callback):
    """Stop at the end of the first epoch whose loss is not finite, before any callback saves
    its weights (it comes first): a learning rate far too high went on for every epoch, saved
    a model of NaN weights, and ended in scikit-learn's traceback at evaluation."""

    def __init__(self, out: Path, learning_rate: float):
        super().__init__()
        self.out, self.learning_rate = out, learning_rate

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise DivergedError(
                f"{self.out}: training diverged: the loss became {loss} in epoch {epoch + 1} "
                f"at a learning rate of {self.learning_rate:g}, and the weights with it; no "
                "model was kept. Lower --learning-rate (or --fine-tune-learning-rate) and "
                "train again.")


class WholeBackup(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore, whose backup is replaced whole. Keras writes the weights
    over the last ones: a disk that filled, or a kill, in mid-write left a backup that
    `--resume` could not load ("A total of 3 objects could not be loaded")."""

    def _save_model(self) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        if not weights_fit(self.model, self.backup_dir):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.backup_dir)
        incoming = os.path.join(self.backup_dir, "incoming.weights.h5")
        try:
            self.model.save_weights(incoming, overwrite=True)
        except BaseException:
            Path(incoming).unlink(missing_ok=True)
            raise
        os.replace(incoming, self._weights_path)
        # a kill between the two: the new weights, resumed one epoch early
        atomic.write_text(Path(self._training_metadata_path), json.dumps(
            {"epoch": self._current_epoch, "batch": self._last_batch_seen}))


def _callbacks(cfg: TrainConfig, monitor: str, lr: float, first: int, last: int,
               held_out: bool) -> list[keras.callbacks.Callback]:
    """The notebooks' callbacks. Without a held-out set they watch the training figures
    (`loss`, `accuracy`), and a cosine schedule never stops early."""
    prefix = "val_" if held_out else ""
    monitor = prefix + monitor.removeprefix("val_")
    mode = "max" if "accuracy" in monitor else "min"
    # with a cosine schedule the best epochs come at the end: stopping early is for plateaus
    patience = cfg.patience if cfg.lr_schedule == "plateau" else max(cfg.patience, last)
    return [
        StopOnDivergence(cfg.out, lr),
        WholeBackup(str(cfg.out / "backup")),
        keras.callbacks.EarlyStopping(monitor, patience=patience, mode=mode,
                                      restore_best_weights=True),
        _lr_callback(cfg, lr, first, last, prefix + "loss"),
        keras.callbacks.ModelCheckpoint(str(cfg.out / "checkpoints" / "best.keras"),
                                        monitor=monitor, mode=mode, save_best_only=True),
        keras.callbacks.CSVLogger(str(cfg.out / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(cfg.out / "logs")),
    ]


def _prepare_out(cfg: TrainConfig) -> TrainConfig:
    cfg.check_out()
    if cfg.resume:
        saved = TrainConfig.load(cfg.out)
        saved.resume, saved.out = True, cfg.out
        return saved
    return cfg


def train(cfg: TrainConfig) -> Path:
    """Train `cfg` into `cfg.out` and evaluate it on the test split; returns the run dir.

    With several workers (TF_CONFIG), Keras's multi-worker saving rule applies: the chief
    alone writes the run directory; the other workers write theirs to a temporary folder,
    removed at the end, and resume from the chief's backup (so `--out` must be visible to
    every worker, e.g. on a shared filesystem, for `--resume`)."""
    chief, index = worker_role()
    cfg = _prepare_out(cfg)
    if chief:
        return _train(cfg, chief)
    # one scratch folder per run and worker: a resumed worker clears what a killed one left
    tag = zlib.crc32(str(cfg.out.resolve()).encode())
    scratch = Path(tempfile.gettempdir()) / f"iam-writers-worker{index}-{tag:08x}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        if (cfg.out / "backup").is_dir():
            shutil.copytree(cfg.out / "backup", scratch / "run" / "backup")
        _train(dataclasses.replace(cfg, out=scratch / "run"), chief)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return cfg.out


def _fit(cfg: TrainConfig, model: keras.Model, monitor: str, train_ds: tf.data.Dataset,
         val_ds: tf.data.Dataset | None, strategy: tf.distribute.Strategy) -> None:
    """The epochs of `cfg`, and a ResNet50 classifier's fine-tuning of its last blocks."""
    verbose = 1 if sys.stdout.isatty() else 2
    held_out = val_ds is not None
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs,
              callbacks=_callbacks(cfg, monitor, cfg.learning_rate, 0, cfg.epochs,
                                   held_out),
              verbose=verbose)
    if cfg.model == "resnet50_classifier" and cfg.fine_tune_blocks:
        zoo.unfreeze_last_blocks(model, cfg.fine_tune_blocks)
        with strategy.scope():
            _compile(model, cfg.fine_tune_learning_rate, model.loss, accuracy=True)
        model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs + cfg.fine_tune_epochs,
                  initial_epoch=cfg.epochs, verbose=verbose,
                  callbacks=_callbacks(cfg, monitor, cfg.fine_tune_learning_rate, cfg.epochs,
                                       cfg.epochs + cfg.fine_tune_epochs, held_out))


def _train(cfg: TrainConfig, chief: bool) -> Path:
    strategy = choose_strategy()  # first: collective ops must be set up before any other op
    keras.utils.set_random_seed(cfg.seed)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    labels = writer_names(cfg.config, cfg.data_dir)
    held, forms = calibration_writers(cfg), calibration_forms(cfg)
    if cfg.resume and chief:  # a worker resumes in a scratch folder, as the chief says
        from models.evaluate import calibration_forms as held_when_begun

        if forms != (before := held_when_begun(cfg.out)):
            raise RunFileError(
                f"{cfg.out}: its epochs so far held out "
                f"{len(before) or 'none'} of the validation forms for export's calibration "
                f"({'' if before else 'a version that trained a classifier on every one; '}"
                f"{len(forms)} now), so they may have learnt the lines it would calibrate on. "
                "Train it anew into a new --out.")
    train_ds, val_ds = datasets(cfg, held, forms)
    with strategy.scope():  # fetches ImageNet weights, so it may fail: nothing written yet
        model, monitor = compiled_model(cfg, len(labels))
    (cfg.out / "checkpoints").mkdir(parents=True, exist_ok=True)
    atomic.write_text(cfg.out / "config.json", json.dumps(cfg.to_json(), indent=2))
    atomic.write_text(cfg.out / "labels.json", json.dumps(labels, indent=2))
    atomic.write_text(cfg.out / CALIBRATION_FILE, json.dumps(
        {"writers": [labels[w] for w in held], "forms": forms,
         "share": cfg.calibration_share, "seed": cfg.seed,
         "rule": "gallery models: a seeded share of the writers with two or more forms, and "
                 "of those with one (compared as different writers only); classifiers fitted "
                 "on train + validation: a seeded share of the validation forms; not trained "
                 "on"},
        indent=2))
    try:
        _fit(cfg, model, monitor, train_ds, val_ds, strategy)
    except DivergedError:
        if chief and not cfg.resume:  # this command made the run: nothing of it is of use
            shutil.rmtree(cfg.out, ignore_errors=True)
        raise
    atomic_save(model, cfg.out / "model.keras")  # every worker saves: it may sync them
    shutil.rmtree(cfg.out / "backup", ignore_errors=True)
    if chief:
        from models.evaluate import evaluate

        evaluate(cfg.out, "test")
    return cfg.out
