"""Crash safety: SIGKILL in the middle of train, export and build, then run again (slow)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cli, kill_when


def _epochs(run: Path) -> list[str]:
    return [row["epoch"] for row in csv.DictReader(open(run / "history.csv"))]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _workers(args: list, tmp: Path) -> list[subprocess.Popen]:
    """`iam-writers ARGS` as the two workers of a MultiWorkerMirroredStrategy cluster on
    127.0.0.1, each with its own temporary folder (TMPDIR)."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    procs = []
    for index in (0, 1):
        # Seen twice in full fresh-clone runs, never alone: the chief's first epoch failed
        # on an empty batch ("Incompatible shapes: [16] vs. [0,16,16,8]" in a batch norm,
        # the shape of the tensor before the convolution: oneDNN's fused kernels on an
        # empty tensor), or worker 1 stopped sending heartbeats. One thread pool each and
        # oneDNN off are mitigations whose effect is not proven (see the closing note).
        env = {**os.environ, "TMPDIR": str(tmp / f"tmp{index}"),
               "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
               "TF_ENABLE_ONEDNN_OPTS": "0",
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": index}})}
        (tmp / f"tmp{index}").mkdir(exist_ok=True)
        procs.append(subprocess.Popen([sys.executable, "-m", "iam_writers", *map(str, args)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=env))
    return procs


@pytest.mark.slow
def test_two_workers_train_the_chief_writes_and_both_resume_after_a_kill(synth_dir, tmp_path):
    """Two processes under MultiWorkerMirroredStrategy on CPU. Worker 1 is killed after the
    first epoch (the chief then cannot go on and is stopped too); `--resume` on both
    continues from the chief's backup. Only the chief writes the run directory."""
    run = tmp_path / "run"
    args = ["train", "--config", "top50", "--data-dir", synth_dir, "--out", run, "--epochs", "3",
            "--patch-size", "32", "--patches-per-image", "4", "--width", "8",
            "--embedding-dim", "8"]
    chief, worker = _workers(args, tmp_path)
    deadline = time.time() + 600
    while not ((run / "history.csv").is_file() and len(_epochs(run)) >= 1):
        if chief.poll() is not None or time.time() > deadline:
            worker.kill()
            pytest.fail("chief:\n" + chief.communicate()[0][-3000:] + "\nworker 1:\n"
                        + worker.communicate()[0][-3000:])
        time.sleep(0.2)
    worker.kill()
    try:
        chief.wait(timeout=30)
    except subprocess.TimeoutExpired:
        chief.kill()
    chief.wait()
    assert not (run / "model.keras").exists() and (run / "backup").is_dir()
    resumed = _workers([*args, "--resume"], tmp_path)
    outputs = [p.communicate(timeout=600)[0] for p in resumed]
    assert [p.returncode for p in resumed] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "test: image top-1" in outputs[0] and "worker 1: training finished" in outputs[1]
    assert _epochs(run) == ["0", "1", "2"]  # continued, not restarted
    for name in ("model.keras", "config.json", "labels.json", "metrics.json"):
        assert (run / name).is_file(), name
    # an embedding head (--embedding-dim) is scored on verification pairs too
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["verification"]) >= {"roc_auc", "eer", "tar_at_far_1pct"}
    assert not (run / "backup").exists()
    # the worker wrote only below its own temporary folder, and cleaned it up
    assert not list((tmp_path / "tmp1").glob("iam-writers-worker*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tmp0", "tmp1"]


def test_killed_export_leaves_no_partial_file_and_can_be_run_again(exported):
    """The shared export (`exported`) is the demo's run again after a kill: the fixture
    killed the demo once its export's hidden folder held a file and saw no `export` left
    (tests/conftest.py, `_demo`)."""
    killed = json.loads((exported.parent / "killed.json").read_text())
    assert killed, "the kill left no hidden folder: it came before the export began writing"
    assert not any((exported.parent / k / "model_float32.tflite").exists() for k in killed)
    for name in ("model_float32.tflite", "model_int8.tflite", "model_card.json", "vlad.npz"):
        assert (exported / name).is_file(), name


@pytest.mark.slow
def test_killed_build_can_simply_be_run_again(synth_layout, tmp_path):
    data_dir = tmp_path / "tfds"
    args = ["build", "--config", "top50", "--manual-dir", synth_layout, "--data-dir", data_dir]
    kill_when(args, lambda: any(data_dir.glob("iam_writers_tfds/top50/*")), tmp_path / "tmp")
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train" in proc.stdout and "test" in proc.stdout
