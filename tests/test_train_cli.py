"""`iam-writers train` then `evaluate` end to end on dummy data (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, as_another_user, cli

SCHEMA = {"top1": float, "top5": float, "form_top1": float, "n_images": int, "n_forms": int,
          "n_writers": int, "per_writer": dict}


@pytest.mark.slow
def test_train_then_evaluate_writes_metrics_and_plots(trained_run):
    run = trained_run
    for name in ("model.keras", "labels.json", "config.json", "history.csv", "metrics.json"):
        assert (run / name).is_file(), name
    assert not (run / "backup").exists()
    assert len(json.loads((run / "labels.json").read_text())) == 10
    proc = cli("evaluate", run, "--split", "validation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "metrics_validation.json").read_text())
    for key, kind in SCHEMA.items():
        assert isinstance(m[key], kind), key
    assert 0 <= m["top5"] <= 1 and m["top1"] <= m["top5"]
    assert m["n_images"] == 80 and m["n_forms"] == 10 and m["n_writers"] == 10
    assert {"precision", "recall", "f1-score"} <= set(m["per_writer"]["macro avg"])
    # the default patch_cnn is a softmax classifier: no embedding head, so no verification
    # pairs (a head's are scored in the two-worker test of tests/test_crash.py)
    assert "verification" not in m
    for plot in ("curves", "confusion", "roc", "samples"):
        assert (run / "plots" / f"{plot}.png").stat().st_size > 1000, plot


def test_existing_run_dir_without_resume_is_refused(dummy_dir, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    proc = cli("train", "--config", "top50", "--data-dir", dummy_dir, "--out", tmp_path / "run")
    assert proc.returncode == 2 and "Pass --resume" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_backbone_that_cannot_load_its_weights_leaves_no_run_folder(dummy_dir, tmp_path):
    """Offline, the ImageNet download fails as this file does: after the data is read,
    before any epoch; the retry (say with --weights none) must not find a run to resume."""
    from models import zoo
    from models.config import TrainConfig
    from models.train import train

    weights = tmp_path / "resnet50.weights.h5"
    weights.write_bytes(b"not HDF5")
    with pytest.raises(zoo.WeightsError, match="resnet50.weights.h5: cannot load"):
        train(TrainConfig(model="resnet50_classifier", config="top50", data_dir=dummy_dir,
                          out=tmp_path / "run", weights=str(weights), epochs=1))
    assert not (tmp_path / "run").exists()


def test_a_run_begun_on_every_validation_line_is_not_resumed_holding_forms_out(dummy_dir,
                                                                              tmp_path):
    """Its epochs so far learnt the forms this version would hold out for calibration."""
    import json

    from models.config import RunFileError, TrainConfig
    from models.train import train

    run = tmp_path / "run"
    cfg = TrainConfig(config="top50", data_dir=dummy_dir, out=run, fit_on_validation=True,
                      epochs=1)
    run.mkdir()
    (run / "config.json").write_text(json.dumps(cfg.to_json()))
    (run / "calibration_writers.json").write_text(json.dumps({"writers": []}))
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(RunFileError, match="held out none of the validation forms .*a "
                       "version that trained a classifier on every one; 2 now.*Train it anew "
                       "into a new --out"):
        train(TrainConfig(out=run, resume=True))
    assert sorted(p.name for p in run.iterdir()) == before


@pytest.mark.parametrize("args,says", [
    (("export", "{tmp}/none", "--out", "{tmp}/x"), "not a run directory"),
    (("export", "{tmp}/run", "--out", "{tmp}/run"), "already exists"),
    (("evaluate", "{tmp}/none"), "not a run directory"),
    (("train", "--out", "{tmp}/run"), "Pass --resume"),
    (("train", "--out", "{tmp}/none", "--resume"), "not a run directory"),
    (("build", "--manual-dir", "{tmp}/none"), "none"),
    (("train", "--config", "top10", "--data-dir", "{tmp}", "--out", "{tmp}/r"),
     "Run: iam-writers build --config top10 --data-dir"),
    (("tune", "--config", "top10", "--data-dir", "{tmp}", "--project", "{tmp}/p"),
     "Run: iam-writers build --config top10 --data-dir"),
    (("tune", "--space", "{tmp}/inverted.yaml", "--project", "{tmp}/p"), "inverted range"),
    (("export", "{tmp}/run", "--out", "{tmp}/x", "--stride", "24"), "multiple of 16 px"),
    (("export", "{tmp}/code", "--out", "{tmp}/x"), "Lambda layer with Python code"),
    (("evaluate", "{tmp}/cut"), "not a Keras model archive"),
    (("export", "{tmp}/labels", "--out", "{tmp}/x"), "labels.json: damaged"),
    (("evaluate", "{tmp}/settings"), "config.json: damaged"),
    (("tune", "--project", "{tmp}/search"), "oracle.json: damaged"),
    (("build", "--data-dir", "{tmp}/inverted.yaml"), "a file, not a folder"),
    (("train", "--data-dir", "{tmp}/inverted.yaml", "--out", "{tmp}/r"), "a file, not a folder"),
])
def test_path_errors_come_before_tensorflow_loads(tmp_path, args, says):
    """Checks of paths, data and search spaces run before TensorFlow is imported (it takes
    seconds to load)."""
    (tmp_path / "inverted.yaml").write_text("dropout: {min: 0.5, max: 0.1}\n")
    lambda_layer = {"class_name": "Lambda", "config": {"function": {
        "class_name": "__lambda__", "config": {"code": "4wEAAAAA"}}}}
    for run, config in (("run", {}), ("code", {"config": {"layers": [lambda_layer]}}),
                        ("labels", {}), ("settings", {})):
        (tmp_path / run).mkdir()
        (tmp_path / run / "config.json").write_text("{}" if run != "settings" else "{cut")
        (tmp_path / run / "labels.json").write_text('["a", "b"]' if run != "labels" else "{}")
        with zipfile.ZipFile(tmp_path / run / "model.keras", "w") as archive:
            archive.writestr("config.json", json.dumps(config))
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "oracle.json").write_text('{"ongoing_trials": {')  # cut short
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "config.json").write_text("{}")
    (tmp_path / "cut" / "model.keras").write_bytes(b"PK\x03\x04 cut short")
    argv = [a.format(tmp=tmp_path) for a in args]
    code = ("import sys; from iam_writers.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, 'tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.stdout.split() == ["2", "False"], proc.stderr
    assert proc.stderr.count("\n") == 1 and str(tmp_path) in proc.stderr and says in proc.stderr
    assert not any((tmp_path / name).exists() for name in ("p", "r", "x"))


@pytest.mark.parametrize("argv, says", [
    (("synth", "--out", "x", "--writers", "0"), "must be at least 1, got 0"),
    (("synth", "--out", "x", "--lines-per-form", "0"), "must be at least 1, got 0"),
    (("demo", "--writers", "0"), "must be at least 1, got 0"),
    # these were tracebacks, the demo's after it had made its folder
    (("demo", "--epochs", "-2"), "epochs must be >= 1 (0: the default), got -2"),
    (("enroll", "g", "--layout", "d", "--forms-per-writer", "-1"),
     "argument --forms-per-writer: must be 0 (all) or more, got -1"),
    (("tune", "--patience", "-1"), "max_trials and epochs must be >= 1, patience >= 0"),
    # a folder of writers' folders passed as the images: said how to pass it
    (("enroll", "g", "."), ". is a folder: enrol its writers' folders (or a Kaggle or IAM "
                           "layout) with --layout ., or one writer's images with --writer ID "
                           "*.png"),
    *[((command, *args, "--seed", seed), f"seed must be from 0 to 4294967295, got {seed}")
      for command, args in (("synth", ("--out", "x")), ("demo", ()), ("train", ()),
                            ("tune", ())) for seed in ("-1", str(2**32))]])
def test_counts_seeds_and_a_folder_given_as_images_are_refused_before_any_work(
        argv, says, capsys, tmp_path, monkeypatch):
    from iam_writers.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    assert exit_.value.code == 2 and says in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, says", [
    (("identify", "g.sqlite", "a.png", "--threshold", "nan"), "a finite number, got nan"),
    (("identify", "g.sqlite", "a.png", "--threshold", "high"), "a number, got 'high'"),
    (("identify", "g.sqlite", "a.png", "--threads", "0"), "must be at least 1, got 0"),
    (("predict", "m.tflite", "a.png", "--threads", "0"), "must be at least 1, got 0"),
    (("gallery", "alike", "g.sqlite", "--threads", "0"), "must be at least 1, got 0"),
    (("identify", "g.sqlite", "a.png", "--report", "."), "is a folder: name the report's file")])
def test_a_threshold_that_is_no_number_and_no_threads_are_refused_by_name(argv, says, capsys,
                                                                        tmp_path, monkeypatch):
    """`--threshold nan` answered every query "unknown" (nan is below nothing), `--threads
    0` was blamed on the model file, and a report named by a folder was a traceback once the
    work was done: all are argument errors, named as such, before any work."""
    from iam_writers.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and says in err and f"argument {argv[-2]}" in err
    assert not list(tmp_path.iterdir())


def test_a_report_where_one_may_not_write_is_refused_before_the_work(shared_folder):
    """A report in a folder one may not write in was refused only once the work, which may
    take minutes, was done."""
    import contextlib
    import io

    from iam_writers.cli import main

    (shared_folder / "ro").mkdir(mode=0o555)

    def run() -> dict:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
            main(["identify", "g.sqlite", "a.png", "--report", "ro/sub/r.html"])
        return {"code": exit_.value.code, "last": err.getvalue().splitlines()[-1]}

    assert as_another_user(shared_folder, run) == {
        "code": 2, "last": "iam-writers identify: error: argument --report: ro/sub/r.html: "
                           "cannot write in ro (Permission denied). Choose a folder you may "
                           "write in."}
    assert sorted(p.name for p in shared_folder.iterdir()) == ["ro"]


@pytest.mark.parametrize("argv", [["build", "--data-dir", "ro/tfds"],
                                  ["demo", "--out", "ro/demo"]])
def test_a_command_that_may_not_write_its_output_says_so_before_it_starts(shared_folder, argv):
    """`tune --project` in a read-only folder ended in TensorFlow's traceback; `train`,
    `build` and `evaluate` in SQLite's or Python's errno words, some after the work."""
    import contextlib
    import io

    from iam_writers.cli import main

    (shared_folder / "ro").mkdir(mode=0o555)

    def run() -> dict:
        err, loaded = io.StringIO(), "tensorflow" in sys.modules  # by an earlier test
        with contextlib.redirect_stderr(err):
            code = main(argv)
        return {"code": code, "err": err.getvalue(),
                "tf": "tensorflow" in sys.modules and not loaded}

    assert as_another_user(shared_folder, run) == {
        "code": 2, "tf": False,
        "err": f"iam-writers {argv[0]}: error: {argv[-1]}: cannot write in ro (Permission "
               "denied). Choose a folder you may write in.\n"}


def test_a_file_written_where_one_may_not_write_gets_one_line_naming_it(tmp_path,
                                                                        monkeypatch):
    """A report (or any file the project writes) in a folder one may not write in: the
    error names the file and its folder, not the hidden temporary beside it, and the
    command line reports it as bad input (one line, no traceback)."""
    import tempfile

    from iam_writers.cli import user_errors
    from iam_writers_tfds import atomic

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".r.html.x1y2"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(PermissionError) as err:
        atomic.write_text(tmp_path / "r.html", "<html>")
    assert str(err.value) == (f"{tmp_path / 'r.html'}: cannot write in {tmp_path} (Permission "
                              "denied). Choose a folder you may write in.")
    assert isinstance(err.value, user_errors()) and not list(tmp_path.iterdir())


def test_fitting_on_validation_holds_calibration_forms_out_and_watches_training_figures(
        dummy_dir, tmp_path):
    """Train + validation means no validation set: figures on examples the model trains on
    must not pick checkpoints, stop training or cut the learning rate. A classifier keeps a
    seeded share of the validation forms out, for export to calibrate on lines it has not
    seen."""
    import dataclasses

    from models.config import TrainConfig
    from models.train import _callbacks, calibration_forms, datasets
    from pipelines import load_split

    cfg = TrainConfig(config="top50", data_dir=dummy_dir, out=tmp_path, patch_size=32,
                      patches_per_image=2, lr_schedule="plateau", fit_on_validation=True,
                      calibration_share=0.5)
    val_forms = [f.decode() for f in load_split("top50", "validation", dummy_dir).map(
        lambda ex: ex["form_id"]).as_numpy_iterator()]
    forms = calibration_forms(cfg)
    assert forms == calibration_forms(cfg) == sorted(forms)  # seeded
    assert len(forms) == round(0.5 * len(set(val_forms))) and set(forms) < set(val_forms)
    assert calibration_forms(dataclasses.replace(cfg, seed=1)) != forms
    for other in ({"fit_on_validation": False}, {"calibration_share": 0.0},
                  {"model": "patch_embed"}):  # patch_embed holds writers out instead
        assert calibration_forms(dataclasses.replace(cfg, **other)) == []
    both, none = datasets(cfg, forms=forms)
    everything, _ = datasets(cfg)
    train_only, val = datasets(dataclasses.replace(cfg, fit_on_validation=False))
    assert none is None and val is not None
    count = lambda ds: sum(int(y.shape[0]) for _, y in ds)  # noqa: E731
    held_lines = sum(f in forms for f in val_forms)
    assert 0 < held_lines < len(val_forms)
    assert count(everything) == count(train_only) + 2 * len(val_forms)  # 2 crops a line
    assert count(both) == count(train_only) + 2 * (len(val_forms) - held_lines)
    watched = {type(c).__name__: c.monitor for c in
               _callbacks(cfg, "val_accuracy", 1e-3, 0, 3, held_out=False)
               if hasattr(c, "monitor")}
    assert watched == {"EarlyStopping": "accuracy", "ReduceLROnPlateau": "loss",
                       "ModelCheckpoint": "accuracy"}


@pytest.mark.slow
def test_siamese_trains_on_pairs_and_identifies_by_centroid(synth_dir, tmp_path):
    """The Siamese recipe end to end, on a small backbone and images to stay fast."""
    run = tmp_path / "siamese"
    proc = cli("train", "--model", "siamese_resnet50", "--backbone", "mobilenetv2",
                "--weights", "none", "--image-size", "64", "--config", "top50",
                "--data-dir", synth_dir, "--out", run, "--epochs", "1",
                "--pairs-per-epoch", "64", "--batch-size", "16", "--embedding-dim", "16",
                "--head-units", "32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    # two of the ten writers are held out for export's calibration: not scored closed-set
    assert m["model"] == "siamese_resnet50" and m["n_writers"] == 8
    assert m["held_out_writers"] == 2
    assert 0 <= m["top1"] <= m["top5"] <= 1
    assert set(m["verification"]) >= {"roc_auc", "eer", "tar_at_far_1pct"}


@pytest.mark.slow
def test_classifier_phase_two_fine_tunes_the_last_blocks(synth_dir, tmp_path):
    run = tmp_path / "clf"
    proc = cli("train", "--model", "resnet50_classifier", "--backbone", "mobilenetv2",
                "--weights", "none", "--image-size", "64", "--config", "top50",
                "--data-dir", synth_dir, "--out", run, "--epochs", "1", "--batch-size", "16",
                "--head-units", "32", "--fine-tune-blocks", "2", "--fine-tune-epochs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import csv

    epochs = [row["epoch"] for row in csv.DictReader(open(run / "history.csv"))]
    assert epochs == ["0", "1"]  # phase one, then phase two continues the history
    assert json.loads((run / "metrics.json").read_text())["n_images"] == 50


def test_a_run_saved_before_line_band_keeps_the_bounding_box_recipe(tmp_path):
    from models.config import TrainConfig

    saved = TrainConfig(out=tmp_path).to_json()
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert TrainConfig.load(tmp_path).pipeline_config().line_band == 128
    del saved["line_band"]  # what runs trained before the band was introduced wrote
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert TrainConfig.load(tmp_path).pipeline_config().line_band == 0


@pytest.mark.parametrize("flags,says", [
    (("--patch-size", "0"), "16..1024"),
    (("--line-band", "5"), "line_band must be 0 or 16..4096"),
    (("--patches-per-image", "0"), "patches_per_image"),
    (("--width", "0"), "width, head_units and pairs_per_epoch must be >= 1"),
    (("--embedding-dim", "-1"), "embedding_dim, image_size and fine_tune_blocks >= 0"),
    (("--epochs", "0"), "epochs and batch_size must be >= 1, got 0 and"),
    (("--learning-rate", "nan"), "learning_rate must be a number > 0, got nan"),
    (("--learning-rate", "inf"), "learning_rate must be a number > 0, got inf"),
    (("--fine-tune-learning-rate", "-1"), "fine_tune_learning_rate must be a number > 0"),
    (("--patience", "-1"), "patience and fine_tune_epochs must be >= 0, got -1 and 5"),
    (("--fine-tune-epochs", "-1"), "patience and fine_tune_epochs must be >= 0, got 6 and -1"),
    (("--margin", "nan"), "margin must be a number >= 0, got nan"),
    (("--temperature", "inf"), "temperature must be a number > 0"),
])
def test_train_settings_out_of_range_are_refused_before_anything_runs(flags, says, capsys,
                                                                    tmp_path):
    """Checked with the settings, not by Keras or tf.data after TensorFlow has loaded; the
    error names the command and shows its usage, not the top level's."""
    from iam_writers.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(tmp_path / "r"), *flags])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and says in err.split("iam-writers train: error: ")[1]
    assert "usage: iam-writers train " in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv,usage", [
    (("verify", "--model", "m.tflite", "a.png", "b.png"), "iam-writers verify MODEL A B"),
    (("predict", "--model", "m.tflite", "a.png"), "iam-writers predict MODEL IMAGES"),
])
def test_verify_and_predict_say_that_their_model_comes_first(argv, usage, capsys):
    """enroll and identify spell it --model; argparse alone would say only "unrecognized
    arguments: --model"."""
    from iam_writers.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and usage in err and f"iam-writers {argv[0]}: error:" in err


def test_a_file_naming_a_file_whose_name_is_not_utf8_is_written_with_it_escaped(tmp_path):
    """A report naming an image `b"\\xffname.png"` (Python: a lone surrogate) ended in
    UnicodeEncodeError once the work was done."""
    from iam_writers_tfds import atomic

    atomic.write_text(tmp_path / "r.html", "<p>\udcffname.png: ann</p>")
    assert (tmp_path / "r.html").read_bytes() == b"<p>\\udcffname.png: ann</p>"


def test_a_file_written_on_a_full_disk_is_named_in_one_line_and_left_out(tmp_path,
                                                                         monkeypatch):
    """A report on a full disk ended in Python's `OSError: [Errno 28]` traceback."""
    import errno

    from iam_writers.cli import user_errors
    from iam_writers_tfds import atomic

    def full(self, *args, **kwargs):  # as the OS answers a write that finds no space
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(atomic.NoSpaceError) as err:
        atomic.write_text(tmp_path / "r.html", "<html>")
    assert str(err.value) == (f"{tmp_path / 'r.html'}: the disk of {tmp_path} is full (No "
                              "space left on device); nothing was written. Free space there, "
                              "or choose another folder.")
    assert isinstance(err.value, user_errors()) and not list(tmp_path.iterdir())


def test_the_resume_backup_is_replaced_whole_or_kept_as_it_was(tmp_path, monkeypatch):
    """Keras wrote the backup's weights over the last ones: a disk that filled mid-write
    left a backup that `--resume` could not load. Now a failed write keeps the last backup,
    and a backup that plainly cannot fit is refused before h5py opens a file (which, failing
    on a full disk, stays open and crashed the process at exit)."""
    import errno
    import shutil

    import keras

    from models import train

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    backup = train.WholeBackup(str(tmp_path))
    backup.set_model(model)
    backup._current_epoch = 3
    backup._save_model()
    kept = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(kept) == ["latest.weights.h5", "training_metadata.json"]
    assert json.loads(kept["training_metadata.json"])["epoch"] == 3

    def fills(path, overwrite=True):  # a partial file, then the OS's answer
        Path(path).write_bytes(b"\x89HDF partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model, "save_weights", fills)
    backup._current_epoch = 4
    with pytest.raises(OSError, match="No space left"):
        backup._save_model()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == kept
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 0))
    with pytest.raises(OSError) as err:
        backup._save_model()
    assert err.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == kept


def test_a_full_disk_met_inside_a_library_is_one_line_and_ends_before_hdf5_shuts_down():
    """TensorFlow's or h5py's write on a full disk ended in their traceback; and h5py's file
    that the disk left half-written crashed HDF5 at the interpreter's shutdown (`train`
    ended in a segmentation fault, status 139, after the line). With h5py loaded, the
    process now ends at once, with status 2. (In a child: `main` would end pytest's.)"""
    script = textwrap.dedent("""
        import atexit, errno, sys
        if sys.argv[1] == "h5py":
            import h5py
        atexit.register(print, "shutdown ran")
        from iam_writers import cli

        def fills(args):  # as h5py words it
            raise OSError(errno.ENOSPC, "Can't synchronously write data (file write "
                                        "failed: ...\\n, errno = 28)")

        cli._identify = fills
        sys.exit(cli.main(["identify", "g.sqlite", "a.png"]))
    """)
    for loaded, shutdown in (("h5py", ""), ("none", "shutdown ran\n")):
        proc = subprocess.run([sys.executable, "-c", script, loaded], capture_output=True,
                              text=True, cwd=REPO, timeout=120)
        assert (proc.returncode, proc.stdout) == (2, shutdown)
        assert proc.stderr.endswith("no space left on the disk (No space left on device). "
                                    "Free space there and run it again.\n")


@pytest.mark.slow
def test_training_that_diverges_stops_at_its_first_nan_epoch_and_keeps_nothing(tmp_path,
                                                                               synth_dir):
    """A learning rate far too high trained every epoch on NaN weights, saved that model
    and ended in scikit-learn's traceback ("Input contains NaN") at evaluation."""
    from models.config import TrainConfig
    from models.train import DivergedError, train

    out = tmp_path / "run"
    with pytest.raises(DivergedError, match=r"run: training diverged: the loss became nan in "
                       r"epoch 1 at a learning rate of 1e\+308, and the weights with it; no "
                       "model was kept"):
        train(TrainConfig(config="top50", data_dir=synth_dir, out=out, epochs=3,
                          learning_rate=1e308, patch_size=32, width=8))
    assert not out.exists()
