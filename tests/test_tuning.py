"""Search spaces, the tune command, kill-and-resume, and chief + workers."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras_tuner as kt
import pytest

from tests.conftest import REPO, cli, kill_when
from tuning import space
from tuning.space import SpaceError

TINY = "patch_size: {values: [32]}\nwidth: {values: [8]}\n"  # fast trials


def _tune(project: Path, data_dir: Path, *extra, trials: int = 2, epochs: int = 1) -> list[str]:
    return ["tune", "--model", "patch_cnn", "--config", "top50", "--data-dir", data_dir,
            "--max-trials", trials, "--epochs", epochs, "--project", project, *extra]


def test_default_spaces_cover_the_required_hyperparameters():
    for model in space.SPACES:
        s = space.load(model)
        assert s["learning_rate"] == space.Range(1e-5, 1e-2, "log")
        for name, spec in s.items():  # the defaults are checked here, a file's at load
            spec.check(name)
    assert {"dropout", "patch_size", "width"} <= set(space.load("patch_cnn"))
    head = space.load("resnet50_classifier")["head_units"]
    assert (head.min, head.max, head.integer) == (128, 2048, True)
    assert {"embedding_dim", "margin", "head_units"} <= set(space.load("siamese_resnet50"))
    assert {"embedding_dim", "metric_loss", "margin", "temperature"} <= set(
        space.load("patch_embed"))
    hp = kt.HyperParameters()
    assert 0 <= space.load("patch_cnn")["dropout"].sample(hp, "dropout") <= 0.6


def test_overrides_from_yaml_and_json(tmp_path):
    (tmp_path / "s.yaml").write_text("learning_rate: {min: 1e-4, max: 3e-3}\n"
                                     "width: {values: [16, 32]}\n")
    s = space.load("patch_cnn", tmp_path / "s.yaml")
    assert s["learning_rate"] == space.Range(1e-4, 3e-3, "log")  # keeps log sampling
    assert s["width"] == space.Choice((16, 32))
    (tmp_path / "s.json").write_text(json.dumps({"patch_size": {"min": 32, "max": 64}}))
    assert space.load("patch_cnn", tmp_path / "s.json")["patch_size"].integer


@pytest.mark.parametrize("text, message", [
    ("depth: {values: [3]}", "unknown hyperparameter(s) depth"),
    ("dropout: {min: 0.5, max: 0.1}", "empty or inverted range"),
    ("dropout: {min: 0.3, max: 0.3}", "empty or inverted range"),
    ("width: {values: []}", "`values` is empty"),
    ("learning_rate: {min: 0, max: 0.1}", "log range needs min > 0"),
    ("dropout: {low: 0.1}", "unknown key(s) low"),
    ("dropout: {min: abc, max: 0.2}", "is not a number"),
    ("dropout: [0.1", "not valid YAML"),
])
def test_bad_space_files_are_refused(tmp_path, text, message):
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SpaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        space.load("patch_cnn", tmp_path / "s.yaml")


def test_unknown_config_is_refused_by_the_parser(tmp_path):
    proc = cli(*_tune(tmp_path / "p", tmp_path, "--config", "foo"))
    assert proc.returncode == 2 and "invalid choice: 'foo'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "p").exists()


@pytest.mark.slow
def test_a_killed_search_run_again_finishes_writes_its_summary_and_retrains_the_best(
        tmp_path, synth_dir):
    """Killed in its second (last) trial, the same command goes on without re-running the
    first; the finished search writes its summary and retrains the best on train +
    validation, and a third run keeps all of it. (One search for both: docs/results.md,
    "The test suite's time".)"""
    (tmp_path / "s.yaml").write_text(TINY)
    project = tmp_path / "p"
    args = _tune(project, synth_dir, "--space", tmp_path / "s.yaml", "--retrain-best",
                 epochs=2)
    started = project / "trial_1" / "trial.json"  # trial 1 starts once trial 0 has finished
    kill_when(args, started.exists, tmp_path / "tmp", after=3)  # into trial 1's training
    first = (project / "trial_0" / "trial.json").read_bytes()
    assert json.loads(first)["status"] == "COMPLETED"
    assert not (project / "best_run").exists()
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (project / "trial_0" / "trial.json").read_bytes() == first  # not re-run
    rows = list(csv.DictReader(open(project / "trials.csv")))
    assert [r["trial"] for r in rows] == ["0", "1"]
    assert all(r["status"] == "COMPLETED" and float(r["score"]) >= 0 for r in rows)
    best = json.loads((project / "best_hyperparameters.json").read_text())
    assert best["objective"] == "val_accuracy"
    assert best["score"] == max(float(r["score"]) for r in rows)
    assert (project / "objective.png").stat().st_size > 1000
    run = project / "best_run"
    assert json.loads((run / "config.json").read_text())["fit_on_validation"] is True
    proc = cli("export", run, "--out", tmp_path / "exp", "--quantize", "none")  # a run dir
    assert proc.returncode == 0, proc.stderr[-2000:]
    # calibrated on the validation forms it held out of train + validation, and on no other
    forms = json.loads((run / "calibration_writers.json").read_text())["forms"]
    calibration = json.loads((tmp_path / "exp" / "model_card.json").read_text())["calibration"]
    assert forms and calibration["forms"] == forms and calibration["writers"] == []
    assert f"the {len(forms)} validation forms held out" in calibration["source"]
    assert f"calibrating fusion and thresholds on {len(forms)} held-out validation forms" \
        in proc.stdout
    # the same command again: the search is done and the finished best_run is kept
    trained = (run / "model.keras").stat().st_mtime_ns
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the search is complete (2 trials of --max-trials 2)" in proc.stdout
    assert "is already retrained; kept" in proc.stdout
    assert (run / "model.keras").stat().st_mtime_ns == trained


class _Searched:
    """A tuner whose search is over: trial 0 is the best, of the configuration `base`."""

    def __init__(self, base):
        trial = kt.engine.trial.Trial(kt.HyperParameters(), trial_id="0", status="COMPLETED")
        trial.score = 1.0
        self.oracle = type("Oracle", (), {"trials": {"0": trial}, "start_order": ["0"],
                                          "objective": kt.Objective("x", "max")})()
        self.hypermodel = type("HyperModel", (), {"config": lambda self, hp: base})()


@pytest.mark.parametrize("held", [None, "drawn"])
def test_a_best_run_holding_out_other_calibration_forms_is_trained_anew(held, synth_dir,
                                                                        tmp_path, capsys,
                                                                        monkeypatch):
    """A finished best_run of the best configuration is kept only where it held out the
    validation forms a training holds out now: one of a version that held none out (its
    calibration file has no forms), which export refuses, is moved aside and trained anew."""
    import dataclasses

    from models import train
    from models.config import CALIBRATION_FILE, TrainConfig
    from tuning import search

    base = TrainConfig(config="top50", data_dir=synth_dir, epochs=1)
    run = tmp_path / "p" / "best_run"
    run_cfg = dataclasses.replace(base, fit_on_validation=True, out=run)
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(run_cfg.to_json()))
    (run / "metrics.json").write_text("{}")
    forms = train.calibration_forms(run_cfg)
    assert forms  # the synthetic validation split has forms to hold out
    record = {"writers": []} if held is None else {"writers": [], "forms": forms}
    (run / CALIBRATION_FILE).write_text(json.dumps(record))
    trained = []
    monkeypatch.setattr(train, "train", lambda cfg: trained.append(cfg) or cfg.out)
    search.retrain_best(search.TuneConfig(project=tmp_path / "p"), _Searched(base),
                        {"trial": "0"})
    out = capsys.readouterr().out
    if held:
        assert not trained and "is already retrained; kept" in out
        return
    assert [c.out for c in trained] == [run] and not trained[0].resume
    assert f"held out none of the validation forms for export's calibration, not the " \
           f"{len(forms)} a training holds out now" in out
    assert (tmp_path / "p" / "best_run.previous" / "metrics.json").is_file()


def test_a_best_run_of_an_earlier_best_is_moved_aside_without_reading_the_dataset(
        synth_dir, tmp_path, capsys, monkeypatch):
    """A best_run of another configuration is trained anew whatever forms it held out, so
    the forms a training would hold out are not read from the dataset for it."""
    import dataclasses

    from models import train
    from models.config import TrainConfig
    from tuning import search

    base = TrainConfig(config="top50", data_dir=synth_dir, epochs=1)
    run = tmp_path / "p" / "best_run"
    run.mkdir(parents=True)
    earlier = dataclasses.replace(base, epochs=2, fit_on_validation=True, out=run)
    (run / "config.json").write_text(json.dumps(earlier.to_json()))
    (run / "metrics.json").write_text("{}")

    def unread(cfg):
        raise AssertionError("the dataset's validation forms were read")

    monkeypatch.setattr(train, "calibration_forms", unread)
    trained = []
    monkeypatch.setattr(train, "train", lambda cfg: trained.append(cfg) or cfg.out)
    search.retrain_best(search.TuneConfig(project=tmp_path / "p"), _Searched(base),
                        {"trial": "0"})
    assert [c.out for c in trained] == [run] and trained[0].epochs == 1
    assert "held an earlier best; moved to" in capsys.readouterr().out
    assert (tmp_path / "p" / "best_run.previous" / "metrics.json").is_file()


@pytest.mark.slow
def test_a_search_whose_first_model_cannot_load_its_weights_leaves_no_project(dummy_dir,
                                                                            tmp_path):
    """As offline with --weights imagenet: the retry with other weights starts afresh."""
    from models import zoo
    from tuning.search import TuneConfig, search

    weights = tmp_path / "resnet50.weights.h5"
    weights.write_bytes(b"not HDF5")
    with pytest.raises(zoo.WeightsError, match="resnet50.weights.h5: cannot load"):
        search(TuneConfig(model="resnet50_classifier", config="top50", data_dir=dummy_dir,
                          project=tmp_path / "p", weights=str(weights), max_trials=1,
                          epochs=1))
    assert not (tmp_path / "p").exists()


def test_a_full_disk_stops_the_search_before_a_checkpoint_and_the_trial_runs_again(
        tmp_path, synth_dir, monkeypatch):
    """KerasTuner counted a full disk as a failed trial: h5py's tracebacks, its weights file
    left half-written and open, and the next trial failing the same way. The search now
    stops before KerasTuner writes the checkpoint, with the error that `main` words in one
    line; the trial stays unfinished, so the same command runs it again."""
    import errno
    import shutil

    from tuning.search import TuneConfig, search

    (tmp_path / "s.yaml").write_text(TINY)
    project = tmp_path / "p"
    usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(
        1, 1, 0) if Path(path).is_relative_to(project) else usage(path))
    with pytest.raises(kt.errors.FatalError) as err:
        search(TuneConfig(model="patch_cnn", config="top50", data_dir=synth_dir,
                          project=project, space=tmp_path / "s.yaml", max_trials=1,
                          epochs=1))
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    assert not list(project.rglob("*.h5"))
    assert json.loads((project / "trial_0" / "trial.json").read_text())["status"] == "RUNNING"


def test_kerastuner_state_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """A kill between writing oracle.json and finishing it kept the old file (CI, 2026-12-05:
    a truncated oracle.json that the re-run refused)."""
    from keras_tuner.src import utils

    from tuning.search import save_json_atomically

    monkeypatch.setattr(utils, "save_json", utils.save_json)  # put back after the test
    save_json_atomically()
    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective("val_loss", "min"),
                                           max_trials=3)
    oracle._set_project_dir(str(tmp_path), "p")  # as a tuner does
    oracle.save()
    saved = (tmp_path / "p" / "oracle.json").read_bytes()
    oracle.start_order.append("0")  # a later state, whose save is killed before it ends

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        oracle.save()
    assert (tmp_path / "p" / "oracle.json").read_bytes() == saved
    assert [f.name for f in (tmp_path / "p").iterdir()] == ["oracle.json"]
    monkeypatch.undo()
    oracle.save()  # the later state differs from the kept one
    assert json.loads((tmp_path / "p" / "oracle.json").read_text())["start_order"] == ["0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_chief_and_two_workers_record_every_trial_once(tmp_path, synth_dir):
    (tmp_path / "s.yaml").write_text(TINY)
    project = tmp_path / "p"
    args = [sys.executable, "-m", "tuning", *map(str, _tune(project, synth_dir, "--space",
                                                            tmp_path / "s.yaml", trials=4)[1:])]
    base = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(_free_port()), "PYTHONPATH": str(REPO)}
    logs = {name: open(tmp_path / f"{name}.log", "w+") for name in ("chief", "tuner0", "tuner1")}
    procs = {name: subprocess.Popen(args, env={**base, "KERASTUNER_TUNER_ID": name},
                                    stdout=log, stderr=subprocess.STDOUT)
             for name, log in logs.items()}
    try:
        codes = {name: p.wait(timeout=900) for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
    text = {name: (log.seek(0), log.read())[1] for name, log in logs.items()}
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, text
    rows = list(csv.DictReader(open(project / "trials.csv")))  # written by the chief alone
    assert sorted(r["trial"] for r in rows) == ["0", "1", "2", "3"]
    assert all(r["status"] == "COMPLETED" for r in rows)
    oracle = json.loads((project / "oracle.json").read_text())
    assert sorted(oracle["start_order"]) == ["0", "1", "2", "3"]  # each trial started once
    assert sorted(oracle["end_order"]) == ["0", "1", "2", "3"]  # and ended once
    assert sorted(p.name for p in project.glob("trial_*")) == [f"trial_{i}" for i in range(4)]


def test_the_embedding_hypermodel_builds_the_sampled_loss():
    from models.config import TrainConfig
    from models.losses import BatchHardTripletLoss, SupConLoss
    from tuning.hypermodels import HYPERMODELS

    hypermodel = HYPERMODELS["patch_embed"](TrainConfig(), space.load("patch_embed"), 5)
    for loss, cls in (("supcon", SupConLoss), ("triplet", BatchHardTripletLoss)):
        hp = kt.HyperParameters()
        hp.Fixed("metric_loss", loss)
        hp.Fixed("embedding_dim", 32)
        model = hypermodel.build(hp)
        assert isinstance(model.loss, cls) and model.output_shape == (None, 32)


def test_the_best_trial_is_the_first_started_of_the_best_finite_scores():
    """Trials at chance tie; KerasTuner's order among ties changes when a search is
    reloaded, and a re-run then retrained another "best" (seen on a fresh clone). Its
    ranking also ends with failed trials (a full disk: the summary's "best trial" was a
    TypeError on formatting None), and places a trial that diverged (a NaN val_loss)
    anywhere, first too."""
    from types import SimpleNamespace

    from tuning.search import best_trial

    def searched(direction: str, *scores) -> SimpleNamespace:
        oracle = kt.oracles.RandomSearchOracle(kt.Objective("x", direction), max_trials=9)
        for i, score in enumerate(scores):
            trial = kt.engine.trial.Trial(kt.HyperParameters(), trial_id=str(i),
                                          status="FAILED" if score is None else "COMPLETED")
            trial.score = score
            oracle.trials[str(i)] = trial
            oracle.start_order.append(str(i))
        return SimpleNamespace(oracle=oracle)

    assert best_trial(searched("max", 0.1, 0.3, 0.3, None)).trial_id == "1"
    assert best_trial(searched("min", 0.5, float("nan"), 0.2, 0.2)).trial_id == "2"
    assert best_trial(searched("max", float("nan"), 0.1)).trial_id == "1"
    assert best_trial(searched("max")) is None
    assert best_trial(searched("min", None, float("nan"))) is None
