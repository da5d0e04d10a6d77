"""Writer-identification accuracy of the default recipe and the notebooks' squash recipe.

    python benchmarks/accuracy.py DIR [--epochs N] [--squash-epochs 2] [--config top50]

DIR is any Kaggle-layout folder (or zip), or with `--config iam` a folder in the official
IAM layout. It is built form-disjoint, then:
  * default: patch_cnn on 64-px patches of lines at one scale (a 128-row band of the scan
    around each line's ink), per-line and per-form aggregation of patch log-probabilities;
  * squash: the notebooks' whole-image squash to 128x128 with ResNet50, weights none.
Prints line top-1/top-5, form top-1 and training minutes for both.
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


def run(name: str, cfg) -> dict:
    from models.train import train

    start = time.perf_counter()
    train(cfg)
    minutes = (time.perf_counter() - start) / 60
    import json

    m = json.loads((cfg.out / "metrics.json").read_text())
    m["minutes"] = minutes
    print(f"{name:<28} line top-1 {m['top1']:.3f}  top-5 {m['top5']:.3f}  "
          f"form top-1 {m['form_top1']:.3f}  {m['n_images']} lines / {m['n_forms']} forms / "
          f"{m['n_writers']} writers  {minutes:.1f} min", flush=True)
    return m


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--config", default="top50", choices=("top50", "top10", "iam", "iam_ok"))
    p.add_argument("--epochs", type=int, help="default recipe (default: TrainConfig's)")
    p.add_argument("--learning-rate", type=float, help="default recipe (default: TrainConfig's)")
    p.add_argument("--squash-epochs", type=int, default=2, help="0 skips the squash recipe")
    p.add_argument("--skip-default", action="store_true", help="run the squash recipe only")
    p.add_argument("--out", type=Path, help="keep the runs here (default: a temp folder)")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from iam_writers import data
    from models.config import TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        data_dir = out / "tfds"
        data.build(data.BuildConfig(args.config, args.dir, data_dir))
        results = {}
        if not args.skip_default:
            given = {k: v for k, v in (("learning_rate", args.learning_rate),
                                       ("epochs", args.epochs)) if v}
            cfg = TrainConfig(model="patch_cnn", config=args.config, data_dir=data_dir,
                              out=out / "patch_cnn", **given)
            cfg.patience = max(6, cfg.epochs // 4)
            results["default patch_cnn"] = run("default patch_cnn", cfg)
        if args.squash_epochs:
            results["squash-128 resnet50"] = run("squash-128 resnet50 (none)", TrainConfig(
                model="resnet50_classifier", config=args.config, data_dir=data_dir,
                out=out / "squash", weights="none", image_size=128, batch_size=32,
                epochs=args.squash_epochs, learning_rate=1e-3))
        print("\nrecipe                       line top-1  line top-5  form top-1  minutes")
        for name, m in results.items():
            print(f"{name:<28} {m['top1']:10.3f}  {m['top5']:10.3f}  {m['form_top1']:10.3f}"
                  f"  {m['minutes']:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
