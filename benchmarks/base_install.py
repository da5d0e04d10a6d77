"""The base install (edge runtime only) against the full one: venv size and cold commands.

    python benchmarks/base_install.py [EXPORT_DIR] [IMAGES_DIR] [--repeat 5]

Defaults to `make demo`'s export and held-out images. Creates a fresh venv, installs the
project there with `pip install SRC` (no extras: pip fetches numpy, OpenCV and ai-edge-litert
as a user's would), and prints its size next to this venv's, then the wall time of
`iam-writers predict` (one line) and `identify` (one line against a gallery of every writer)
from process start to answer, in both, with ratios. Goals: base venv <= 400 MB, cold
`predict` <= 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def oldest_python() -> str:
    """The oldest Python that setup.cfg accepts (3.10) if this machine has one that runs (on
    PATH, or among pyenv's versions), else this one: the edge runtime must run on the
    Python a device has, not only on the one the project is developed with."""
    found = [shutil.which("python3.10")]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found += sorted(map(str, pyenv.glob("versions/3.10.*/bin/python3.10")))
    for python in filter(None, found):
        if subprocess.run([python, "-c", "import venv"], capture_output=True).returncode == 0:
            return python
    return sys.executable


def base_venv(dest: Path, python: str = sys.executable) -> Path:
    """A new venv at `dest` of `python`, holding the project's tracked files installed
    without extras; returns its bin folder. The source is copied first so that the build
    leaves nothing in the checkout."""
    src = dest.parent / f"{dest.name}-src"
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached",
                            "--others", "--exclude-standard"], capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    subprocess.run([python, "-m", "venv", str(dest)], check=True)
    subprocess.run([str(dest / "bin" / "python"), "-m", "pip", "install", "--quiet", str(src)],
                   check=True)
    shutil.rmtree(src)
    return dest / "bin"


def size_mb(folder: Path) -> float:
    """Bytes on disk under `folder` (as `du` counts them), in MB."""
    blocks = sum(p.lstat().st_blocks for p in folder.rglob("*"))
    return blocks * 512 / 1e6


def cold_seconds(command: list[str], repeat: int, cwd: Path) -> float:
    """Median wall time of `command` as a new process, start to exit."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export", type=Path, nargs="?", default=REPO / "demo_out" / "export")
    p.add_argument("images", type=Path, nargs="?", default=REPO / "demo_out" / "heldout")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    model = args.export / "model_int8.tflite"
    images = sorted(args.images.glob("*.png"))
    if not model.is_file() or not images:
        p.error("no model or images: run `make demo` first, or pass EXPORT_DIR IMAGES_DIR")
    full_bin = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        bins = {"base": base_venv(work / "venv"), "full": full_bin}
        install = time.perf_counter() - start
        sizes = {"base": size_mb(work / "venv"), "full": size_mb(full_bin.parent)}
        line = str(images[0])
        subprocess.run([str(bins["base"] / "iam-writers"), "enroll", str(work / "g"), "--model",
                        str(model), "--writer", "w", *map(str, images[1:20])], check=True,
                       capture_output=True)
        rows = {}
        for name, bin_dir in bins.items():
            cli = str(bin_dir / "iam-writers")
            rows[name] = (
                cold_seconds([cli, "predict", str(model), line], args.repeat, work),
                cold_seconds([cli, "identify", str(work / "g"), line, "--model", str(model)],
                             args.repeat, work))
    print(f"base venv created and installed in {install:.0f} s; {len(images)} images, "
          f"{model.name}, median of {args.repeat} cold runs each")
    print(f"{'install':<8}{'venv MB':>9}{'vs full':>9}{'predict s':>11}{'vs full':>9}"
          f"{'identify s':>12}{'vs full':>9}")
    for name in ("base", "full"):
        (pred, ident), (fpred, fident) = rows[name], rows["full"]
        print(f"{name:<8}{sizes[name]:>9.0f}{sizes[name] / sizes['full']:>8.2f}x"
              f"{pred:>11.2f}{pred / fpred:>8.2f}x{ident:>12.2f}{ident / fident:>8.2f}x")
    base_pred = rows["base"][0]
    print(f"goals: base venv {sizes['base']:.0f} MB <= 400: "
          f"{'met' if sizes['base'] <= 400 else 'NOT met'}; cold predict {base_pred:.2f} s "
          f"<= 0.5: {'met' if base_pred <= 0.5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
