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

    s = sub.add_parser("demo", help="the main job, offline by default")
    s.add_argument("--config", choices=CONFIGS, default="synthetic")
    s.add_argument("--manual-dir", type=Path)
    s.add_argument("--out", type=Path, default=Path("demo_out"))
    s.set_defaults(func=_demo)
    return p


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input: reported as one line, no traceback, exit status 2."""
    from iam_writers_tfds import images, kaggle_layout

    return (kaggle_layout.LayoutError, images.ImageError, FileNotFoundError, FileExistsError)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except user_errors() as err:
        print(f"iam-writers {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0
