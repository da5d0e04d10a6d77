"""The HTML report's cost: one page against a gallery of generated writers.

    python benchmarks/report.py [--writers 100] [--top-k 5]

Each generated writer is enrolled by the hinge from one page of 6 lines; a page of another
writer's is then identified, and the seconds of writing its report (`identify --report`)
are printed beside those of identifying it (the baseline, in the same process), with the
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

    from iam_writers_tfds import synth
    from models.runtime import Gallery, Identifier, evidence, features_for
    from models.runtime.identify import enroll

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writers", type=int, default=100)
    p.add_argument("--top-k", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, features = Path(tmp), features_for(None, "hinge")
        for w in range(args.writers):
            rng = np.random.default_rng(w)
            style = synth.WriterStyle.sample(rng)
            cv2.imwrite(str(folder / f"w{w}.png"), synth.render_page(style, rng)[0])
            enroll(folder / "g", features, f"w{w:03d}", [folder / f"w{w}.png"])
            if w == 0:
                cv2.imwrite(str(folder / "query.png"), synth.render_page(style, rng)[0])
        identifier = Identifier(Gallery.open(folder / "g"))
        start = time.perf_counter()
        results = [identifier.rank([folder / "query.png"], args.top_k)]
        ranked = time.perf_counter() - start
        start = time.perf_counter()
        report = evidence.identify_report(folder / "report.html", results, identifier, "auto")
        written = time.perf_counter() - start
        print(f"one page ({results[0]['lines'][str(folder / 'query.png')]} lines) against "
              f"{args.writers} writers, top {args.top_k}: identify {ranked:.2f} s; report "
              f"{written:.2f} s ({written / ranked:.1f}x), {report.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
