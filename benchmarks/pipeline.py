"""Input pipeline throughput against the notebooks' loader, in one process.

    python benchmarks/pipeline.py [--images 1000] [--dev ../shared/data/iam_dev_lines]

Prints images/s for (a) the notebooks' Python loop (cv2.imread, cvtColor, resize into a
NumPy array), (b) this pipeline's cold first epoch, (c) its warm epochs from cache, the
ratios, and the default training step's images/s, which the pipeline must outrun.
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
DEV = REPO.parent / "shared" / "data" / "iam_dev_lines"


def notebook_loader(root: Path, size: int = 224) -> float:
    """(a) The notebooks' approach; returns images/s."""
    import cv2
    import numpy as np

    from iam_writers_tfds import kaggle_layout

    records, _ = kaggle_layout.scan(root)
    start = time.perf_counter()
    batch = []
    for r in records:
        img = cv2.imread(str(r.path))
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        batch.append(cv2.resize(img, (size, size)))
    np.array(batch)
    return len(records) / (time.perf_counter() - start)


def pipeline_rates(data_dir: Path, config: str,
                   model: str = "patch_cnn") -> tuple[float, float, int]:
    """(b) cold and (c) warm images/s of `model`'s training pipeline; and image count."""
    from models.config import TrainConfig
    from pipelines import load_split, train_dataset

    pcfg = TrainConfig(model=model).pipeline_config()
    raw = load_split(config, "train", data_dir)
    n = sum(1 for _ in raw)
    ds = train_dataset(raw, pcfg)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in ds:
            pass
        rates.append(n / (time.perf_counter() - start))
    return rates[0], max(rates[1:]), n


def training_step_rate(num_classes: int, steps: int = 15) -> float:
    """Images/s of the default patch_cnn training step (patches/s / patches per image)."""
    import keras
    import numpy as np

    from models import zoo
    from models.config import TrainConfig

    cfg = TrainConfig()
    model = zoo.patch_cnn((cfg.patch_size, cfg.patch_size, 1), num_classes, cfg.width)
    model.compile(keras.optimizers.Adam(cfg.learning_rate), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((cfg.batch_size, cfg.patch_size, cfg.patch_size, 1),
                                        dtype=np.float32)
    y = np.arange(cfg.batch_size) % num_classes
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    patches = steps * cfg.batch_size / (time.perf_counter() - start)
    return patches / cfg.patches_per_image


def report(name: str, root: Path, data_dir: Path, config: str) -> None:
    from iam_writers import data

    data.build(data.BuildConfig(config, root, data_dir))
    a = notebook_loader(root)
    b, c, n = pipeline_rates(data_dir, config)
    from pipelines import writer_names

    step = training_step_rate(len(writer_names(config, data_dir)))
    print(f"\n== {name}: {n} training images ==")
    print(f"(a) notebook loop (cv2 imread+cvtColor+resize) {a:9.1f} images/s")
    print(f"(b) pipeline, cold first epoch                 {b:9.1f} images/s  {b / a:6.1f}x (a)")
    print(f"(c) pipeline, warm from cache                  {c:9.1f} images/s  {c / a:6.1f}x (a)")
    print(f"    default training step (patch_cnn)          {step:9.1f} images/s  "
          f"pipeline warm/step {c / step:5.1f}x")
    print(f"goals: (b) >= 2x (a): {'met' if b >= 2 * a else 'NOT met'}; (c) >= 20x (a): "
          f"{'met' if c >= 20 * a else 'NOT met'}; pipeline faster than the step: "
          f"{'yes' if c > step else 'NO'}")
    b, c, _ = pipeline_rates(data_dir, config, "resnet50_classifier")
    print(f"the same work as (a) through the pipeline's `resize` mode (224 px, ResNet50 "
          f"preprocessing): cold {b:.1f} images/s ({b / a:.1f}x), warm {c:.1f} ({c / a:.1f}x)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000, help="generated images (>= 1000)")
    p.add_argument("--dev", type=Path, default=DEV, help="a Kaggle-layout folder, if present")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from iam_writers_tfds import synth

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        forms = max(1, -(-args.images // (10 * 10)))
        root = synth.generate(tmp / "synthetic", synth.SynthConfig(10, forms, 10, seed=1))
        report("generated data", root, tmp / "tfds_synth", "top50")
        if (args.dev / "forms_for_parsing.txt").is_file():
            report(f"development lines ({args.dev})", args.dev, tmp / "tfds_dev", "top50")
        else:
            print(f"\n(development lines not found at {args.dev}; skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
