"""GPU check: the default recipe and the ResNet50 classifier, a few epochs each.

    python benchmarks/gpu_check.py [--epochs 3] [--writers 20] [--data-dir D]

For a machine with a GPU (install with `pip install -e '.[train,gpu]'`). Generates
synthetic writers (or uses an already built `--data-dir`), then for `patch_cnn` and
`resnet50_classifier` (weights none, so that no download is needed) trains under the
strategy and precision policy `iam-writers train` picks (mixed_float16 on a GPU) and prints
the devices used and the training samples per second of the epochs after the first (which
pays for tracing), with the ratio to the same model pinned to the CPU in float32, in the
same process. A script, not a test: the suite runs where no GPU is.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]


def throughput(cfg, epochs: int, device: str | None) -> tuple[float, str]:
    """(training samples per second after the first epoch, precision policy) of `cfg`: as
    `iam-writers train` runs it (device None), or pinned to `device` in float32."""
    import keras
    import tensorflow as tf

    from models.train import choose_strategy, compiled_model, datasets
    from pipelines import writer_names

    gpu = device is None and bool(tf.config.list_physical_devices("GPU"))
    keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "float32")
    train_ds, _ = datasets(cfg)
    samples = sum(int(x.shape[0]) for x, _ in train_ds)  # one epoch, counted once
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    with tf.device(device) if device else choose_strategy().scope():
        model, _ = compiled_model(cfg, len(writer_names(cfg.config, cfg.data_dir)))
        model.fit(train_ds, epochs=epochs, callbacks=[Clock()], verbose=0)
    steady = times[1:] or times
    return samples * len(steady) / sum(steady), keras.mixed_precision.global_policy().name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--writers", type=int, default=20)
    p.add_argument("--data-dir", type=Path, help="a built top50 dataset (default: generated)")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    import tensorflow as tf

    from iam_writers import data
    from iam_writers_tfds import synth
    from models.config import TrainConfig

    print("TensorFlow", tf.__version__, "| devices:",
          ", ".join(f"{d.name} ({d.device_type})" for d in tf.config.list_logical_devices()))
    for gpu in tf.config.list_physical_devices("GPU"):
        print("  ", gpu.name, tf.config.experimental.get_device_details(gpu).get("device_name"))
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = Path(tmp) / "tfds"
            layout = synth.generate(Path(tmp) / "synth", synth.SynthConfig(writers=args.writers))
            data.build(data.BuildConfig("top50", layout, data_dir))
        recipes = {
            "patch_cnn (default)": TrainConfig(model="patch_cnn", config="top50",
                                               data_dir=data_dir, out=Path(tmp) / "a"),
            "resnet50_classifier": TrainConfig(model="resnet50_classifier", config="top50",
                                               data_dir=data_dir, out=Path(tmp) / "b",
                                               weights="none", batch_size=64),
        }
        print(f"\n{'recipe':<22}{'samples/s':>11}{'policy':>16}{'CPU float32':>13}{'ratio':>8}"
              f"   ({args.epochs} epochs, the first not timed; CPU: 2)")
        for name, cfg in recipes.items():
            rate, policy = throughput(dataclasses.replace(cfg, epochs=args.epochs),
                                      args.epochs, None)
            cpu, _ = throughput(dataclasses.replace(cfg, epochs=2), 2, "/CPU:0")
            print(f"{name:<22}{rate:>11.0f}{policy:>16}{cpu:>13.0f}{rate / cpu:>7.1f}x",
                  flush=True)
        print("samples: 64-px patches for patch_cnn, 224-px images for resnet50_classifier")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
