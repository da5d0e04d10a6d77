"""Crash safety: SIGKILL in the middle of train, export and build, then run again (slow)."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cli


def _kill_when(args: list, ready, timeout: float = 600) -> None:
    """Start `iam-writers ARGS`, SIGKILL it as soon as `ready()` holds."""
    proc = subprocess.Popen([sys.executable, "-m", "iam_writers", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert ready(), "the command ended before reaching the point to kill it at"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _epochs(run: Path) -> list[str]:
    return [row["epoch"] for row in csv.DictReader(open(run / "history.csv"))]


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_epoch(synth_dir, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--config", "top50", "--data-dir", synth_dir, "--out", run, "--epochs", "3",
            "--patch-size", "32", "--patches-per-image", "8"]
    _kill_when(args, lambda: (run / "history.csv").is_file() and len(_epochs(run)) >= 1)
    assert not (run / "model.keras").exists() and (run / "backup").is_dir()
    proc = cli(*args, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _epochs(run) == ["0", "1", "2"]  # continued, not restarted
    assert (run / "model.keras").is_file() and not (run / "backup").exists()


@pytest.mark.slow
def test_killed_export_leaves_no_partial_file_and_can_be_run_again(trained_run, tmp_path):
    out = tmp_path / "exports" / "e"
    args = ["export", trained_run, "--out", out, "--quantize", "none,int8",
            "--calibration-samples", "100", "--allow-degraded"]
    _kill_when(args, lambda: any((tmp_path / "exports").glob(".e.*/saved_model")))
    assert not out.exists()
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model_int8.tflite").is_file() and (out / "model_card.json").is_file()


@pytest.mark.slow
def test_killed_build_can_simply_be_run_again(synth_layout, tmp_path):
    data_dir = tmp_path / "tfds"
    args = ["build", "--config", "top50", "--manual-dir", synth_layout, "--data-dir", data_dir]
    _kill_when(args, lambda: any(data_dir.glob("iam_writers_tfds/top50/*")))
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train" in proc.stdout and "test" in proc.stdout
