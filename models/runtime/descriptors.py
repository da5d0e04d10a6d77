"""Classical writer descriptors: training-free, TF-free (NumPy and OpenCV only).

The contour-hinge of Bulacu & Schomaker ("Text-independent writer identification and
verification using textural and allographic features", IEEE TPAMI 29(4), 2007): at every
pixel of every ink contour, the directions of the two contour fragments of `leg` pixels
leaving it, each quantised into `bins` directions, accumulated as an unordered pair into a
joint histogram. It captures slant and curvature; it needs no training, so it names
writers no model has seen. Descriptors are kept as raw counts, so that a document's
descriptor is the sum over its lines; distances normalise them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from models.runtime.pages import ink_mask

# RootSIFT + VLAD centres: with RootSIFT read along the contours, 128 reject a third fewer
# genuine lines than 64 end to end; at SIFT's keypoints 512 did not pay (docs/results.md,
# RootSIFT read along the contours; the spread)
VLAD_CENTRES = 128
# k-means runs from this many k-means++ starts, the most compact kept: 3 cost 3.2 times 1's
# for 0.06% of compactness (docs/results.md, the codebook's k-means)
KMEANS_ATTEMPTS = 1
VLAD_SAMPLES = 100_000  # RootSIFT descriptors a view's PCA and k-means are fitted on
# RootSIFT read along the ink's contours, every CONTOUR_STEP pixels of contour, at keypoints
# KEYPOINT_SIZE pixels across (at 300 dpi): on lines of unseen writers it names more and
# rejects fewer genuine lines than SIFT's own keypoints (docs/results.md, RootSIFT read
# along the contours)
CONTOUR_STEP = 5
KEYPOINT_SIZE = 8.0
CONTOUR_MIN = 20  # contours of fewer pixels are specks of dust or noise
# VLAD's views of a line: its ink as read (0), and redrawn with its strokes about
# STROKE_WIDTH px wide, the median of IAM's lines at 300 dpi (`strokes_drawn`). Beside the
# first, the second rejects fewer genuine lines of unseen writers at the same rate of
# strangers accepted: a pen's width changes from page to page, the hand's shapes do not
# (docs/results.md, a second view with the pen's width taken out)
STROKE_WIDTH = 4.3
VLAD_VIEWS = (0.0, STROKE_WIDTH)
STROKE_BLUR = 3.0  # px: the ink mask's blur, re-thresholded to set the strokes' width
# The redrawn view also stands the strokes upright: a hand's slant drifts from page to page
# as its pen's width does (docs/results.md, the second view stood upright)
VLAD_UPRIGHT = True
ENCODE_ROWS = 64  # rows `Vlad.encode` normalises at a time: its temporaries stay small
SHEARS = np.linspace(-1.0, 1.0, 41)  # the shears `upright` tries: up to 45 degrees either way
# Unknown-writer thresholds on 1 - chi-square for galleries built without a model: the
# equal-error points of lines, and of forms as documents, against one enrolled form per
# writer (docs/results.md, hinge)
HINGE_THRESHOLD = 0.9647
HINGE_DOCUMENT_THRESHOLD = 0.9769


@dataclasses.dataclass(frozen=True)
class Hinge:
    """Contour-hinge histogram parameters; the defaults are those measured in
    docs/results.md (open set)."""

    leg: int = 10  # contour pixels from the hinge to each leg's end
    bins: int = 16  # directions per leg, over the full circle

    def __post_init__(self) -> None:
        if self.leg < 1 or self.bins < 2:
            raise ValueError(f"hinge needs leg >= 1 and bins >= 2, got {self.leg}, {self.bins}")

    @property
    def name(self) -> str:
        return f"hinge-l{self.leg}-b{self.bins}"

    @classmethod
    def parse(cls, name: str) -> Hinge:
        """The descriptor a gallery or model card names, e.g. `hinge-l10-b16`."""
        match = re.fullmatch(r"hinge-l(\d+)-b(\d+)", name)
        if not match:
            raise ValueError(f"unknown descriptor {name!r}; expected hinge-lLEG-bBINS")
        return cls(int(match[1]), int(match[2]))

    @property
    def size(self) -> int:
        """Unordered bin pairs: bins * (bins + 1) / 2."""
        return self.bins * (self.bins + 1) // 2

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The raw counts [size] of a grey line image (dark ink on light paper)."""
        # contours too short for two distinct legs are specks
        contours = [c for c in ink_contours(image) if len(c) > 2 * self.leg]
        if not contours:
            return np.zeros(self.size, np.float64)
        return np.bincount(self.pair_index(contours), minlength=self.size).astype(np.float64)

    def pair_index(self, contours: list[np.ndarray]) -> np.ndarray:
        """The histogram cell of every pixel of closed contours [N_i, 2] (x, y), all in one
        pass: each pixel's legs end `leg` steps along its own contour, either way round."""
        points = np.concatenate(contours)
        lengths = np.array([len(c) for c in contours])
        start = np.repeat(np.cumsum(lengths) - lengths, lengths)
        n = np.repeat(lengths, lengths)
        along = np.arange(len(points)) - start
        forward = points[start + (along + self.leg) % n] - points
        backward = points[start + (along - self.leg) % n] - points
        a, b = self.direction_bin(forward), self.direction_bin(backward)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        # row-major index into the upper triangle (lo <= hi) of a bins x bins matrix
        return lo * self.bins - lo * (lo - 1) // 2 + (hi - lo)

    def direction_bin(self, v: np.ndarray) -> np.ndarray:
        """Quantised direction of vectors [N, 2] in image coordinates (y down), counted
        anticlockwise from the +x axis as on paper."""
        angle = np.arctan2(-v[:, 1], v[:, 0]) % (2 * np.pi)
        return np.minimum((angle / (2 * np.pi) * self.bins).astype(np.int64), self.bins - 1)


def ink_contours(image: np.ndarray) -> list[np.ndarray]:
    """Every outer and inner contour [N, 2] of the ink (Otsu's threshold), pixel by pixel."""
    contours, _ = cv2.findContours(ink_mask(image), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return [c[:, 0, :].astype(np.int64) for c in contours]


def stroke_width(ink: np.ndarray) -> float:
    """The mean width in px of an ink mask's strokes: twice its area over its contours'
    length (a long stroke of width w and length l has area w l and outline 2 l)."""
    contours, _ = cv2.findContours(ink, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    outline = sum(cv2.arcLength(c, True) for c in contours)
    return 2 * np.count_nonzero(ink) / max(outline, 1.0)


def viewed(image: np.ndarray, width: float, stood_upright: bool = False) -> np.ndarray:
    """A grey image as a VLAD view reads it: as it is (`width` 0), else `strokes_drawn`,
    and then, if `stood_upright`, `upright`."""
    if not width:
        return image
    drawn = strokes_drawn(image, width)
    return upright(drawn) if stood_upright else drawn


def sheared(image: np.ndarray, shear: float, fill: float) -> np.ndarray:
    """An image sheared horizontally about its middle row (x + shear (y - h / 2)), widened
    so that nothing leaves it, the new pixels `fill`."""
    h, w = image.shape
    pad = _shear_pad(shear, h)
    m = np.float32([[1, shear, pad - shear * h / 2], [0, 1, 0]])
    return cv2.warpAffine(image, m, (w + 2 * pad, h), flags=cv2.INTER_LINEAR,
                          borderValue=fill)


def _shear_pad(shear: float, height: int) -> int:
    """The columns `sheared` adds on either side, so that nothing leaves the image."""
    return int(abs(shear) * height) + 2


def slant(image: np.ndarray) -> float:
    """The shear of `SHEARS` that stands a dark-on-white image's strokes upright: the one
    whose columns hold the ink most unevenly (the largest sum of squared column counts),
    where near-vertical strokes line up as columns (Vinciarelli and Luettin's deslanting)."""
    ys, xs = np.nonzero(image < 128)
    spread = [float(np.square(sheared_columns(ys, xs, image.shape, s)).sum()) for s in SHEARS]
    return float(SHEARS[int(np.argmax(spread))])


def sheared_columns(ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int],
                    shear: float) -> np.ndarray:
    """The column sums of an ink mask (its pixels at rows `ys`, columns `xs`, in an image of
    `shape`) as `sheared` shears it, each pixel shared by linear interpolation between the
    two columns it lands between: from the ink alone, 2.4 times faster than warping the
    image (the same shears on all 2,881 dev lines; docs/results.md, slant from the ink)."""
    h, w = shape
    pad = _shear_pad(shear, h)
    at = xs + (shear * (ys - h / 2) + pad)
    left = np.floor(at)
    right = at - left
    left = left.astype(np.int64)
    return (np.bincount(left, 1 - right, w + 2 * pad)
            + np.bincount(left + 1, right, w + 2 * pad))


def upright(image: np.ndarray) -> np.ndarray:
    """A dark-on-white image sheared by its `slant`, its strokes stood upright."""
    return sheared(image, slant(image), 255)


def strokes_drawn(image: np.ndarray, width: float) -> np.ndarray:
    """A grey image's ink (Otsu's threshold) redrawn dark on white with its strokes about
    `width` px wide: the mask blurred by a Gaussian of STROKE_BLUR px and cut at the level
    where a straight stroke of the ink's own width (`stroke_width`) blurs to `width` across,
    then softened as a scan's edges are. Loops and joins fill a little (IAM's lines measure
    5.3-6.5 px after, 3.2-6.8 before), but what a pen's width adds is largely taken out."""
    ink = ink_mask(image)
    own = stroke_width(ink)
    half = width / 2 / STROKE_BLUR
    level = (math.erf((half + own / 2 / STROKE_BLUR) / math.sqrt(2))
             - math.erf((half - own / 2 / STROKE_BLUR) / math.sqrt(2))) / 2
    blurred = cv2.GaussianBlur(ink.astype(np.float32), (0, 0), STROKE_BLUR)
    # a level near 0 (a stroke far thinner than `width`) would fill the blur's whole reach
    drawn = np.where(blurred >= max(level, 0.02), 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(drawn, (0, 0), 0.7)


T = TypeVar("T")


def each(describe: Callable[[T], np.ndarray], images: Iterable[T],
         threads: int | None = None) -> Iterator[np.ndarray]:
    """`describe` of every image, in order, on a pool of threads (one per CPU core):
    OpenCV's SIFT and NumPy release the GIL, so a page's lines or an export's training lines
    are described up to twice as fast on two cores (docs/results.md, descriptor threads).
    `images` may be a generator: it is read at most two images per thread ahead of the
    results, so a long stream is never held in memory at once. NumPy's BLAS keeps one
    thread of its own meanwhile: its threads and the pool's would contend for the same
    cores, and VLAD's products ran three times slower."""
    threads = threads or os.cpu_count() or 1
    if isinstance(images, Sized):
        threads = min(threads, len(images))
    if threads <= 1:
        yield from map(describe, images)
        return
    with ThreadPoolExecutor(threads) as pool, threadpool_limits(1, user_api="blas"):
        pending: deque[Future] = deque()
        for image in images:
            pending.append(pool.submit(describe, image))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def distribution(counts: np.ndarray) -> np.ndarray:
    """Counts [..., K] normalised to probability distributions along the last axis."""
    total = counts.sum(axis=-1, keepdims=True)
    return counts / np.maximum(total, 1e-12)


def chi_square(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """[Q, R] chi-square distances between the distributions of count rows."""
    p, q = distribution(queries)[:, None, :], distribution(references)[None, :, :]
    total = p + q
    return 0.5 * np.sum(np.divide((p - q) ** 2, total, out=np.zeros_like(total),
                                  where=total > 0), axis=-1)


class References:
    """Count rows [R, K] (writers' summed hinge counts) prepared for fast chi-square
    similarity against many queries: distributions stored bin-major in float32, so that a
    query reads only the bins where it has ink (docs/results.md, gallery)."""

    CHUNK = 8192  # references per step: keeps the temporaries in the CPU's cache

    def __init__(self, counts: np.ndarray):
        dist = distribution(np.asarray(counts, np.float64))
        self.by_bin = np.ascontiguousarray(dist.T, dtype=np.float32)  # [K, R]
        self.empty = dist.sum(axis=1) == 0

    def __len__(self) -> int:
        return self.by_bin.shape[1]

    def similarity(self, queries: np.ndarray) -> np.ndarray:
        """[Q, R] 1 - chi-square distance, equal to `1 - chi_square(queries, counts)`.
        With p, q distributions, (p - q)^2 / (p + q) = p + q - 4pq / (p + q), so
        1 - chi = 1 - (|p| + |q|) / 2 + 2 sum pq / (p + q), where |.| is 1 or 0 (empty) and
        only bins with p > 0 add to the sum."""
        p = distribution(np.atleast_2d(np.asarray(queries, np.float64)))
        out = np.empty((len(p), len(self)), np.float64)
        for i, row in enumerate(p):
            bins = np.flatnonzero(row)
            mass = row[bins].astype(np.float32)[:, None]
            base = 1 - 0.5 * (float(bins.size > 0) + (~self.empty))
            for lo in range(0, len(self), self.CHUNK):
                q = self.by_bin[bins, lo:lo + self.CHUNK]
                out[i, lo:lo + self.CHUNK] = base[lo:lo + self.CHUNK] + 2 * (
                    q * mass / (q + mass)).sum(axis=0)
        return out


def keypoints(image: np.ndarray, step: int = CONTOUR_STEP) -> np.ndarray | list:
    """Where `rootsift` reads a grey image: every `step`-th pixel of each ink contour, as
    [N, 2] (x, y); with `step` 0, SIFT's own keypoints (cv2.KeyPoint, angle 0)."""
    if not step:
        found = cv2.SIFT_create().detect(image, None)
        for k in found:
            k.angle = 0.0
        return list(found)
    points = [c[::step] for c in ink_contours(image) if len(c) > CONTOUR_MIN]
    return np.concatenate(points) if points else np.zeros((0, 2), np.int64)


def rootsift(image: np.ndarray, step: int = CONTOUR_STEP,
             keypoint: float = KEYPOINT_SIZE, at: np.ndarray | list | None = None
             ) -> np.ndarray:
    """RootSIFT descriptors [N, 128] (float32) of a grey image, at its `keypoints` (or at
    `at`, some of them), `keypoint` pixels across. Keypoints keep angle 0, since a hand's
    slant is one of its traits."""
    at = keypoints(image, step) if at is None else at
    if isinstance(at, np.ndarray):
        at = [cv2.KeyPoint(float(x), float(y), keypoint, 0.0) for x, y in at]
    desc = cv2.SIFT_create().compute(image, at)[1] if at else None
    if desc is None:
        return np.zeros((0, 128), np.float32)
    desc = desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(desc).astype(np.float32)


@dataclasses.dataclass(eq=False)
class Vlad:
    """RootSIFT, PCA-whitened, VLAD-encoded: the local-feature anchor of Christlein et al.
    ("Writer identification using GMM supervectors and exemplar-SVMs", Pattern Recognition
    63, 2017), read along the ink's contours (`rootsift`); its exemplar SVMs are
    `exemplar_svms`, which a gallery applies against an export's cohort. An image's
    descriptor is the sum of its residuals to the nearest centre [K * D], so that a
    document's is the sum over its lines; `encode` normalises (power, then per centre, then
    all) for cosine similarity.

    Each of `views` reads the image its own way, with its own PCA and centres (arrays
    stacked view by view: [V, 128], [V, 128, D], [V, K, D]): 0 as it is, a width w with
    its strokes redrawn w px wide (`strokes_drawn`), and stood `upright` where the codebook
    says so. Their residual sums are laid end to end and encoded as one VLAD of V K
    centres."""

    mean: np.ndarray  # [V, 128] of the RootSIFT descriptors each view was fitted on
    projection: np.ndarray  # [V, 128, D]: PCA, whitened
    centres: np.ndarray  # [V, K, D]: k-means of the projected descriptors
    step: int = CONTOUR_STEP  # `rootsift`'s sampling: 0 is SIFT's own keypoints
    keypoint: float = KEYPOINT_SIZE
    views: tuple[float, ...] = (0.0,)
    upright: bool = False  # the redrawn views stood upright too (`viewed`)

    def __post_init__(self):
        # one view's arrays as exports before views saved them
        self.mean = np.asarray(self.mean).reshape(len(self.views), -1)
        self.projection = np.asarray(self.projection).reshape(
            len(self.views), self.mean.shape[1], -1)
        self.centres = np.asarray(self.centres).reshape(
            len(self.views), -1, self.projection.shape[2])
        self.views = tuple(float(v) for v in self.views)
        self.upright = bool(self.upright)

    def local(self, image: np.ndarray, view: int = 0) -> np.ndarray:
        """The RootSIFT descriptors [N, 128] of a grey image as `view` reads it, sampled as
        this codebook's."""
        return rootsift(viewed(image, self.views[view], self.upright), self.step,
                        self.keypoint)

    @classmethod
    def fit(cls, images: list[np.ndarray], centres: int = VLAD_CENTRES, dims: int = 64,
            samples: int = VLAD_SAMPLES, seed: int = 0, step: int = CONTOUR_STEP,
            keypoint: float = KEYPOINT_SIZE, views: tuple[float, ...] = VLAD_VIEWS,
            upright: bool = VLAD_UPRIGHT) -> Vlad:
        """PCA-whitening and k-means centres of each of `views` (the redrawn ones stood
        `upright`), fitted on the RootSIFT descriptors of `images` as it reads them (at most
        `samples` of them, a seeded choice)."""
        fitted = [cls._fit_view(cls._sample(images, width, upright, step, keypoint, samples,
                                            seed), len(images), centres, dims, seed)
                  for width in views]
        return cls(*(np.stack(arrays) for arrays in zip(*fitted)), step, keypoint, views,
                   upright)

    @staticmethod
    def _sample(images: list[np.ndarray], width: float, upright: bool, step: int,
                keypoint: float, samples: int, seed: int) -> np.ndarray:
        """The RootSIFT descriptors of a seeded choice of `samples` of the places that one
        view of `images` is read at (all of them when fewer), in the order chosen: the very
        sample that describing every place and then choosing gave, so the same codebook, at
        a fraction of the cost on IAM's lines, where 400 lines hold five times `samples`
        places (docs/results.md, the codebook's sample)."""
        views = list(each(lambda image: viewed(image, width, upright), images))
        places = list(each(lambda view: keypoints(view, step), views))
        starts = np.cumsum([0] + [len(p) for p in places])
        chosen = np.arange(starts[-1])
        if starts[-1] > samples:
            chosen = np.random.default_rng(seed).choice(starts[-1], samples, replace=False)
        order = np.argsort(chosen)
        ranked = chosen[order]
        cut, picked = np.searchsorted(ranked, starts), []
        for i, places_of in enumerate(places):
            at = ranked[cut[i]:cut[i + 1]] - starts[i]
            picked.append(places_of[at] if isinstance(places_of, np.ndarray)
                          else [places_of[j] for j in at])
        described = np.concatenate([np.zeros((0, 128), np.float32), *each(
            lambda pair: rootsift(pair[0], step, keypoint, pair[1]), list(zip(views, picked)))])
        return described[np.argsort(order)]  # image by image back to the order chosen

    @staticmethod
    def whitening(desc: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
        """(mean [128], PCA-whitening projection [128, dims]) of descriptors [N, 128], from
        the eigenvectors of their covariance: the right singular vectors of the centred
        descriptors, found from a 128 x 128 matrix rather than an N x 128 one, about twenty
        times sooner at N = 100,000 (`benchmarks/codebook.py`: 2.06 s against 0.10 s)."""
        mean = desc.mean(axis=0)
        centred = (desc - mean).astype(np.float64)
        variances, vectors = np.linalg.eigh(centred.T @ centred / len(desc))
        top = np.argsort(variances)[::-1][:dims]
        return mean, vectors[:, top] / np.maximum(np.sqrt(np.maximum(variances[top], 0)), 1e-6)

    @staticmethod
    def _fit_view(desc: np.ndarray, images: int, centres: int, dims: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, whitening projection, centres) of one view's descriptors."""
        if len(desc) < max(centres, dims):
            raise ValueError(f"{images} images give {len(desc)} RootSIFT descriptors: "
                             f"too few to fit {centres} centres in {dims} dimensions; fit on "
                             "more handwriting")
        mean, projection = Vlad.whitening(desc, dims)
        projected = ((desc - mean) @ projection).astype(np.float32)
        cv2.setRNGSeed(seed)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-4)
        _, _, found = cv2.kmeans(projected, centres, None, criteria, KMEANS_ATTEMPTS,
                                 cv2.KMEANS_PP_CENTERS)
        return mean.astype(np.float32), projection.astype(np.float32), found

    @property
    def size(self) -> int:
        return self.centres.size

    @property
    def name(self) -> str:
        """`vlad-kK-dD-`, the sampling (`cSTEPsSIZE-` along contours; nothing at SIFT's
        keypoints, as exports before contour sampling named theirs), the views past the
        first (`wWIDTH-`, `wWIDTHu-` stood upright) and a digest of its arrays: galleries
        name the codebook they hold."""
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(a, "<f4").tobytes() for a in (
            self.mean, self.projection, self.centres))).hexdigest()[:12]
        sampling = f"c{self.step}s{self.keypoint:g}-" if self.step else ""
        views = "".join(f"w{v:g}{'u' if self.upright else ''}-" for v in self.views[1:])
        return (f"vlad-k{self.centres.shape[1]}-d{self.centres.shape[2]}-{sampling}{views}"
                f"{digest}")

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, projection=self.projection, centres=self.centres,
                 step=self.step, keypoint=self.keypoint, views=np.array(self.views),
                 upright=self.upright)

    @classmethod
    def load(cls, path: Path) -> Vlad:
        """A saved codebook; one saved before contour sampling reads SIFT's keypoints, one
        saved before views reads the image as it is, one saved before `upright` does not
        stand its redrawn views upright."""
        with np.load(path) as arrays:
            sampling = (int(arrays["step"]), float(arrays["keypoint"])) if "step" in arrays \
                else (0, 0.0)
            views = tuple(arrays["views"]) if "views" in arrays else (0.0,)
            upright = bool(arrays["upright"]) if "upright" in arrays else False
            return cls(arrays["mean"], arrays["projection"], arrays["centres"], *sampling,
                       views, upright)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The summed residuals [V * K * D] of a grey image's descriptors to their nearest
        centres, view by view."""
        return np.concatenate([self._sums(self.local(image, v), v)
                               for v in range(len(self.views))])

    def _sums(self, local: np.ndarray, view: int) -> np.ndarray:
        """The summed residuals [K * D] of one view's descriptors."""
        x = ((local - self.mean[view]) @ self.projection[view]).astype(np.float64)
        centres = self.centres[view].astype(np.float64)
        # nearest centre by |c|^2 - 2 x.c, and the residual sums as one product: matrix
        # products, ten times faster than pairwise differences and np.add.at
        nearest = (centres ** 2).sum(axis=1) - 2 * x @ centres.T
        member = np.zeros((len(x), len(centres)))
        member[np.arange(len(x)), nearest.argmin(axis=1)] = 1
        return (member.T @ x - member.sum(axis=0)[:, None] * centres).ravel()

    def encode(self, sums: np.ndarray) -> np.ndarray:
        """VLAD vectors [N, V * K * D] (float32) of summed residuals [N, V * K * D]: signed
        square root, L2 per centre, then L2 overall. In float32 from the start: a gallery's
        writers are encoded each time it is opened, five times faster so than in float64
        (docs/results.md, exemplar SVMs kept in the gallery). `ENCODE_ROWS` rows at a time,
        in place in the output: no temporary as large as the gallery, nor one per block,
        whose fresh pages took most of a 10,000-writer gallery's opening (docs/results.md, a
        VLAD gallery opened in float32)."""
        sums = np.atleast_2d(sums)
        out = np.empty(sums.shape, np.float32)
        for lo in range(0, len(sums), ENCODE_ROWS):
            self._encode_into(sums[lo:lo + ENCODE_ROWS], out[lo:lo + ENCODE_ROWS])
        return out

    def _encode_into(self, sums: np.ndarray, out: np.ndarray) -> None:
        """`encode` of a few rows, written into `out`."""
        v = out.reshape(len(out), -1, self.centres.shape[2])
        sums = sums.reshape(v.shape)
        np.abs(sums, out=v, casting="same_kind")
        np.sqrt(v, out=v)
        np.copysign(v, sums, out=v, casting="same_kind")
        v /= np.maximum(np.sqrt(np.einsum("nkd,nkd->nk", v, v)), 1e-12)[..., None]
        out /= np.maximum(np.sqrt(np.einsum("nd,nd->n", out, out)), 1e-12)[:, None]


# exemplar SVMs: the misclassification cost C (LinearSVC's; 0.1 and 10 did no better) and
# the dual coordinate descent's stopping rule (liblinear's: 1,000 sweeps, tolerance 1e-4)
EXEMPLAR_C = 1.0
EXEMPLAR_SWEEPS = 1000
EXEMPLAR_TOL = 1e-4
# writers solved at once: a batch holds three [batch, C + 1, C + 1] float64 arrays
EXEMPLAR_BATCH = 2048


def exemplar_svms(positives: np.ndarray, negatives: np.ndarray,
                  leave_out: np.ndarray | None = None,
                  c: float = EXEMPLAR_C) -> tuple[np.ndarray, np.ndarray]:
    """An exemplar SVM per positive (Malisiewicz et al. 2011; for writers, Christlein et
    al. 2017): a linear SVM separating each vector [W, D] from every `negatives` [C, D], as
    (unit weights [W, D], bias [W]) on the weights' scale, so that `x @ w + b` stays on
    cosine's. It scores a query by how it stands out from other writers' handwriting in
    the direction that sets this writer apart, not by raw likeness, which a common hand
    shares with everyone (docs/results.md, exemplar SVMs). `leave_out` [W, C] marks the
    negatives each SVM is not to be separated from: where the positives are the negatives
    (the cohort against itself), each one's own row; for an enrolled writer, the cohort
    writers whose handwriting it reads as (`identify.cohort_hands`).

    The problem is LinearSVC's (squared hinge, the bias regularised as a feature of value
    1, classes weighted to balance), solved by its dual coordinate descent (Hsieh et al.,
    ICML 2008) in the samples' span. The runtime ships without scikit-learn (it would take
    the base install past its size goal); `tests/test_descriptors.py` checks the result
    against LinearSVC's. It is `exemplar_weights` of `exemplar_duals`."""
    return exemplar_weights(positives, negatives,
                            exemplar_duals(positives, negatives, leave_out, c))


def exemplar_duals(positives: np.ndarray, negatives: np.ndarray,
                   leave_out: np.ndarray | None = None, c: float = EXEMPLAR_C) -> np.ndarray:
    """The exemplar SVMs of `exemplar_svms` as their signed dual multipliers [W, C + 1]
    (the positive's first, then each negative's): each SVM's weights are that combination
    of its samples, so C + 1 numbers keep one where its weights take a number per
    dimension, and a gallery stores them from enrolment (`Gallery.add`). Positives are
    solved `EXEMPLAR_BATCH` at a time: they share the negatives. A negative left out
    (`leave_out`, as in `exemplar_svms`) gets a multiplier of zero."""
    if len(positives) > EXEMPLAR_BATCH:
        return np.concatenate([exemplar_duals(
            positives[i:i + EXEMPLAR_BATCH], negatives,
            None if leave_out is None else leave_out[i:i + EXEMPLAR_BATCH], c)
            for i in range(0, len(positives), EXEMPLAR_BATCH)])
    positives = np.asarray(positives, np.float64)
    negatives = np.asarray(negatives, np.float64)
    w, n = len(positives), len(negatives) + 1
    used = np.ones((w, n), bool)  # sample 0 is the positive, then the negatives
    if leave_out is not None:
        used[:, 1:] = ~np.asarray(leave_out, bool)
    # kernel of [x, 1] with the labels' signs, and the squared hinge's diagonal 1 / (2 C_i)
    sign = np.r_[1.0, -np.ones(n - 1)]
    cross = positives @ negatives.T
    kernel = np.empty((w, n, n))
    kernel[:, 0, 0] = (positives ** 2).sum(axis=1)
    kernel[:, 0, 1:] = kernel[:, 1:, 0] = cross
    kernel[:, 1:, 1:] = negatives @ negatives.T
    q = (kernel + 1) * np.outer(sign, sign)
    count = used[:, 1:].sum(axis=1)
    # LinearSVC's class_weight="balanced": n_samples / (2 n_class)
    cost = np.where(np.arange(n) == 0, (count + 1)[:, None] / 2.0,
                    ((count + 1) / (2.0 * count))[:, None])
    q[:, np.arange(n), np.arange(n)] += 1 / (2 * c * cost)
    q *= used[:, :, None] & used[:, None, :]
    # started from the optimum over the samples left free, those whose multiplier comes
    # out negative dropped until none does: coordinate descent alone needs hundreds of
    # sweeps on such correlated samples, from there a few
    free = used.copy()
    for _ in range(n):
        held = free[:, :, None] & free[:, None, :]
        alpha = np.linalg.solve(q * held + ~free[:, :, None] * np.eye(n),
                                free[:, :, None] * 1.0)[..., 0]
        if not (alpha < 0).any():
            break
        free &= alpha > 0
    alpha = np.maximum(alpha, 0)
    rows = np.arange(w)
    for _ in range(EXEMPLAR_SWEEPS):
        largest = 0.0
        for i in range(n):
            gradient = np.einsum("wj,wj->w", q[:, i], alpha) - 1
            # projected gradient: an alpha at zero may only rise
            projected = np.where(alpha[:, i] > 0, gradient, np.minimum(gradient, 0)) * used[:, i]
            largest = max(largest, float(np.abs(projected).max()))
            alpha[rows, i] = np.where(used[:, i], np.maximum(
                alpha[:, i] - gradient / np.where(used[:, i], q[:, i, i], 1), 0), 0)
        if largest < EXEMPLAR_TOL:
            break
    return alpha * sign


def exemplar_weights(positives: np.ndarray, negatives: np.ndarray,
                     duals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit weights [W, D], bias [W]) of exemplar SVMs given by their `exemplar_duals`
    over the same positives [W, D] and negatives [C, D], in float32 as they are encoded (a
    gallery's weights in float64 took twice the time, for nothing the scores show)."""
    negatives = np.asarray(negatives, np.float32)
    weights = np.empty((len(duals), negatives.shape[1]), np.float32)
    own = np.empty((min(ENCODE_ROWS, len(duals)), negatives.shape[1]), np.float32)
    norm = np.empty(len(duals))
    for lo in range(0, len(duals), ENCODE_ROWS):  # in place, as `encode`
        w, block = weights[lo:lo + ENCODE_ROWS], slice(lo, lo + ENCODE_ROWS)
        np.matmul(duals[block, 1:].astype(np.float32), negatives, out=w)
        w += np.multiply(duals[block, :1].astype(np.float32), positives[block],
                         out=own[:len(w)], casting="same_kind")
        norm[block] = np.maximum(np.sqrt(np.einsum("wd,wd->w", w, w)), 1e-12)
        w /= norm[block, None].astype(np.float32)
    return weights, np.asarray(duals, np.float64).sum(axis=1) / norm


class Descriptor:
    """The training-free features a gallery stores beside embeddings, as one row that sums
    over a document's lines: the hinge's counts, then, for a model whose export fitted a
    codebook, the VLAD residual sums. Its name (`hinge-l10-b16` or
    `hinge-l10-b16+vlad-k128-d64-c5s8-...`) is what the gallery records."""

    def __init__(self, hinge: Hinge, vlad: Vlad | None = None):
        self.hinge, self.vlad = hinge, vlad

    @property
    def name(self) -> str:
        return self.hinge.name + (f"+{self.vlad.name}" if self.vlad else "")

    @property
    def size(self) -> int:
        return self.hinge.size + (self.vlad.size if self.vlad else 0)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        counts = self.hinge(image)
        return np.concatenate([counts, self.vlad(image)]) if self.vlad else counts

    def split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(hinge counts, VLAD sums or None) of rows [N, size] (or of a wider gallery's)."""
        rows = np.atleast_2d(rows)
        return rows[:, :self.hinge.size], (rows[:, self.hinge.size:self.size] if self.vlad
                                           else None)

    @staticmethod
    def hinge_of(name: str) -> Hinge:
        """The hinge a descriptor name holds."""
        return Hinge.parse(name.split("+")[0])

    @staticmethod
    def vlad_of(name: str) -> str | None:
        """The VLAD codebook a descriptor name holds, or None."""
        return next((part for part in name.split("+")[1:] if part.startswith("vlad-")), None)
