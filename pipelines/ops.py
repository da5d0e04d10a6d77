"""Per-example TF ops: decoding, line normalisation, crops, windows and augmentation."""

from __future__ import annotations

import keras
import tensorflow as tf

from pipelines import preprocess
from pipelines.config import PipelineConfig

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def looks_valid(encoded: tf.Tensor) -> tf.Tensor:
    """Cheap in-graph check that a PNG is complete: signature at the start, IEND at the end."""
    n = tf.strings.length(encoded)
    head = tf.strings.substr(encoded, 0, 8)
    tail = tf.strings.substr(encoded, tf.maximum(n - 12, 0), 12)
    return tf.logical_and(
        tf.logical_and(n > 40, tf.equal(head, _PNG_SIGNATURE)),
        tf.equal(tf.strings.substr(tail, 4, 4), b"IEND"),
    )


def decode(encoded: tf.Tensor) -> tf.Tensor:
    """PNG bytes -> uint8 [H, W, 1]."""
    return tf.io.decode_png(encoded, channels=1)


def normalize_line(encoded: tf.Tensor, height: int, band: int) -> tf.Tensor:
    """PNG bytes -> uint8 [height, W', 1] normalised line (see `preprocess.normalize_line`)."""
    line = tf.numpy_function(preprocess.decode_normalize, [encoded, height, band], tf.uint8,
                             stateful=False)
    return tf.ensure_shape(line, [height, None, 1])


def resize_rgb(image: tf.Tensor, size: int, keep_aspect: bool) -> tf.Tensor:
    """The notebooks' input: the whole image as RGB size x size (uint8), squashed or padded."""
    rgb = tf.image.grayscale_to_rgb(image)
    if keep_aspect:
        # pad with paper (white), not black: invert, pad with zeros, invert back
        padded = tf.image.resize_with_pad(255.0 - tf.cast(rgb, tf.float32), size, size)
        out = 255.0 - padded
    else:
        out = tf.image.resize(rgb, (size, size))
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def scale_input(x: tf.Tensor, cfg: PipelineConfig) -> tf.Tensor:
    """uint8 -> float32 model input under the configured normalisation."""
    x = tf.cast(x, tf.float32)
    if cfg.normalization == "resnet50":
        return keras.applications.resnet50.preprocess_input(x)
    return x / 255.0


def _window_ink(line: tf.Tensor, size: int) -> tf.Tensor:
    """Ink fraction of every window start 0..W-size (a cumulative sum over ink columns)."""
    col = tf.reduce_sum(tf.cast(line[:, :, 0] > 127, tf.float32), axis=0)
    cs = tf.concat([[0.0], tf.cumsum(col)], axis=0)
    n = tf.shape(line)[1] - size + 1
    return (cs[size : size + n] - cs[:n]) / float(size * size)


def random_crops(lines: tf.Tensor, widths: tf.Tensor, seed: tf.Tensor, k: int,
                 cfg: PipelineConfig) -> tf.Tensor:
    """k random size x size crops of each of a batch of normalised lines, each with ink
    (falling back to the inkiest candidates when a line has too few).

    lines: uint8 [L, size, W_max, 1], right-padded; widths: [L] true widths.
    Returns uint8 [L, k, size, size, 1]. Vectorised over the batch: one gather, no loop.
    """
    size = cfg.patch_size
    col = tf.reduce_sum(tf.cast(lines[..., 0] > 127, tf.float32), axis=1)  # [L, W_max]
    cs = tf.pad(tf.cumsum(col, axis=1), [[0, 0], [1, 0]])
    n = tf.cast(widths - size + 1, tf.float32)[:, None]  # valid window starts per line
    u = tf.random.stateless_uniform([tf.shape(lines)[0], 4 * k], seed)
    candidates = tf.cast(tf.floor(u * n), tf.int32)
    cand_ink = (tf.gather(cs, candidates + size, batch_dims=1)
                - tf.gather(cs, candidates, batch_dims=1)) / float(size * size)
    noise = tf.random.stateless_uniform(tf.shape(u), seed + 1)
    key = tf.cast(cand_ink >= cfg.min_ink, tf.float32) * 2.0 + noise + cand_ink
    starts = tf.gather(candidates, tf.math.top_k(key, k).indices, batch_dims=1)  # [L, k]
    cols = starts[:, :, None] + tf.range(size)[None, None, :]  # [L, k, size]
    crops = tf.gather(lines, cols, axis=2, batch_dims=1)  # [L, size, k, size, 1]
    return tf.ensure_shape(tf.transpose(crops, [0, 2, 1, 3, 4]), [None, k, size, size, 1])


def window_starts(width: tf.Tensor, size: int, stride: int) -> tf.Tensor:
    """Deterministic window starts covering the whole width: every stride, plus the end."""
    last = width - size
    starts = tf.range(0, last + 1, stride)
    return tf.cond(starts[-1] < last, lambda: tf.concat([starts, [last]], 0), lambda: starts)


def pad_line(line: tf.Tensor, size: int, stride: int) -> tf.Tensor:
    """Right-pad a normalised [size, W, 1] line to `size + k * stride` px (see
    `preprocess.pad_line`)."""
    width = tf.shape(line)[1]
    target = size + (tf.maximum(width - size, 0) + stride - 1) // stride * stride
    return tf.pad(line, [[0, 0], [0, target - width], [0, 0]])


def window_ink(line: tf.Tensor, size: int, stride: int) -> tf.Tensor:
    """Ink fraction of the windows every `stride` px of a padded line."""
    return _window_ink(line, size)[::stride]


def kept_windows(ink: tf.Tensor, min_ink: float) -> tf.Tensor:
    """Which windows a prediction averages (twin of `preprocess.kept_windows`)."""
    keep = ink >= min_ink
    return tf.logical_or(keep, tf.logical_and(ink >= min(preprocess.THIN_LINE_INK, min_ink),
                                              tf.logical_not(tf.reduce_any(keep))))


def sliding_windows(line: tf.Tensor, cfg: PipelineConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """Every window of a normalised line and its ink fraction."""
    size = cfg.patch_size
    starts = window_starts(tf.shape(line)[1], size, cfg.stride)
    patches = tf.map_fn(lambda s: line[:, s : s + size], starts, fn_output_signature=tf.uint8)
    patches = tf.ensure_shape(patches, [None, size, size, 1])
    return patches, tf.gather(_window_ink(line, size), starts)


def augment(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Training-only jitter of a float [N, H, W, C] batch of patches (0..1 ink), drawn per
    patch: small shear and rotation, scale, brightness/contrast, stroke thinning/thickening."""
    n = tf.shape(x)[0]
    size = tf.cast(tf.shape(x)[1], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 6)
    angle = tf.random.stateless_uniform([n], seeds[0], -0.06, 0.06)
    shear = tf.random.stateless_uniform([n], seeds[1], -0.2, 0.2)
    scale = tf.random.stateless_uniform([n], seeds[2], 0.9, 1.1)
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    c = size / 2.0
    a0, a1 = cos, -sin + shear
    b0, b1 = sin, cos
    transform = tf.stack(
        [a0, a1, c - a0 * c - a1 * c, b0, b1, c - b0 * c - b1 * c, tf.zeros([n]), tf.zeros([n])],
        axis=1,
    )
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transform, output_shape=tf.shape(x)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
    )
    # per patch, so that no batch is all thickened or all thinned: batch norm's moving
    # statistics would fit no batch (docs/results.md, closed set, on augmentation)
    stroke = tf.random.stateless_uniform([n, 1, 1, 1], seeds[3], 0, 3, dtype=tf.int32)
    x = tf.where(stroke == 1, tf.nn.max_pool2d(x, 3, 1, "SAME"),  # thicker strokes
                 tf.where(stroke == 2, -tf.nn.max_pool2d(-x, 3, 1, "SAME"), x))  # thinner
    gain = tf.random.stateless_uniform([n, 1, 1, 1], seeds[4], 0.7, 1.3)
    bias = tf.random.stateless_uniform([n, 1, 1, 1], seeds[5], -0.1, 0.1)
    return tf.clip_by_value(x * gain + bias, 0.0, 1.0)


def normalize_line_graph(image: tf.Tensor, height: int, band: int) -> tf.Tensor:
    """TF-ops twin of `preprocess.normalize_line` for serving signatures, where
    `tf.numpy_function` cannot go: uint8 [H, W, 1] -> uint8 [height, W', 1]."""
    g = tf.cast(image[:, :, 0], tf.float32)
    paper, darkest = tf.reduce_mean(g), tf.reduce_min(g)

    def ink():  # pixels at or below the 8-bit threshold, as cv2.threshold takes them
        mask = g <= tf.floor((paper + darkest) / 2)
        rows = tf.cast(tf.where(tf.reduce_any(mask, axis=1))[:, 0], tf.int32)
        cols = tf.cast(tf.where(tf.reduce_any(mask, axis=0))[:, 0], tf.int32)
        counts = tf.cumsum(tf.reduce_sum(tf.cast(mask, tf.float32), axis=1))
        centre = tf.searchsorted(counts, counts[-1:] / 2)[0]
        return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1, centre

    def no_ink():
        return 0, tf.shape(g)[0], 0, tf.shape(g)[1], tf.shape(g)[0] // 2

    top, bottom, left, right, centre = tf.cond(darkest < paper, ink, no_ink)
    if band:
        top, bottom = centre - band // 2, centre - band // 2 + band
    pad = [tf.maximum(0, -top), tf.maximum(0, bottom - tf.shape(g)[0])]
    g = tf.pad(g[tf.maximum(0, top) : bottom, left:right], [pad, [0, 0]],
               constant_values=tf.round(paper))
    h, w = tf.shape(g)[0], tf.shape(g)[1]
    new_w = tf.maximum(1, tf.cast(tf.round(tf.cast(w * height, tf.float64)
                                           / tf.cast(h, tf.float64)), tf.int32))
    size = tf.stack([height, new_w])
    small = tf.cond(h > height,
                    lambda: tf.image.resize(g[:, :, None], size, method="area"),
                    lambda: tf.image.resize(g[:, :, None], size, method="bilinear"))
    small = tf.clip_by_value(tf.round(small), 0.0, 255.0)  # cv2 returns uint8
    out = tf.maximum(paper - small, 0.0)
    out = out * (255.0 / (tf.reduce_max(out) + 1e-3))
    out = tf.pad(out, [[0, 0], [0, tf.maximum(height - new_w, 0)], [0, 0]])
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)
