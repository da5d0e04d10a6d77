"""Describing many lines on a pool of threads (`descriptors.each`) against one at a time.

    python benchmarks/threads.py [DIR] [--lines 120] [--pages FORMS_DIR] [--seed 0]

DIR is a Kaggle-layout folder of lines (e.g. ../shared/data/iam_dev_lines); without it,
lines are generated. A RootSIFT + VLAD codebook (64 centres, 64 dimensions) is fitted on
the first half of the lines, then the contour-hinge + VLAD row of every line is computed
one line at a time and on one thread per core, in the same process.
`runtime.Features` (what `enroll` and `identify` read images with) is timed on the same
lines given one call each, as it described each image's lines apart before, against one
call for all of them, which streams every image's lines through one pool.
With `--pages`, the first five page scans of FORMS_DIR are also described as documents
(`iam-writers identify`'s path for a page: lines found, then described), both ways.
Prints seconds, ms a line or a page, and the ratio to the serial run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def lines_of(folder: Path | None, n: int, seed: int) -> list[np.ndarray]:
    """`n` grey lines: a seeded choice from a Kaggle-layout folder, or generated."""
    from iam_writers_tfds import kaggle_layout, synth
    from iam_writers_tfds.images import read_gray

    rng = np.random.default_rng(seed)
    if folder is None:
        styles = [synth.WriterStyle.sample(rng) for _ in range(10)]
        return [synth.render_line(styles[i % 10], rng) for i in range(n)]
    root = kaggle_layout.find_root(folder)
    if root is None:
        sys.exit(f"{folder}: no forms_for_parsing.txt there or one level below")
    records, _ = kaggle_layout.scan(root)
    chosen = rng.choice(len(records), min(n, len(records)), replace=False)
    return [read_gray(records[i].path) for i in chosen]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> int:
    sys.path.insert(0, str(REPO))
    from models.runtime import Features, Model
    from models.runtime.descriptors import Descriptor, Hinge, Vlad, each

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, nargs="?")
    p.add_argument("--lines", type=int, default=120)
    p.add_argument("--pages", type=Path, help="a folder of page scans <form-id>.png")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    lines = lines_of(args.dir, args.lines, args.seed)
    threads = os.cpu_count() or 1
    print(f"{len(lines)} lines; {threads} threads against 1", flush=True)
    rows = []

    def compare(what: str, unit: str, n: int, serial, threaded) -> None:
        one, a = timed(serial)
        many, b = timed(threaded)
        # alike to float32 rounding: BLAS sums in another order on one thread than on two
        same = all(np.allclose(x, y, rtol=1e-5, atol=1e-5) for x, y in zip(a, b))
        rows.append((what, one, many, n, unit, same))

    describe = Descriptor(Hinge(), Vlad.fit(lines[:len(lines) // 2], seed=args.seed))
    compare("hinge + VLAD rows", "line", len(lines),
            lambda: list(each(describe, lines, threads=1)),
            lambda: list(each(describe, lines)))
    features = Features(None, describe, "line")
    compare("lines read by `runtime.Features`", "line", len(lines),
            lambda: [features([line])[1][0] for line in lines],
            lambda: list(features(lines)[1]))
    if args.pages:
        pages = sorted(args.pages.glob("*.png"))[:5]
        parts = [Model.parts(page, str(page), "page")[0] for page in pages]
        compare("a page's lines, as one document", "page", len(pages),
                lambda: [np.sum(list(each(describe, ls, threads=1)), axis=0) for ls in parts],
                lambda: [np.sum(list(each(describe, ls)), axis=0) for ls in parts])
    print("| work | serial s | threaded s | ms / item serial | ms / item threaded | ratio | "
          "same to 1e-5 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for what, one, many, n, unit, same in rows:
        print(f"| {what} | {one:.2f} | {many:.2f} | {one / n * 1000:.0f} / {unit} | "
              f"{many / n * 1000:.0f} / {unit} | {one / many:.2f}x | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
