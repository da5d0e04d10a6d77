"""The base install (`pip install iam-writers`, no extras) is the TF-free edge runtime."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks.base_install import base_venv, oldest_python
from iam_writers_tfds.images import read_gray
from tests.conftest import REPO, heic


def _run(bin_dir: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / args[0]), *map(str, args[1:])], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_base_install_identifies_without_tensorflow(exported, by_writer, tmp_path):
    # on the oldest Python setup.cfg accepts, when the machine has it: gallery and report
    # timestamps once used datetime.UTC, which 3.10 lacks, and enroll crashed there
    bin_dir = base_venv(tmp_path / "venv", oldest_python())
    work = tmp_path / "work"  # outside the checkout: only the installed package is importable
    work.mkdir()
    proc = _run(bin_dir, "python", "-c", "import tensorflow", cwd=work)
    assert proc.returncode != 0 and "No module named 'tensorflow'" in proc.stderr
    proc = _run(bin_dir, "python", "-c", "import models.runtime; print(models.runtime.__file__)",
                cwd=work)
    assert proc.returncode == 0 and str(tmp_path / "venv") in proc.stdout, proc.stderr[-2000:]

    model = exported / "model_int8.tflite"
    a, b = list(by_writer)[:2]
    # and an iPhone's HEIC of the same line, decoded by the base install's own libheif
    iphone = work / "IMG_0001.HEIC"
    iphone.write_bytes(heic(read_gray(by_writer[a][0])))
    proc = _run(bin_dir, "iam-writers", "predict", model, by_writer[a][0], iphone, "--json",
                cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png, of_heic = json.loads(proc.stdout)
    assert png["top"][0]["writer"] in by_writer
    assert of_heic["top"][0]["writer"] == png["top"][0]["writer"]
    gallery = work / "g"
    for writer in (a, b):
        proc = _run(bin_dir, "iam-writers", "enroll", gallery, "--model", model, "--writer",
                    writer, *by_writer[writer][:3], cwd=work)
        assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _run(bin_dir, "iam-writers", "identify", gallery, by_writer[a][3], by_writer[b][3],
                "--model", model, "--json", cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["top"][0]["writer"] for r in json.loads(proc.stdout)] == [a, b]

    # what needs TensorFlow says so in one line, with the install command
    proc = _run(bin_dir, "iam-writers", "train", "--out", work / "run", cwd=work)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("iam-writers train: error: needs tensorflow, which the base "
                                   "install leaves out (it is the edge runtime only): pip "
                                   "install 'iam-writers[train]'")
    assert not (work / "run").exists()
    proc = _run(bin_dir, "iam-writers", "predict", exported / "saved_model", by_writer[a][0],
                cwd=work)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "SavedModel folder needs TensorFlow" in proc.stderr
    assert "model_*.tflite" in proc.stderr and "iam-writers[train]" in proc.stderr


def test_make_names_the_python_that_training_needs(tmp_path):
    # training's stack (lir 1.3, Keras 3.13+) has no wheels for 3.10, where setup.cfg still
    # accepts the edge runtime: make says so in one line instead of a pip resolver error
    python = oldest_python()
    old = subprocess.run([python, "-c", "import sys; print(sys.version_info < (3, 11))"],
                         capture_output=True, text=True).stdout.strip() == "True"
    if not old:
        pytest.skip("this machine has no Python older than 3.11")
    venv = tmp_path / "venv"
    proc = subprocess.run(["make", "-C", str(REPO), "demo", f"PYTHON={python}", f"VENV={venv}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and not venv.exists()
    assert "training and the tests need 3.11 or newer; run make PYTHON=" in proc.stderr
