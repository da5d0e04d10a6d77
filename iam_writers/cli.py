"""`iam-writers`: one command line over the builder, pipelines, models, tuning and export.

Each sub-command fills a configuration dataclass from its flags and calls into the
packages; heavy imports (TensorFlow) happen only inside the sub-command that needs them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _synth(args: argparse.Namespace) -> None:
    from iam_writers_tfds import synth

    cfg = synth.SynthConfig(args.writers, args.forms_per_writer, args.lines_per_form, args.seed)
    out = synth.generate(args.out, cfg)
    print(f"wrote {cfg.writers * cfg.forms_per_writer * cfg.lines_per_form} images of "
          f"{cfg.writers} writers to {out} (Kaggle layout)")


def _build(args: argparse.Namespace) -> None:
    from iam_writers import data

    b = data.build(data.BuildConfig(args.config, args.manual_dir, args.data_dir))
    print(data.statistics(b))


def _train(args: argparse.Namespace) -> None:
    from models.config import TrainConfig
    from models.train import train

    cfg = TrainConfig(**_fields(args, TrainConfig))
    run = train(cfg)
    print(f"run directory: {run}")
    _print_metrics(run / "metrics.json")


def _evaluate(args: argparse.Namespace) -> None:
    from models.evaluate import evaluate

    evaluate(args.run, args.split)
    _print_metrics(args.run / f"metrics_{args.split}.json")


def _print_metrics(path: Path) -> None:
    import json

    m = json.loads(path.read_text())
    print(f"{m['split']}: image top-1 {m['top1']:.3f}  top-5 {m['top5']:.3f}  "
          f"form top-1 {m['form_top1']:.3f}  ({m['n_images']} images, {m['n_forms']} forms, "
          f"{m['n_writers']} writers)")
    if "roc_auc" in m.get("verification", {}):
        v = m["verification"]
        print(f"verification: ROC-AUC {v['roc_auc']:.3f}  EER {v['eer']:.3f}  "
              f"TAR@FAR=1% {v['tar_at_far_1pct']:.3f}")
    print(f"metrics: {path}; plots: {path.parent / 'plots'}")


def _add_fields(p: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One flag per dataclass field: the dataclass is the single source of defaults."""
    import dataclasses

    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif f.name in ("out", "data_dir"):
            p.add_argument(flag, type=Path, default=f.default)
        elif f.default is None:
            p.add_argument(flag, type=float, default=None)
        else:
            p.add_argument(flag, type=type(f.default), default=f.default)


def _fields(args: argparse.Namespace, cls) -> dict:
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def _demo(args: argparse.Namespace) -> None:
    from iam_writers import data

    out = Path(args.out)
    b = data.build(data.BuildConfig(args.config, args.manual_dir, out / "tensorflow_datasets"))
    print(data.statistics(b))


def parser() -> argparse.ArgumentParser:
    from iam_writers.data import CONFIGS

    p = argparse.ArgumentParser(prog="iam-writers", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic dataset in the Kaggle layout")
    s.add_argument("--out", type=Path, required=True, help="new folder to create")
    s.add_argument("--writers", type=int, default=10)
    s.add_argument("--forms-per-writer", type=int, default=6)
    s.add_argument("--lines-per-form", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synth)

    s = sub.add_parser("build", help="build the TFDS dataset and print its statistics")
    s.add_argument("--config", choices=CONFIGS, default="synthetic")
    s.add_argument("--manual-dir", type=Path, help="Kaggle layout, extracted or as the zip")
    s.add_argument("--data-dir", type=Path, help="TFDS data dir (default ~/tensorflow_datasets)")
    s.set_defaults(func=_build)

    from models.config import BACKBONES, MODELS, TrainConfig

    s = sub.add_parser("train", help="train a model into runs/NAME and evaluate it")
    s.add_argument("--model", choices=MODELS, default="patch_cnn")
    s.add_argument("--config", choices=CONFIGS, default="synthetic")
    s.add_argument("--backbone", choices=BACKBONES, default="resnet50")
    s.add_argument("--weights", default="imagenet",
                   help="imagenet | none | PATH of a weights file (ResNet50-style models)")
    _add_fields(s, TrainConfig, skip=("model", "config", "backbone", "weights"))
    s.set_defaults(func=_train)

    s = sub.add_parser("evaluate", help="metrics.json and plots for a run directory")
    s.add_argument("run", type=Path)
    s.add_argument("--split", choices=("train", "validation", "test"), default="test")
    s.set_defaults(func=_evaluate)

    s = sub.add_parser("demo", help="the main job, offline by default")
    s.add_argument("--config", choices=CONFIGS, default="synthetic")
    s.add_argument("--manual-dir", type=Path)
    s.add_argument("--out", type=Path, default=Path("demo_out"))
    s.set_defaults(func=_demo)
    return p


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input: reported as one line, no traceback, exit status 2."""
    from iam_writers_tfds import images, kaggle_layout

    errors = (kaggle_layout.LayoutError, images.ImageError, FileNotFoundError, FileExistsError)
    if "models.zoo" in sys.modules:
        errors += (sys.modules["models.zoo"].WeightsError,)
    return errors


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except user_errors() as err:
        print(f"iam-writers {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0
