"""Export benchmark: size, latency and top-1 agreement of every TFLite variant vs Keras.

    python benchmarks/export.py [RUN] [--stride PX] [--threads 2]

RUN is a run directory from `iam-writers train` (default: demo_out/run from `make demo`).
It is exported to a temporary folder; the parity report of that export (the test split,
LiteRT with --threads threads) is printed with ratios against the Keras model and the
float32 file, then the goals: int8 at most 30% of float32's size, at least 99% top-1
agreement, and the default model under 10 ms per text line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]


def _preprocess_ms(model, images) -> float:
    """Median time of preprocessing alone (normalise + windows), to split the latency."""
    import numpy as np

    times = []
    for img in images:
        start = time.perf_counter()
        model.inputs(img)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, nargs="?", default=REPO / "demo_out" / "run")
    p.add_argument("--stride", type=int, default=0, help="inference window stride (0: run's)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if not (args.run / "model.keras").is_file():
        p.error(f"{args.run}: no trained run. Run `make demo` first or pass a run directory.")
    sys.path.insert(0, str(REPO))
    from iam_writers_tfds.images import decode_gray
    from models import runtime
    from models.export import ExportConfig, export
    from pipelines import load_split

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export"
        card = export(ExportConfig(args.run, out, stride=args.stride, threads=args.threads))
        rows = {r["variant"]: r for r in card["parity"]}
        cfg = card["train_config"]
        raw = load_split(cfg["config"], "test", cfg["data_dir"]).take(50).as_numpy_iterator()
        images = [decode_gray(ex["image"]) for ex in raw]
        pre = _preprocess_ms(runtime.Model(out / "model_float32.tflite", args.threads), images)

    keras, fp32 = rows["keras"], rows["float32"]
    print(f"\n{card['model']} on {cfg['config']} test ({keras['n_images']} lines), "
          f"stride {card['input']['stride']} px, LiteRT {args.threads} threads")
    print(f"{'variant':<9}{'size KiB':>10}{'vs fp32':>9}{'ms/line':>9}{'vs Keras':>10}"
          f"{'agreement':>11}{'accuracy':>10}{'max dp':>9}")
    for name, r in rows.items():
        size = r["size_bytes"]
        print(f"{name:<9}{size / 1024 if size else float('nan'):>10.0f}"
              f"{size / fp32['size_bytes'] if size else float('nan'):>9.2f}"
              f"{r['median_ms_per_image']:>9.1f}"
              f"{keras['median_ms_per_image'] / r['median_ms_per_image']:>9.1f}x"
              f"{r['top1_agreement']:>11.3f}{r['accuracy']:>10.3f}{r['max_abs_prob_diff']:>9.4f}")
    print(f"preprocessing alone (normalise + windows): {pre:.1f} ms per line")
    int8 = rows.get("int8")
    goals = [
        ("int8 size <= 30% of float32", int8["size_bytes"] / fp32["size_bytes"] <= 0.30),
        ("top-1 agreement >= 99% (every variant)",
         min(r["top1_agreement"] for r in rows.values()) >= 0.99),
        ("default model < 10 ms per line (int8)", int8["median_ms_per_image"] < 10),
    ]
    for text, ok in goals:
        print(f"goal {'met    ' if ok else 'NOT met'}: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
