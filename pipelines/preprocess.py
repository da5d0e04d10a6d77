"""Line normalisation in numpy + OpenCV: the reference preprocessing of the patch recipe.

The tf.data pipeline calls it through `tf.numpy_function` (OpenCV's area resize is several
times faster than TF's on full-resolution lines) and the TF-free edge runtime imports it
directly, so training and inference share one implementation. No TensorFlow import here.
"""

from __future__ import annotations

import cv2
import numpy as np

from iam_writers_tfds.images import decode_gray


def normalize_line(gray: np.ndarray, height: int, band: int) -> np.ndarray:
    """2-D uint8 dark-ink-on-paper image -> uint8 [height, W'] with bright ink on black.

    Crops the columns that hold ink and, vertically, either (`band` > 0) the `band` rows
    centred on the row that halves the ink, padded with paper where the image ends, or
    (`band` 0) the rows that hold ink. Scales that to `height` px (keeping the aspect
    ratio), subtracts the paper level and stretches the ink to 0..255, so paper colour, ink
    darkness and margins carry no information. With a band every line of a scan is scaled
    alike, so the size of the handwriting, a trait of the writer, survives; the ink's
    bounding box instead scales each line by its tallest ascender and deepest descender.
    W' is at least `height`.
    """
    # Full-resolution work stays in uint8 (cheap); float maths only after the downscale.
    paper = cv2.mean(gray)[0]
    darkest = cv2.minMaxLoc(gray)[0]
    top, bottom, centre = 0, gray.shape[0], gray.shape[0] // 2
    if darkest < paper:  # ink: pixels more than half-way from paper to the darkest ink
        _, mask = cv2.threshold(gray, (paper + darkest) / 2, 255, cv2.THRESH_BINARY_INV)
        x, top, w, h = cv2.boundingRect(mask)
        gray, bottom = gray[:, x : x + w], top + h
        rows = np.cumsum(np.count_nonzero(mask, axis=1))
        centre = int(np.searchsorted(rows, rows[-1] / 2))
    if band:
        top, bottom = centre - band // 2, centre - band // 2 + band
    pad = (max(0, -top), max(0, bottom - gray.shape[0]))
    gray = np.pad(gray[max(0, top) : bottom], [pad, (0, 0)], constant_values=round(paper))
    h, w = gray.shape
    new_w = max(1, round(w * height / h))
    interp = cv2.INTER_AREA if h > height else cv2.INTER_LINEAR
    small = cv2.resize(gray, (new_w, height), interpolation=interp).astype(np.float32)
    out = np.maximum(paper - small, 0.0)
    out *= 255.0 / (out.max() + 1e-3)
    if new_w < height:
        out = np.pad(out, [(0, 0), (0, height - new_w)])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def decode_normalize(encoded: bytes, height: int, band: int) -> np.ndarray:
    """PNG/JPEG bytes -> normalised line, uint8 [height, W', 1]."""
    return normalize_line(decode_gray(bytes(encoded)), int(height), int(band))[:, :, None]


def pad_line(line: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Right-pad a normalised line with background to `size + k * stride` px, the smallest
    such width that holds it, so windows every `stride` px tile it exactly: the layout of
    the exported model's single pass over a line (numpy twin of `ops.pad_line`)."""
    width = line.shape[1]
    target = size + -(-max(width - size, 0) // stride) * stride
    return np.pad(line, [(0, 0), (0, target - width)] + [(0, 0)] * (line.ndim - 2))


# a line where no window reaches `min_ink` (a thin or faint pen: 2 of the 2,881 real dev
# lines peak at 2.2% and 3.0%) is read from its windows with at least this much ink
THIN_LINE_INK = 0.01


def kept_windows(ink: np.ndarray, min_ink: float) -> np.ndarray:
    """Which windows of a line (their `window_ink`) a prediction averages: those with at
    least `min_ink` ink, else, for a thin pen's line, those with at least THIN_LINE_INK
    (none: the line has too little ink to read; twin of the export's graph)."""
    keep = ink >= min_ink
    return keep if keep.any() else ink >= min(THIN_LINE_INK, min_ink)


def window_ink(line: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Ink fraction (pixels > 127) of the windows every `stride` px of a padded line
    (numpy twin of `ops.window_ink`)."""
    col = np.concatenate([[0.0], np.cumsum((line.reshape(size, -1) > 127).sum(axis=0))])
    starts = np.arange(0, line.shape[1] - size + 1, stride)
    return ((col[starts + size] - col[starts]) / float(size * size)).astype(np.float32)


def resize_rgb(gray: np.ndarray, size: int, keep_aspect: bool) -> np.ndarray:
    """The notebooks' whole-image input, uint8 [size, size, 3] (twin of `ops.resize_rgb`)."""
    if keep_aspect:
        h, w = gray.shape
        scale = min(size / h, size / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        small = cv2.resize(gray, (nw, nh), interpolation=cv2.INTER_LINEAR)
        top, left = (size - nh) // 2, (size - nw) // 2
        out = np.full((size, size), 255, np.uint8)
        out[top : top + nh, left : left + nw] = small
    else:
        out = cv2.resize(gray, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.repeat(out[:, :, None], 3, axis=2)


def scale_input(x: np.ndarray, normalization: str) -> np.ndarray:
    """uint8 -> float32 model input (twin of `ops.scale_input`): 0..1, or ResNet50's
    caffe preprocessing (BGR, ImageNet means subtracted)."""
    x = x.astype(np.float32)
    if normalization == "resnet50":
        return x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    return x / 255.0
