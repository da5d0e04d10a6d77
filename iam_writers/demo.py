"""`iam-writers demo`: the main job end to end, offline by default.

generate (synthetic only) -> build with TFDS -> train the default patch_cnn -> evaluate ->
export SavedModel + the four TFLite variants -> predict held-out images with int8 ->
demo_out/report.md and report.html. Completed steps are reused on a re-run (their outputs
are written atomically, so "complete" is reliable); --fresh starts over.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from iam_writers import report
from iam_writers.data import CONFIGS, BuildConfig, build
from iam_writers_tfds.configs import check_seed

STEPS = 6


@dataclasses.dataclass
class DemoConfig:
    config: str = "synthetic"
    manual_dir: Path | None = None
    out: Path = Path("demo_out")
    epochs: int = 0  # 0: 8 on synthetic data (the 10-minute budget), 20 on real data
    writers: int = 10  # synthetic writers, as in the notebooks
    layout: str = "kaggle"  # synthetic writers in the Kaggle or the official IAM layout
    fresh: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.manual_dir = Path(self.manual_dir) if self.manual_dir else None
        if self.config not in CONFIGS:
            raise ValueError(f"unknown config {self.config!r}; allowed: {', '.join(CONFIGS)}")
        if self.config != "synthetic" and self.manual_dir is None:
            raise ValueError(f"--config {self.config} needs --manual-dir DIR (the Kaggle layout)")
        if self.layout not in ("kaggle", "iam"):
            raise ValueError(f"unknown layout {self.layout!r}; allowed: kaggle, iam")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 1 (0: the default), got {self.epochs}")
        check_seed(self.seed)
        self.epochs = self.epochs or (8 if self.config == "synthetic" else 20)

    @property
    def dataset(self) -> str:
        """The builder config that reads the data: `iam` for generated IAM-layout data."""
        return "iam" if self.config == "synthetic" and self.layout == "iam" else self.config


def _step(n: int, text: str) -> float:
    print(f"\n[{n}/{STEPS}] {text}", flush=True)
    return time.perf_counter()


def split_files(config: str, data_dir: Path, folder: Path,
                split: str = "test") -> list[tuple[Path, str]]:
    """A split as PNG files in `folder` (written once, atomically), with their writer ids."""
    from iam_writers_tfds import atomic
    from pipelines import load_split, writer_names

    names = writer_names(config, data_dir)
    examples = list(load_split(config, split, data_dir).as_numpy_iterator())
    if not folder.is_dir():
        with atomic.replaced(folder, directory=True) as tmp:
            for ex in examples:
                (tmp / f"{ex['image_id'].decode()}.png").write_bytes(ex["image"])
    return [(folder / f"{ex['image_id'].decode()}.png", names[ex["writer"]]) for ex in examples]


def run(cfg: DemoConfig) -> Path:
    """Run every step into `cfg.out`; returns the HTML report's path."""
    if cfg.fresh and cfg.out.exists():
        shutil.rmtree(cfg.out)
    cfg.out.mkdir(parents=True, exist_ok=True)
    data_dir, run_dir, export_dir = (cfg.out / "tensorflow_datasets", cfg.out / "run",
                                     cfg.out / "export")
    timings = {}

    start = _step(1, "data")
    manual = cfg.manual_dir
    if cfg.config == "synthetic":
        from iam_writers_tfds import synth

        manual = cfg.out / ("synthetic" if cfg.layout == "kaggle" else "synthetic_iam")
        if not manual.is_dir():
            print(f"generating {cfg.writers} synthetic writers into {manual} ({cfg.layout} "
                  "layout)", flush=True)
            synth.generate(manual, synth.SynthConfig(writers=cfg.writers, seed=cfg.seed),
                           cfg.layout)
    timings["data"] = time.perf_counter() - start

    start = _step(2, f"building iam_writers_tfds/{cfg.dataset} with TFDS into {data_dir}")
    from iam_writers import data

    print(data.statistics(build(BuildConfig(cfg.dataset, manual, data_dir))), flush=True)
    timings["build"] = time.perf_counter() - start

    start = _step(3, f"training the default patch_cnn for {cfg.epochs} epochs into {run_dir}")
    if (run_dir / "metrics.json").is_file():
        print(f"{run_dir} is complete: reusing it (pass --fresh to retrain)")
    else:
        from models.config import TrainConfig
        from models.train import train

        shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted earlier attempt
        train(TrainConfig(config=cfg.dataset, data_dir=data_dir, out=run_dir, epochs=cfg.epochs,
                          seed=cfg.seed))
    timings["train"] = time.perf_counter() - start

    start = _step(4, "evaluation on the test split (training ends with it)")
    if (run_dir / "metrics.json").is_file():
        metrics = json.loads((run_dir / "metrics.json").read_text())
    else:
        from models.evaluate import evaluate

        metrics = evaluate(run_dir, "test")
    print(f"image top-1 {metrics['top1']:.3f}, top-5 {metrics['top5']:.3f}, form top-1 "
          f"{metrics['form_top1']:.3f}", flush=True)
    timings["evaluate"] = time.perf_counter() - start

    start = _step(5, f"exporting SavedModel + TFLite float32, float16, dynamic and int8 into "
                     f"{export_dir}")
    if (export_dir / "model_card.json").is_file():
        print(f"{export_dir} is complete: reusing it (pass --fresh to export again)")
    else:
        from models.export import ExportConfig, export

        export(ExportConfig(run_dir, export_dir))
    card = json.loads((export_dir / "model_card.json").read_text())
    timings["export"] = time.perf_counter() - start

    start = _step(6, "predicting held-out test images with the int8 TFLite model")
    from models.runtime import Model

    model = Model(export_dir / "model_int8.tflite")
    predictions = []
    for path, writer in split_files(cfg.dataset, data_dir, cfg.out / "heldout"):
        top = model.predict(path, 3)["top"]
        predictions.append({"image": path.name, "writer": writer, "top": top})
    accuracy = sum(p["top"][0]["writer"] == p["writer"] for p in predictions) / len(predictions)
    print(f"int8 TFLite: {accuracy:.3f} of {len(predictions)} held-out images named right")
    timings["predict"] = time.perf_counter() - start

    html = report.write(cfg, metrics, card, predictions, accuracy, timings)
    print(f"\nreport: {html} and {html.with_suffix('.md')}; total "
          f"{sum(timings.values()) / 60:.1f} min")
    return html
