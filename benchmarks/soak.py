"""Soak: 10,000 predictions through the TF-free TFLite runtime, with resident memory.

    python benchmarks/soak.py [MODEL.tflite] [IMAGES_DIR] [--predictions 10000]

Defaults to `make demo`'s int8 model and held-out images. TensorFlow is blocked from
importing, as on an edge device. Prints resident memory after a warm-up and at the end;
the goal is flat memory, within 10%.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ImportError(f"{name} is blocked: the edge runtime must not need it")


def rss_mib() -> float:
    """Resident set size of this process now (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, nargs="?",
                   default=REPO / "demo_out" / "export" / "model_int8.tflite")
    p.add_argument("images", type=Path, nargs="?", default=REPO / "demo_out" / "heldout")
    p.add_argument("--predictions", type=int, default=10_000)
    p.add_argument("--warmup", type=int, default=200)
    args = p.parse_args()
    if not args.model.is_file() or not args.images.is_dir():
        p.error("no model or images: run `make demo` first, or pass MODEL.tflite IMAGES_DIR")
    sys.meta_path.insert(0, _NoTensorFlow())
    sys.path.insert(0, str(REPO))
    from models.runtime import Model

    images = sorted(args.images.glob("*.png"))
    model = Model(args.model)
    for i in range(args.warmup):
        model.predict(images[i % len(images)])
    start_rss, start = rss_mib(), time.perf_counter()
    samples = []
    for i in range(args.predictions):
        model.predict(images[i % len(images)])
        if (i + 1) % max(1, args.predictions // 10) == 0:
            samples.append(rss_mib())
    seconds = time.perf_counter() - start
    end_rss = rss_mib()
    growth = (end_rss - start_rss) / start_rss
    assert "tensorflow" not in sys.modules
    print(f"{args.predictions:,} predictions of {len(images)} images with {args.model.name} "
          f"in {seconds:.0f} s ({args.predictions / seconds:.0f}/s, TensorFlow not imported)")
    print("resident MiB every 10%: " + " ".join(f"{s:.1f}" for s in samples))
    print(f"resident memory: {start_rss:.1f} MiB after warm-up, {end_rss:.1f} MiB at the end "
          f"({growth:+.1%}); goal within 10%: {'met' if abs(growth) <= 0.10 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
