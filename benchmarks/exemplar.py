"""What the exemplar SVMs add to opening a gallery for `identify`, by its number of writers.

    python benchmarks/exemplar.py [--writers 100 1000 10000] [--cohort 46] [--seed 0]

`identify` against a model whose card says `exemplar` scores each enrolled writer by an SVM
against the cohort. Enrolment solves it (`runtime.descriptors.exemplar_duals`) and stores
its dual multipliers in the gallery, so opening a gallery only turns them into weights
(`exemplar_weights`); a gallery enrolled before solves them all. Synthetic VLAD residual
sums of the runtime's size (`VLAD_CENTRES` centres of 64 dimensions), each writer a shared
hand plus its own, the cohort the export's size. For each size it prints the time to
encode the writers' VLAD vectors (what opening a gallery cost before the SVMs: the
baseline, in this process), to solve their SVMs (in batches of `EXEMPLAR_BATCH` writers)
and to weigh the stored ones, each as a ratio to encoding, and checks that the stored ones
give the solved weights and that each SVM puts its writer on the positive side and the
cohort on the negative.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.runtime.descriptors import (  # noqa: E402
    VLAD_CENTRES,
    Vlad,
    exemplar_duals,
    exemplar_weights,
)

DIMS = 64


def sums(rng: np.random.Generator, n: int, common: np.ndarray) -> np.ndarray:
    """Residual sums [n, K * D] of n writers who share a hand (`common`) and add their own."""
    return (common + rng.normal(0, 1.0, (n, common.size))).astype(np.float32)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writers", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--cohort", type=int, default=46, help="the export's cohort: its negatives")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    vlad = Vlad(np.zeros(128, np.float32), np.eye(128, DIMS, dtype=np.float32),
                rng.normal(size=(VLAD_CENTRES, DIMS)).astype(np.float32))
    common = rng.normal(0, 1.5, VLAD_CENTRES * DIMS)
    negatives = vlad.encode(sums(rng, args.cohort, common))
    print(f"{'writers':>8} {'encode (s)':>11} {'solve SVMs (s)':>15} {'ratio':>7}"
          f" {'stored SVMs (s)':>16} {'ratio':>7} {'solve ms / writer':>18}")
    for n in args.writers:
        gallery = sums(rng, n, common)
        start = time.perf_counter()
        encoded = vlad.encode(gallery)
        encode = time.perf_counter() - start
        start = time.perf_counter()
        duals = exemplar_duals(encoded, negatives)
        weights, bias = exemplar_weights(encoded, negatives, duals)
        solve = time.perf_counter() - start
        start = time.perf_counter()
        stored = exemplar_weights(encoded, negatives, duals)
        weigh = time.perf_counter() - start
        np.testing.assert_array_equal(stored[0], weights)
        # each SVM puts its writer on the positive side and the cohort on the negative
        own = np.einsum("wd,wd->w", encoded, weights) + bias
        assert (own > 0).all() and ((negatives @ weights.T + bias) < 0).all()
        print(f"{n:>8} {encode:>11.3f} {solve:>15.3f} {solve / encode:>6.1f}x"
              f" {weigh:>16.3f} {weigh / encode:>6.1f}x {1000 * solve / n:>18.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
