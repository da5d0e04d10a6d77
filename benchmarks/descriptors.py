"""Classical descriptors: cost per line and identification of writers they never saw.

    python benchmarks/descriptors.py DIR [--known 40] [--seed 0] [--lines 300]

DIR is a Kaggle-layout folder. Parameters are chosen on the *known* writers of
benchmarks/open_set.py's seeded split (the writers a model would train on), so the unseen
writers that open_set.py reports stay untouched. For each contour-hinge setting: ms per
line (against decoding the PNG alone, in the same process), line and form top-1 with one
form of each known writer enrolled and the lines of their other forms identified, and the
equal-error thresholds on 1 - chi-square between a query's own writer and the best other
writer, for lines and for forms as documents (the runtime's default thresholds for
galleries built without a model).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GRID = ((6, 12), (8, 16), (10, 12), (10, 16), (10, 24), (12, 16), (14, 16), (12, 24))


def per_line_ms(fn, images: list) -> float:
    start = time.perf_counter()
    for image in images:
        fn(image)
    return (time.perf_counter() - start) / len(images) * 1000


def main() -> int:
    sys.path.insert(0, str(REPO))
    from open_set import enrolment, split_writers

    from iam_writers_tfds import kaggle_layout
    from iam_writers_tfds.images import read_gray
    from models import runtime
    from models.evaluate import open_set_figures, topk_accuracy
    from models.runtime.descriptors import Hinge

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--known", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lines", type=int, default=300, help="lines timed per setting")
    args = p.parse_args()
    root = kaggle_layout.find_root(args.dir)
    if root is None:
        p.error(f"{args.dir}: no forms_for_parsing.txt there or one level below")
    records, _ = kaggle_layout.scan(root)
    known, _ = split_writers(sorted({r.writer_id for r in records}), args.known, args.seed)
    records = [r for r in records if r.writer_id in set(known)]
    images = [read_gray(r.path) for r in records]
    enrolled, probe = enrolment(records, args.seed)
    writers = sorted(enrolled)
    label = np.array([writers.index(records[i].writer_id) for i in probe])
    forms = np.array([records[i].form_id for i in probe])
    form_ids = sorted(set(forms))
    form_label = np.array([label[forms == f][0] for f in form_ids])
    timed = images[: args.lines]
    decode_ms = per_line_ms(read_gray, [r.path for r in records[: args.lines]])
    print(f"{len(writers)} known writers of {args.dir}: one form each enrolled, {len(probe)} "
          f"lines / {len(form_ids)} forms identified; decoding a line: {decode_ms:.2f} ms")
    print(f"{'descriptor':<15}{'ms/line':>8}{'vs decode':>10}{'line top-1':>11}{'form top-1':>11}"
          f"{'EER':>7}{'threshold':>10}{'form EER':>9}{'threshold':>10}")
    for leg, bins in GRID:
        hinge = Hinge(leg, bins)
        ms = per_line_ms(hinge, timed)
        counts = np.stack([hinge(im) for im in images])
        sums = np.stack([counts[enrolled[w]].sum(0) for w in writers])
        sims = runtime.hinge_similarity(counts[probe], sums)
        form_sims = runtime.hinge_similarity(
            np.stack([counts[probe][forms == f].sum(0) for f in form_ids]), sums)
        present = np.arange(len(writers))
        line = open_set_figures(sims, label, present)
        form = open_set_figures(form_sims, form_label, present)
        print(f"{hinge.name:<15}{ms:>8.2f}{ms / decode_ms:>9.1f}x"
              f"{topk_accuracy(sims, label, 1):>11.3f}"
              f"{topk_accuracy(form_sims, form_label, 1):>11.3f}{line['eer']:>7.3f}"
              f"{line['eer_threshold']:>10.4f}{form['eer']:>9.3f}{form['eer_threshold']:>10.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
