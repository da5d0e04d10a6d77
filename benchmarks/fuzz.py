"""Fuzz decoding, the forms parser and prediction (lines, pages): 10,000+ examples each.

    python benchmarks/fuzz.py [--examples 10000]

Prints how many examples ended in each outcome (a result, or which documented error) and
the examples per second; any other exception fails the run with hypothesis's minimal
failing input.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bind(check, counts):
    def run(data):
        check(data, counts)

    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=10_000)
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from hypothesis import HealthCheck, given, settings

    from tests import fuzzing

    opts = settings(max_examples=args.examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = fuzzing.fake_model(folder)
        targets = {
            "decode_gray": (fuzzing.image_bytes(),
                            lambda d, c: fuzzing.check_decode(d, c)),
            "parse_forms": (fuzzing.forms_files,
                            lambda d, c: fuzzing.check_parse(d, folder, c)),
            "predict": (fuzzing.image_bytes(),
                        lambda d, c: fuzzing.check_predict(model, d, folder, c)),
            "as a page": (fuzzing.image_bytes(),
                          lambda d, c: fuzzing.check_predict(model, d, folder, c, "page")),
        }
        for name, (strategy, check) in targets.items():
            counts: collections.Counter = collections.Counter()
            run = opts(given(strategy)(_bind(check, counts)))
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
            total = sum(counts.values())
            print(f"{name:<12} {total:>7,} examples in {seconds:6.1f} s "
                  f"({total / seconds:,.0f}/s): "
                  + ", ".join(f"{k} {v:,}" for k, v in counts.most_common()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
