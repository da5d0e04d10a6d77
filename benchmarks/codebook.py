"""The RootSIFT + VLAD codebook's sample: places chosen before describing them, against
describing every place and then choosing (how export fitted it before), in one process.

    python benchmarks/codebook.py LINES_DIR [--lines 400] [--seed 0]

LINES_DIR holds line images (PNG, searched recursively; for example
../shared/data/iam_dev_lines). For each of the codebook's views it prints the seconds of
both ways, their ratio and whether the two samples are the same descriptors in the same
order (so the same codebook); the PCA-whitening of that sample by the SVD of the centred
descriptors (how export fitted it before) and by `Vlad.whitening` (the eigenvectors of their
covariance), with the largest difference of their projections (each column's sign aside,
which either may flip); then one whole `Vlad.fit` (both views, k-means included).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIMS = 64  # `Vlad.fit`'s PCA dimensions


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lines", type=Path)
    p.add_argument("--lines", dest="n", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from iam_writers_tfds.images import read_gray
    from models.runtime.descriptors import (
        CONTOUR_STEP,
        KEYPOINT_SIZE,
        VLAD_SAMPLES,
        VLAD_UPRIGHT,
        VLAD_VIEWS,
        Vlad,
        each,
        rootsift,
        viewed,
    )

    files = sorted(args.lines.rglob("*.png"))
    if not files:
        p.error(f"{args.lines}: no PNG line images")
    chosen = np.random.default_rng(args.seed).choice(len(files), min(args.n, len(files)),
                                                     replace=False)
    lines = [read_gray(files[i]) for i in chosen]
    samples = VLAD_SAMPLES
    print(f"{len(lines)} lines of {args.lines}, a sample of {samples:,} descriptors a view")
    for width in VLAD_VIEWS:
        start = time.perf_counter()
        every = np.concatenate(list(each(lambda line, w=width: rootsift(
            viewed(line, w, VLAD_UPRIGHT), CONTOUR_STEP, KEYPOINT_SIZE), lines)))
        before = every[np.random.default_rng(args.seed).choice(
            len(every), samples, replace=False)] if len(every) > samples else every
        old = time.perf_counter() - start
        start = time.perf_counter()
        after = Vlad._sample(lines, width, VLAD_UPRIGHT, CONTOUR_STEP, KEYPOINT_SIZE, samples,
                             args.seed)
        new = time.perf_counter() - start
        print(f"view {width:g}: {len(every):,} places; describe all then choose {old:.1f} s, "
              f"choose then describe {new:.1f} s ({old / new:.2f}x); same descriptors: "
              f"{before.shape == after.shape and np.array_equal(before, after)}")
        start = time.perf_counter()
        _, s, vt = np.linalg.svd(after - after.mean(axis=0), full_matrices=False)
        by_svd = vt[:DIMS].T / np.maximum(s[:DIMS] / np.sqrt(len(after)), 1e-6)
        old = time.perf_counter() - start
        start = time.perf_counter()
        _, by_eigh = Vlad.whitening(after, DIMS)
        new = time.perf_counter() - start
        scale = np.abs(by_svd).max()
        print(f"  whitening: SVD {old:.2f} s, covariance {new:.2f} s ({old / new:.1f}x); "
              f"largest difference {np.abs(np.abs(by_svd) - np.abs(by_eigh)).max() / scale:.1e}"
              " of the largest entry")
    start = time.perf_counter()
    Vlad.fit(lines, seed=args.seed)
    print(f"Vlad.fit, both views with k-means: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
