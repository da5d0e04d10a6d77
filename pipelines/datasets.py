"""Streaming datasets: decode -> normalise -> cache -> random views -> batch -> prefetch.

The cache sits after decoding and normalisation (deterministic, the expensive part) and
before any random crop or augmentation, so every epoch sees new crops at cache speed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipelines import ops
from pipelines.config import PipelineConfig
from pipelines.prepared import prepared_builder

AUTOTUNE = tf.data.AUTOTUNE
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class CorruptImages:
    """Collects the ids of images a pipeline skipped because they could not be decoded."""

    names: list[str] = dataclasses.field(default_factory=list)

    def _record(self, image_id: tf.Tensor) -> bool:
        self.names.append(image_id.numpy().decode())
        tf.get_logger().warning(
            "skipping corrupt image %s (%d so far); rebuild the dataset to drop it for good",
            self.names[-1], len(self.names),
        )
        return False


def load_split(config: str, split: str, data_dir: str | Path | None = None) -> tf.data.Dataset:
    """A prepared TFDS split as raw examples (image left PNG-encoded for `ops.decode`)."""
    import tensorflow_datasets as tfds

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return prepared_builder(config, data_dir).as_dataset(
        split=split, decoders={"image": tfds.decode.SkipDecoding()}, shuffle_files=False
    )


def _decoded(raw: tf.data.Dataset, cfg: PipelineConfig, corrupt: CorruptImages | None):
    """Validated, decoded and normalised examples, cached: {x, writer, image_id, form_id}."""

    def check(ex):
        valid = ops.looks_valid(ex["image"])
        if cfg.on_corrupt == "fail":
            with tf.control_dependencies([tf.debugging.Assert(valid, [
                "corrupt image", ex["image_id"], "- rebuild the dataset, or use on_corrupt='skip'"
            ])]):
                return tf.identity(valid)
        if corrupt is None:
            return valid
        return tf.cond(valid, lambda: True,
                       lambda: tf.py_function(corrupt._record, [ex["image_id"]], tf.bool))

    def prepare(ex):
        if cfg.mode == "patches":
            x = ops.normalize_line(ex["image"], cfg.patch_size, cfg.line_band)
        else:
            x = ops.resize_rgb(ops.decode(ex["image"]), cfg.image_size, cfg.keep_aspect)
        return {"x": x, "writer": ex["writer"], "image_id": ex["image_id"],
                "form_id": ex["form_id"]}

    ds = raw.filter(check)
    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE)
    if cfg.on_corrupt == "skip":
        # bit-level damage past the cheap check: dropped rather than ending the epoch
        ds = ds.ignore_errors(log_warning=True)
    return ds.cache() if cfg.cache else ds


def _seeded(ds: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """Pair every element with a fresh stateless seed; new seeds each epoch, same each run."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(ds, seeds)


def _finish(ds: tf.data.Dataset, cfg: PipelineConfig) -> tf.data.Dataset:
    ds = ds.prefetch(AUTOTUNE)
    if cfg.device_prefetch and tf.config.list_physical_devices("GPU"):
        ds = ds.apply(tf.data.experimental.prefetch_to_device("/gpu:0"))
    return ds


def _view(ex, seed, cfg: PipelineConfig, augment: bool) -> tf.Tensor:
    """One model input from one cached example: a random inked crop, or the whole image."""
    if cfg.mode == "resize":
        return ops.scale_input(ex["x"], cfg)
    crop = ops.random_crops(ex["x"][None], tf.shape(ex["x"])[1][None], seed, 1, cfg)[0]
    x = ops.scale_input(crop, cfg)
    return (ops.augment(x, seed + 7) if augment else x)[0]


def _patch_batches(lines, widths, writers, seed, cfg: PipelineConfig):
    """A group of L lines -> k shuffled batches of L patches (k crops per line), so that
    every batch mixes many lines and tf.data handles whole batches, not single patches."""
    k = cfg.patches_per_image
    crops = ops.random_crops(lines, widths, seed, k, cfg)  # [L, k, P, P, 1]
    n = tf.shape(crops)[0] * k
    x = ops.scale_input(tf.reshape(crops, [n, cfg.patch_size, cfg.patch_size, 1]), cfg)
    if cfg.augment:
        x = ops.augment(x, seed + 7)
    y = tf.repeat(writers, k)
    order = tf.argsort(tf.random.stateless_uniform([n], seed + 3))
    x, y = tf.gather(x, order), tf.gather(y, order)
    return (tf.reshape(x, [k, -1, cfg.patch_size, cfg.patch_size, 1]), tf.reshape(y, [k, -1]))


def train_dataset(raw: tf.data.Dataset, cfg: PipelineConfig,
                  corrupt: CorruptImages | None = None) -> tf.data.Dataset:
    """(x, writer) batches for classifier training, shuffled with `cfg.seed`.

    patches: each epoch, `patches_per_image` new random inked crops of every line; lines are
    grouped `batch_size` at a time and their crops dealt into `patches_per_image` batches.
    resize: each whole image once per epoch.
    """
    ds = _decoded(raw, cfg, corrupt).shuffle(cfg.shuffle_buffer, seed=cfg.seed)
    if cfg.mode == "resize":
        ds = ds.map(lambda ex: (ops.scale_input(ex["x"], cfg), ex["writer"]),
                    num_parallel_calls=AUTOTUNE)
        return _finish(ds.batch(cfg.batch_size), cfg)
    ds = ds.map(lambda ex: (ex["x"], tf.shape(ex["x"])[1], ex["writer"]))
    ds = ds.padded_batch(cfg.batch_size, padded_shapes=([cfg.patch_size, None, 1], [], []))
    ds = _seeded(ds, cfg.seed).map(
        lambda group, s: _patch_batches(*group, s, cfg),
        num_parallel_calls=AUTOTUNE,
    )
    return _finish(ds.unbatch(), cfg)


def eval_dataset(raw: tf.data.Dataset, cfg: PipelineConfig,
                 corrupt: CorruptImages | None = None) -> tf.data.Dataset:
    """Deterministic batches of dicts {x, writer, image_id, form_id, ink}: every sliding
    window of every image (patches) or each whole image (resize), for per-image and
    per-form aggregation."""
    def windows(ex):
        if cfg.mode == "patches":
            patches, ink = ops.sliding_windows(ex["x"], cfg)
            x = ops.scale_input(patches, cfg)
        else:
            x, ink = ops.scale_input(ex["x"], cfg)[None], tf.ones([1])
        n = tf.shape(x)[0]
        return {"x": x, "ink": ink, "writer": tf.fill([n], ex["writer"]),
                "image_id": tf.fill([n], ex["image_id"]), "form_id": tf.fill([n], ex["form_id"])}

    ds = _decoded(raw, cfg, corrupt)
    ds = ds.map(windows, num_parallel_calls=AUTOTUNE).unbatch()
    return _finish(ds.batch(cfg.batch_size), cfg)


def _class_streams(raw: tf.data.Dataset, cfg: PipelineConfig, corrupt, classes: list[int]):
    """One endless, shuffled stream of decoded examples per writer. Each stream decodes and
    caches only its own writer's images (its own cache, filled by its own first pass), so
    the streams never share a partly written cache."""
    return [
        _decoded(raw.filter(lambda ex, c=c: tf.equal(ex["writer"], c)), cfg, corrupt)
        .repeat().shuffle(64, seed=cfg.seed + c)
        for c in classes
    ]


def _classes(raw: tf.data.Dataset) -> list[int]:
    labels = raw.map(lambda ex: ex["writer"], num_parallel_calls=AUTOTUNE)
    return sorted({int(v) for v in labels.as_numpy_iterator()})


def _in_order(raw, cfg: PipelineConfig, corrupt, classes: list[int], order) -> tf.data.Dataset:
    """Decoded examples drawn from the writers' streams in the given class order."""
    choice = tf.data.Dataset.from_tensor_slices(np.asarray(order, np.int64))
    return tf.data.Dataset.choose_from_datasets(_class_streams(raw, cfg, corrupt, classes),
                                                choice)


def _views_in_order(raw, cfg: PipelineConfig, corrupt, classes: list[int], order):
    """(view, writer) elements drawn from the writers' streams in the given class order."""
    return _seeded(_in_order(raw, cfg, corrupt, classes, order), cfg.seed).map(
        lambda ex, s: (_view(ex, s, cfg, cfg.augment), ex["writer"]),
        num_parallel_calls=AUTOTUNE,
    )


def _one_crop_each(lines, widths, writers, seed, cfg: PipelineConfig):
    """A padded group of lines -> one random inked crop of each, in order."""
    crops = ops.random_crops(lines, widths, seed, 1, cfg)[:, 0]
    x = ops.scale_input(crops, cfg)
    return (ops.augment(x, seed + 7) if cfg.augment else x), writers


def pk_dataset(raw: tf.data.Dataset, cfg: PipelineConfig, p: int, k: int, steps: int,
               corrupt: CorruptImages | None = None) -> tf.data.Dataset:
    """`steps` batches of P writers x K samples (one random crop of K different lines, or
    K whole images, each), as (x [P*K, ...], writer [P*K]), for in-batch triplet or
    contrastive losses. P is capped at the number of writers in the split."""
    classes = _classes(raw)
    if len(classes) < 2 or p < 2 or k < 2:
        raise ValueError(f"P x K needs P >= 2 writers (the split has {len(classes)}) and "
                         f"K >= 2; got {p}x{k}")
    p = min(p, len(classes))
    rng = np.random.default_rng(cfg.seed)
    order = np.concatenate([
        np.repeat(rng.choice(len(classes), p, replace=False), k) for _ in range(steps)
    ])
    if cfg.mode == "resize":
        ds = _views_in_order(raw, cfg, corrupt, classes, order)
        return _finish(ds.batch(p * k, drop_remainder=True), cfg)
    ds = _in_order(raw, cfg, corrupt, classes, order)
    ds = ds.map(lambda ex: (ex["x"], tf.shape(ex["x"])[1], ex["writer"]))
    ds = ds.padded_batch(p * k, padded_shapes=([cfg.patch_size, None, 1], [], []),
                         drop_remainder=True)
    ds = _seeded(ds, cfg.seed).map(lambda group, s: _one_crop_each(*group, s, cfg),
                                   num_parallel_calls=AUTOTUNE)
    return _finish(ds, cfg)


def pair_dataset(raw: tf.data.Dataset, cfg: PipelineConfig, pairs: int,
                 corrupt: CorruptImages | None = None, with_writers: bool = False):
    """Balanced `((a, b), label)` batches for Siamese training. label 1 = same writer,
    0 = different writers; positives and negatives alternate. `with_writers` appends the
    two writer labels, `((a, b), label, (writer_a, writer_b))`, for checks and analysis."""
    classes = _classes(raw)
    if len(classes) < 2:
        raise ValueError("pairs need at least 2 writers in the split")
    rng = np.random.default_rng(cfg.seed)
    order = []
    for i in range(pairs):
        a = rng.integers(len(classes))
        b = a if i % 2 == 0 else (a + rng.integers(1, len(classes))) % len(classes)
        order += [a, b]
    ds = _views_in_order(raw, cfg, corrupt, classes, order).batch(2)

    def label(x, w):
        out = ((x[0], x[1]), tf.cast(tf.equal(w[0], w[1]), tf.float32))
        return out + ((w[0], w[1]),) if with_writers else out

    ds = ds.map(label)
    return _finish(ds.batch(cfg.batch_size), cfg)
