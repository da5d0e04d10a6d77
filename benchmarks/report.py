"""The HTML report's cost: one page against a gallery of generated writers.

    python benchmarks/report.py [--writers 100] [--top-k 5] [--model MODEL]

Each generated writer is enrolled from one page of 6 lines, by the hinge, or with `--model`
(an export's .tflite) by the fused score, whose report also holds likelihood ratios in words
and a score plot; a page of another writer's is then identified with its report (`identify
--report`: the query drawn from the pixels read, the report written), and the seconds are
printed beside those of identifying it alone (the baseline, in the same process), with the
report's size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    sys.path.insert(0, str(REPO))
    import cv2

    from iam_writers_tfds import console, synth
    from models.runtime import Gallery, Identifier, Model, evidence, features_for
    from models.runtime.identify import enroll

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writers", type=int, default=100)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--model", type=Path, help="an export's .tflite (default: the hinge alone)")
    args = p.parse_args()
    console.quiet()
    model = Model(args.model) if args.model else None
    with tempfile.TemporaryDirectory() as tmp:
        folder, features = Path(tmp), features_for(model, None)
        for w in range(args.writers):
            rng = np.random.default_rng(w)
            style = synth.WriterStyle.sample(rng)
            cv2.imwrite(str(folder / f"w{w}.png"), synth.render_page(style, rng)[0])
            enroll(folder / "g", features, f"w{w:03d}", [folder / f"w{w}.png"])
            if w == 0:
                cv2.imwrite(str(folder / "query.png"), synth.render_page(style, rng)[0])
        identifier = Identifier(Gallery.open(folder / "g"), model)
        query = folder / "query.png"
        identifier.rank([query], args.top_k)  # warmed: the descriptor's threads, the model
        start = time.perf_counter()
        results = [identifier.rank([query], args.top_k)]
        ranked = time.perf_counter() - start
        start = time.perf_counter()  # as `identify --report`: the query drawn as it is read
        drawn: dict[str, bytes] = {}
        results = [identifier.rank([query], args.top_k, drawn)]
        report = evidence.identify_report(folder / "report.html", results, identifier, drawn)
        reported = time.perf_counter() - start
        print(f"one page ({results[0]['lines'][str(query)]} lines) against "
              f"{args.writers} writers, top {args.top_k}, by {identifier.score}"
              f"{' with likelihood ratios' if 'log10_lr' in results[0]['top'][0] else ''}: "
              f"identify {ranked:.2f} s; with its report {reported:.2f} s "
              f"({reported / ranked:.2f}x), {report.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
