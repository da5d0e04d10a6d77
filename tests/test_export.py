"""Export (SavedModel + TFLite variants + card + parity) and the edge commands."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from models import runtime
from models.evaluate import design_effect, interval
from tests.conftest import REPO, calibration_writers, cli

VARIANTS = ("float32", "float16", "dynamic", "int8")


@pytest.fixture(scope="session")
def bad_images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    paper = np.clip(rng.normal(235, 3, (120, 900)), 0, 255).astype(np.uint8)
    cv2.imwrite(str(d / "blank.png"), paper)  # scanner noise, no ink
    cv2.imwrite(str(d / "tiny.png"), np.zeros((8, 8), np.uint8))
    (d / "notes.png").write_text("not an image")
    return {"blank": d / "blank.png", "tiny": d / "tiny.png", "not_image": d / "notes.png",
            "missing": d / "missing.png"}


@pytest.mark.slow
def test_export_writes_savedmodel_all_tflite_variants_card_and_parity(exported, trained_run):
    assert (exported / "saved_model" / "saved_model.pb").is_file()
    for v in VARIANTS:
        assert (exported / f"model_{v}.tflite").stat().st_size > 10_000, v
    # no temporary folder left but the one of the export killed before it (conftest)
    assert sorted(p.name for p in exported.parent.iterdir() if p.name.startswith(".")) \
        == json.loads((exported.parent / "killed.json").read_text())
    card = json.loads((exported / "model_card.json").read_text())
    labels = json.loads((trained_run / "labels.json").read_text())
    assert card["labels"] == labels == json.loads((exported / "labels.json").read_text())
    assert card["input"]["patch_size"] == 64 and card["input"]["normalization"] == "unit"
    assert card["input"]["line_band"] == 128  # the runtime normalises lines as training did
    assert card["metrics"]["n_images"] == 80 and card["files"]["int8"] == "model_int8.tflite"
    assert 0 < card["verification"]["threshold"] <= 1
    assert card["identification"]["compared"].startswith("each image's own writer")
    assert -1 <= card["identification"]["threshold"] <= 1
    rows = {r["variant"]: r for r in card["parity"]}
    assert set(rows) == {"keras", *VARIANTS}
    assert rows["float32"]["top1_agreement"] == 1.0
    assert rows["float32"]["max_abs_prob_diff"] < 1e-3
    assert rows["int8"]["size_bytes"] <= 0.3 * rows["float32"]["size_bytes"]
    assert rows["int8"]["accuracy"] >= rows["keras"]["accuracy"] - 0.04
    assert "| int8 |" in (exported / "parity.md").read_text()


@pytest.mark.slow
def test_savedmodel_signatures_match_the_runtime(exported, heldout):
    import tensorflow as tf

    from models.runtime import Model

    loaded = tf.saved_model.load(str(exported / "saved_model"))
    assert {"classify", "embed", "windows"} <= set(loaded.signatures)
    runtime = Model(exported / "saved_model")
    agree = 0
    for path, _ in heldout[:10]:
        image = tf.io.decode_png(tf.io.read_file(str(path)), channels=1)
        out = loaded.signatures["classify"](image=image)
        ids = [i.decode() for i in out["writer_ids"].numpy()]
        scores = out["scores"].numpy()
        assert len(ids) == 5 and np.all(np.diff(scores) <= 0)
        agree += ids[0] == runtime.predict(path)["top"][0]["writer"]
        emb = loaded.signatures["embed"](image=image)["embedding"].numpy()
        assert abs(np.linalg.norm(emb) - 1) < 1e-4
    assert agree >= 9  # in-graph TF preprocessing vs the OpenCV reference


@pytest.mark.slow
def test_predict_on_int8_names_the_writers_of_heldout_images(exported, heldout):
    paths = [p for p, _ in heldout]
    proc = cli("predict", exported / "model_int8.tflite", *paths, "--json", "--top-k", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert [r["image"] for r in results] == [str(p) for p in paths]
    right = np.mean([r["top"][0]["writer"] == w for r, (_, w) in zip(results, heldout)])
    card = json.loads((exported / "model_card.json").read_text())
    int8 = next(r for r in card["parity"] if r["variant"] == "int8")
    assert right == pytest.approx(int8["accuracy"])  # the CLI is the path parity measured
    assert right >= 0.9  # 10 writers; the demo's 8-epoch model measured 1.00


@pytest.mark.slow
def test_litert_reuses_one_interpreter_per_input_width(exported, heldout):
    from models.runtime.model import INTERPRETERS, Model

    model = Model(exported / "model_float32.tflite")
    paths, widths = [], set()
    for path, _ in heldout:
        width = model.inputs(path)[0].shape
        if len(widths | {width}) > INTERPRETERS:
            break
        paths.append(path)
        widths.add(width)
    first = np.stack([model.scores(p)[0] for p in paths])
    misses = model.backend.runner.cache_info().misses
    assert misses == len(widths)
    again = np.stack([model.scores(p)[0] for p in paths])
    assert model.backend.runner.cache_info().misses == misses
    np.testing.assert_allclose(again, first, atol=1e-6)


@pytest.mark.slow
def test_evaluate_scores_lines_as_the_exported_model_does(exported, trained_run):
    """One inference path: train's closing evaluation (metrics.json) and the export's
    parity row for the Keras model score the same test lines the same way."""
    card = json.loads((exported / "model_card.json").read_text())
    keras_row = next(r for r in card["parity"] if r["variant"] == "keras")
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["n_images"] == keras_row["n_images"]
    assert metrics["top1"] == pytest.approx(keras_row["accuracy"], abs=1e-12)
    assert card["metrics"]["top1"] == metrics["top1"]


@pytest.mark.slow
def test_verify_enroll_identify_round_trip(exported, by_writer, tmp_path):
    model = exported / "model_float32.tflite"
    a, b = list(by_writer)[:2]
    same = json.loads(cli("verify", model, *by_writer[a][:2], "--json").stdout)
    other = json.loads(cli("verify", model, by_writer[a][0], by_writer[b][0], "--json").stdout)
    assert same["score"] > other["score"]
    gallery = tmp_path / "gallery"
    for writer in (a, b):
        proc = cli("enroll", gallery, "--model", model, "--writer", writer, *by_writer[writer][:3])
        assert proc.returncode == 0, proc.stderr[-2000:]
    proc = cli("identify", gallery, by_writer[a][3], by_writer[b][3], "--model", model, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert [r["top"][0]["writer"] for r in results] == [a, b]
    assert proc.stderr == "scoring by fused\n"  # the score it was not asked for
    proc = cli("identify", gallery, by_writer[a][3], by_writer[a][4], "--document")
    assert proc.returncode == 0 and proc.stdout.startswith(f"document of 2 images: {a} (hinge:")
    assert "no --model given" in proc.stderr
    # the export calibrated a fusion with the contour-hinge; identify uses it by default and
    # each score's own threshold; --descriptor picks one score
    card = json.loads((exported / "model_card.json").read_text())
    fusion = card["fusion"]
    assert fusion["descriptor"] == f"hinge-l10-b16+{card['vlad']['name']}"
    assert (exported / card["vlad"]["file"]).is_file()
    for kind in ("line", "document"):
        weights = fusion[kind]["weights"]
        assert set(weights) == {"embedding", "hinge", "vlad"}
        assert all(0 <= w <= 1 for w in weights.values())
        assert sum(weights.values()) == pytest.approx(1)
    assert results[0]["score"] == "fused"
    # unknown-writer thresholds are set for the gallery's size (2 writers here), for writers
    # enrolled from so few lines (3 here: the rule fitted for 3), and lowered by the best
    # writer's lead over the second
    unknown = fusion["line"]["unknown_writer"]
    growth = unknown["by_lines"]["3"]["fused"]
    assert growth["b"] >= 0 and growth["sizes"][0] == 1 and growth != unknown["fused"]
    lead = growth["lead"]
    assert lead["sizes"][0] == 2 and lead["weight"] == 0.5
    for r in results:
        second = r["top"][1]["similarity"]
        rule = lead["thresholds"][0]  # measured for a gallery of two
        assert r["lead_rule"] == pytest.approx({"weight": 0.5, "threshold": rule,
                                                "second": second})
        assert r["threshold"] == pytest.approx((rule + 0.5 * second) / 1.5)
        assert (r["writer"] is None) == (r["top"][0]["similarity"] < r["threshold"])
        assert r["rule_rates"] == unknown["by_lines_rates"]["3"]["fused"]  # the rule's own
    proc = cli("identify", gallery, by_writer[a][3], "--model", model, "--threshold", "-50",
               "--json")  # a threshold given is on the best score alone
    [given] = json.loads(proc.stdout)
    assert given["threshold"] == -50 and given["writer"] == a
    assert "lead_rule" not in given and "rule_lines" not in given  # the card's rules not used
    for score in ("embedding", "hinge", "vlad"):
        proc = cli("identify", gallery, *by_writer[a][3:5], "--model", model, "--descriptor",
                   score, "--document", "--json")
        [doc] = json.loads(proc.stdout)
        assert doc["score"] == score and doc["top"][0]["writer"] == a, proc.stderr[-2000:]
        growth = fusion["document"]["unknown_writer"]["by_lines"]["3"][score]["lead"]
        assert doc["threshold"] == pytest.approx(
            (growth["thresholds"][0] + 0.5 * doc["top"][1]["similarity"]) / 1.5)
    # a gallery of the hinge alone serves no embedding
    proc = cli("enroll", tmp_path / "h", "--descriptor", "hinge", "--writer", a, by_writer[a][0])
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = cli("identify", tmp_path / "h", by_writer[a][3], "--model", model)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    card = json.loads((exported / "model_card.json").read_text())
    assert (f"built by no model and descriptor hinge-l10-b16, not by model "
            f"{card['fingerprint']} and descriptor {fusion['descriptor']}. ") in proc.stderr
    # ... until it is rebuilt for the model, from the files it was enrolled from
    # (the export folder itself reads as its float32 model)
    proc = cli("gallery", "rebuild", tmp_path / "h", tmp_path / "h2", "--model", exported)
    assert proc.returncode == 0 and f"descriptor {fusion['descriptor']})" in proc.stdout
    proc = cli("identify", tmp_path / "h2", by_writer[a][3], "--model", model, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["top"][0]["writer"] == a
    # the int8 model of the same export shares the fingerprint, so the gallery serves it too
    proc = cli("identify", gallery, by_writer[a][4], "--model", exported / "model_int8.tflite")
    assert proc.returncode == 0 and a in proc.stdout


def test_an_export_folder_reads_as_its_float32_model_or_the_variant_it_holds(exported,
                                                                            tmp_path):
    assert runtime.Model(exported).path == exported / "model_float32.tflite"
    card = json.loads((exported / "model_card.json").read_text())
    only = tmp_path / "only_int8"
    only.mkdir()
    (only / "model_card.json").write_text(json.dumps(card))
    shutil.copy(exported / card["files"]["int8"], only)
    assert runtime.Model(only).path == only / card["files"]["int8"]
    (only / card["files"]["int8"]).unlink()
    with pytest.raises(runtime.ModelError, match="only_int8: an export folder without its "
                       "model files"):
        runtime.Model(only)


@pytest.mark.slow
def test_bad_inputs_get_one_clear_line_and_exit_2(exported, bad_images, heldout, tmp_path):
    model = exported / "model_int8.tflite"
    cases = {
        "missing": "no such image file",
        "not_image": "not a readable image",
        "blank": "blank",
        "tiny": "too small",
    }
    for key, message in cases.items():
        proc = cli("predict", model, bad_images[key])
        assert proc.returncode == 2 and message in proc.stderr, (key, proc.stderr[-500:])
        assert str(bad_images[key]) in proc.stderr and "Traceback" not in proc.stderr
    # among good images: the others answered, each bad one named in its place
    asked = [heldout[0][0], *(bad_images[key] for key in cases), heldout[1][0]]
    proc = cli("predict", model, *asked, "--skip-unreadable", "--json")
    results = json.loads(proc.stdout)
    assert proc.returncode == 1 and [r["image"] for r in results] == list(map(str, asked))
    assert [("error" in r, "top" in r) for r in results] == [(False, True)] + [
        (True, False)] * len(cases) + [(False, True)]
    assert all(m in r["error"] for m, r in zip(cases.values(), results[1:]))
    assert f"{len(cases)} of {len(asked)} images not read, the others answered" in proc.stderr
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"\x00" * 64)
    proc = cli("predict", fake, heldout[0][0])
    assert proc.returncode == 2 and "not an iam-writers export" in proc.stderr
    (tmp_path / "model_card.json").write_text((exported / "model_card.json").read_text())
    proc = cli("predict", fake, heldout[0][0])
    assert proc.returncode == 2 and "not a TFLite model" in proc.stderr

    gallery = tmp_path / "g"
    proc = cli("enroll", gallery, "--model", model, "--writer", "x", bad_images["blank"])
    assert proc.returncode == 2 and "blank" in proc.stderr and not list(tmp_path.glob("g*"))
    proc = cli("identify", gallery, heldout[0][0], "--model", model)
    assert proc.returncode == 2 and "Enroll writers first" in proc.stderr
    assert cli("enroll", gallery, "--model", model, "--writer", "x", heldout[0][0]).returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    card = json.loads((exported / "model_card.json").read_text())
    card["fingerprint"] = "0" * 16
    (other / "model_card.json").write_text(json.dumps(card))
    (other / "m.tflite").write_bytes(model.read_bytes())
    proc = cli("identify", gallery, heldout[1][0], "--model", other / "m.tflite")
    assert proc.returncode == 2 and "vlad.npz: missing from the export" in proc.stderr
    vlad = (exported / card["vlad"]["file"]).read_bytes()
    (other / card["vlad"]["file"]).write_bytes(vlad[:300])  # cut short
    with pytest.raises(runtime.ModelError, match="vlad.npz: damaged"):
        _ = runtime.Model(other / "m.tflite").vlad
    shutil.copy(exported / card["vlad"]["file"], other)
    proc = cli("identify", gallery, heldout[1][0], "--model", other / "m.tflite")
    assert proc.returncode == 2 and f"not by model {'0' * 16}" in proc.stderr
    (tmp_path / "g.sqlite").write_bytes((tmp_path / "g.sqlite").read_bytes()[:2048])
    proc = cli("identify", gallery, heldout[1][0], "--model", model)
    assert proc.returncode == 2 and "corrupt gallery (truncated" in proc.stderr


@pytest.mark.slow
def test_runtime_runs_where_tensorflow_cannot_be_imported(exported, heldout):
    """The edge runtime imports numpy, OpenCV and ai-edge-litert only."""
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "tensorflow_datasets"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(REPO)!r})
        from models.runtime import Model
        m = Model({str(exported / "model_int8.tflite")!r})
        print(m.predict({str(heldout[0][0])!r})["top"][0]["writer"])
        assert not any(k.startswith("tensorflow") for k in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] in {w for _, w in heldout}


@pytest.mark.slow
def test_failed_int8_gate_leaves_nothing_behind(trained_run, tmp_path, capsys):
    from models.export import DegradedExport, ExportConfig, export

    out = tmp_path / "exp"
    with pytest.raises(DegradedExport, match="--allow-degraded"):
        export(ExportConfig(trained_run, out, quantize=("int8",), min_agreement=1.01,
                            calibration_samples=100))
    assert not out.exists() and not list(tmp_path.iterdir())
    # refused as soon as its parity is known, before the calibration's minutes
    printed = capsys.readouterr().out
    assert "| int8 |" in printed and "calibrating" not in printed


@pytest.mark.slow
def test_a_stride_the_line_pass_cannot_take_is_refused(trained_run, tmp_path):
    from models.export import ExportConfig, ExportError, export

    proc = cli("export", trained_run, "--out", tmp_path / "x", "--stride", "24")  # not x16
    assert proc.returncode == 2 and "multiple of 16" in proc.stderr, proc.stderr[-500:]
    assert "Traceback" not in proc.stderr
    with pytest.raises(ExportError, match="multiple of 16"):  # wider than the 64-px patches
        export(ExportConfig(trained_run, tmp_path / "y", stride=80))
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_run_fitted_on_all_its_validation_lines_is_not_calibrated_on_them(trained_run,
                                                                            tmp_path):
    """A run trained on train + validation that held nothing out (one from before the
    calibration forms) has no line left unseen: thresholds set on memorised lines would not
    hold, so export refuses before writing anything."""
    from models.export import ExportConfig, ExportError, export

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("plots", "logs"))
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "fit_on_validation": True}))
    (run / "calibration_writers.json").write_text(json.dumps({"writers": []}))
    with pytest.raises(ExportError, match="no line it has not seen is left to calibrate"):
        export(ExportConfig(run, tmp_path / "x"))
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_evaluating_on_lines_the_run_trained_on_says_so(trained_run, tmp_path, capsys):
    from models.evaluate import evaluate

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("plots", "logs"))
    evaluate(run, "validation")
    assert "note:" not in capsys.readouterr().out  # it chose its epochs on them, no more
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "fit_on_validation": True}))
    (run / "calibration_writers.json").write_text(json.dumps({"writers": [],
                                                              "forms": ["s00-001"]}))
    evaluate(run, "validation")
    assert (f"note: {run} trained on the validation lines (but its 1 calibration forms): "
            "these figures measure what it learnt") in capsys.readouterr().out


def test_export_refuses_unknown_quantization_and_an_existing_folder(tmp_path):
    proc = cli("export", tmp_path, "--out", tmp_path / "x", "--quantize", "int4")
    assert proc.returncode == 2 and "allowed: none, float16, dynamic, int8" in proc.stderr
    from models.export import ExportConfig, export

    with pytest.raises(FileExistsError, match="already exists"):
        export(ExportConfig(tmp_path, tmp_path))


def test_a_model_with_a_lambda_layer_is_refused(tmp_path):
    import keras

    from models.config import TrainConfig

    (tmp_path / "config.json").write_text(json.dumps(TrainConfig(out=tmp_path).to_json()))
    (tmp_path / "labels.json").write_text('["a", "b"]')
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.save(tmp_path / "model.keras")
    for cmd in (("evaluate", tmp_path), ("export", tmp_path, "--out", tmp_path / "e")):
        proc = cli(*cmd)
        assert proc.returncode == 2 and "Lambda layer" in proc.stderr, proc.stderr[-1000:]
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("family", ["patch_cnn", "patch_embed"])
def test_line_pass_equals_the_patch_model_on_one_window(family):
    """The exported single pass over a line gives, for a line one patch wide, exactly the
    patch model's outputs, and one row per window for wider lines."""
    import dataclasses

    import keras

    from models.config import TrainConfig
    from models.inference import windows_fn
    from models.train import build_model

    cfg = TrainConfig(model=family, patch_size=32, width=4, embedding_dim=8)
    model = build_model(cfg, 5)[0]
    fn = windows_fn(model, cfg, dataclasses.replace(cfg.pipeline_config(), patch_stride=16))[2]
    x = np.random.default_rng(0).uniform(size=(1, 32, 32, 1)).astype(np.float32)
    out = {k: v.numpy() for k, v in fn(x).items()}
    emb = keras.Model(model.inputs, model.get_layer("embedding").output)([x]).numpy()
    np.testing.assert_allclose(out["embedding"], emb, atol=1e-5)
    if family == "patch_cnn":
        np.testing.assert_allclose(np.exp(out["log_probs"]), model(x).numpy(), atol=1e-5)
    wide = np.zeros((1, 32, 32 + 4 * 16, 1), np.float32)
    assert fn(wide)["embedding"].shape == (5, 8)


def test_fusion_weights_are_chosen_by_margin_not_by_a_near_tie():
    """Two scores name every query right; the one that puts the own writer far above the
    others has the larger margin, whatever the scale of each row."""
    from models.export import _margin

    rng = np.random.default_rng(0)
    label = np.arange(6)
    others = rng.normal(0, 0.1, (6, 12))
    close, far = others.copy(), others.copy()
    close[label, label] = others.max(1) + 0.01  # first by a hair
    far[label, label] = others.max(1) + 0.5
    present = np.arange(12)
    assert _margin(close, label, present, False) == pytest.approx(0.01)
    assert _margin(far, label, present, True) > 10 * _margin(close, label, present, True)
    # per-query spread: a query's scale does not weigh it more than another's
    scaled = far * np.arange(1, 7)[:, None]
    assert _margin(scaled, label, present, True) == pytest.approx(
        _margin(far, label, present, True))


def test_the_rule_for_a_few_lines_is_the_strictest_of_its_draws():
    """Each gallery size's threshold is the highest of the draws' (a stranger named costs
    more than a genuine query answered unknown); a + b ln(n) is fitted through them."""
    from models.export import _strictest

    sizes = [1, 2, 4, 8]

    def growth(thresholds: list[float], lead: list[float]) -> dict:
        return {"a": 0.0, "b": 0.0, "sizes": sizes, "tail": "gumbel", "thresholds": thresholds,
                "lead": {"weight": 0.5, "sizes": sizes[1:], "thresholds": lead}}

    draws = [growth([1.0, 1.3, 1.5, 1.8], [2.0, 2.1, 2.4]),
             growth([1.2, 1.2, 1.6, 1.7], [1.9, 2.3, 2.2]),
             growth([0.9, 1.4, 1.4, 1.9], [2.1, 2.0, 2.3])]
    out = _strictest([{"line": {"fused": g}} for g in draws])["line"]["fused"]
    assert out["thresholds"] == [1.2, 1.4, 1.6, 1.9]
    assert out["lead"] == {"weight": 0.5, "sizes": [2, 4, 8], "thresholds": [2.1, 2.3, 2.4]}
    b, a = np.polyfit(np.log(sizes), out["thresholds"], 1)
    assert (out["a"], out["b"]) == pytest.approx((a, b)) and out["tail"] == "gumbel"


def test_export_says_how_loosely_its_few_calibration_queries_pin_the_rates():
    """The unknown-writer rule's rates, each with its 95% interval; a note where the queries
    are too few to show the false-accept rate asked for, and none where they are enough."""
    from models.export import rates_words

    def rates(n: int, accepted: int, rejected: int) -> dict:
        return {"far": accepted / n, "far_95": interval(accepted, n), "frr": rejected / n,
                "frr_95": interval(rejected, n), "gallery": 11, "n_queries": n}

    fusion = {"line": {"unknown_writer": {"rates": {"fused": rates(400, 2, 40)}}},
              "document": {"unknown_writer": {"rates": {"fused": rates(11, 1, 0)}}}}
    words = rates_words(fusion, "fused", 0.01)
    assert words[0].startswith("the unknown-writer rule (fused)") and "11 writers" in words[0]
    assert "strangers accepted 0.5% (0.1%-1.8%), genuine answered unknown 10.0% (7.2%-13.4%)" \
        in words[1] and words[1].split()[:2] == ["lines", "400:"]
    assert "strangers accepted 9.1% (0.2%-41.3%)" in words[2]
    assert words[3].startswith("  11 documents are too few to show 1% of strangers accepted")
    fusion["document"]["unknown_writer"]["rates"]["fused"] = rates(400, 0, 3)
    assert len(rates_words(fusion, "fused", 0.01)) == 3  # enough queries: no note
    assert rates_words(fusion, "fused", 0.001)[-1].startswith("  400 lines and 400 documents")
    # 400 lines of 10 writers count as fewer: none accepted no longer shows 1%
    fusion["line"]["unknown_writer"]["rates"]["fused"] = {**rates(400, 0, 3), "forms": 40,
                                                          "writers": 10}
    assert rates_words(fusion, "fused", 0.01)[-1].startswith("  400 lines are too few")
    fusion["line"]["unknown_writer"]["rates"]["fused"] = {**rates(400, 0, 3), "forms": 10}
    assert rates_words(fusion, "fused", 0.01)[-1].startswith(
        "  400 lines are too few")  # an older card's, counted in forms
    assert rates_words({"line": {"unknown_writer": {}}, "document": {"unknown_writer": {}}},
                       "fused", 0.01) == []  # an older card's rule: nothing measured to say


def test_verify_rates_are_those_of_each_writer_enrolled_alone():
    """`verify` enrols its reference alone: the card's rates of its rule are measured on
    every pair of a calibration query and a writer in a gallery of one, whose fused score
    (its spread taken over that writer's score and the cohort's) is not the gallery's."""
    from models import export
    from models.runtime.identify import gallery_threshold

    descriptor, lines, cohort, calibrated = calibration_writers(noise=0.8)
    present, ref_emb, ref_counts, enrolled = export._enrolled_one_form(*lines)
    queries = tuple(a[~np.isin(lines[1], enrolled[1])] for a in lines)
    # each query against each writer enrolled alone, as verify scores it
    alone = np.array([[runtime.Prepared(ref_emb[[j]], ref_counts[[j]], descriptor).scores(
        e[None], c[None], calibrated, cohort)["fused"][0, 0] for j in range(6)]
        for e, c in zip(queries[2], queries[3])])
    own = queries[0][:, None] == present[None, :]
    growth = {"a": float(np.median(alone[own])), "b": 0.05}  # both rates neither 0 nor 1
    fusion = {level: {**calibrated, "unknown_writer": {name: growth for name in
                                                       ("embedding", "hinge", "fused")}}
              for level in ("line", "document")}
    export._rule_rates(queries, (present, ref_emb, ref_counts, enrolled), fusion, descriptor,
                       cohort, seed=0)
    rates = fusion["line"]["unknown_writer"]["verify_rates"]["fused"]
    said = alone >= gallery_threshold(growth, 1)
    assert 0 < said[~own].mean() < 1 and 0 < (~said[own]).mean() < 1
    assert rates["far"] == said[~own].mean() and rates["frr"] == (~said[own]).mean()
    assert (rates["different_pairs"], rates["same_pairs"]) == (18 * 5, 18)
    assert (rates["forms"], rates["writers"]) == (6, 6)
    # a different-writer pair errs with the others of its asked and of its enrolled writer
    asked = np.broadcast_to(queries[0][:, None], own.shape)[~own]
    enrolled = np.broadcast_to(present[None, :], own.shape)[~own]
    assert rates["far_design_effect"] == design_effect(said[~own], asked, enrolled)
    assert rates["far_95"] == pytest.approx(interval(
        int(said[~own].sum()), 90, design_effect=rates["far_design_effect"], clusters=6))
    assert rates["frr_design_effect"] == design_effect(~said[own], queries[0])
    # in the gallery of six the same pairs score otherwise: the spread holds all six
    gallery = runtime.Prepared(ref_emb, ref_counts, descriptor).scores(
        queries[2], queries[3], calibrated, cohort)["fused"]
    assert not np.allclose(gallery, alone)
    # the words verify and its report say of them
    words = runtime.evidence.verify_rates_words(rates, "line")
    assert words.startswith("At calibration, with one writer at a time enrolled from a "
                            "form's lines (as b best is: a page), this rule said \"same "
                            f"writer\" of {int(said[~own].sum())} of 90 pairs of different "
                            "writers")
    assert words.endswith("the 18 lines asked came from 6 forms of 6 writers, and the "
                          "intervals allow for the pairs of one writer, asked or enrolled, "
                          "erring together.")
    document = fusion["document"]["unknown_writer"]["verify_rates"]["fused"]
    assert (document["different_pairs"], document["same_pairs"]) == (30, 6)


def test_the_rule_for_writers_of_few_lines_states_rates_measured_with_so_few():
    """Each rule for writers enrolled from k lines has rates of its own: every calibration
    writer enrolled from k lines of its form (a draw the rule was not fitted on), the
    queries asked of that gallery; identify and verify state them, and say so."""
    from models import export
    from models.runtime.identify import measured_rates

    descriptor, lines, cohort, calibrated = calibration_writers(noise=0.8)
    present, ref_emb, ref_counts, enrolled = export._enrolled_one_form(*lines)
    queries = tuple(a[~np.isin(lines[1], enrolled[1])] for a in lines)
    # the six writers, each enrolled from one line of the three of its form, as identify
    # would score the queries against them
    assert all((enrolled[0] == w).sum() == 3 for w in present)
    first = np.array([enrolled[1][enrolled[0] == w][0] for w in present])
    w, f, e, c = export._few_lines((present, first), enrolled, 1, 0, by_form=True,
                                   draw=export.FEW_LINE_DRAWS)
    assert (w == present).all() and not np.allclose(e, ref_emb)
    scores = runtime.Prepared(e, c, descriptor).scores(queries[2], queries[3], calibrated,
                                                       cohort)["fused"]
    # rules (one threshold at every gallery size) that answer some genuine queries unknown
    form = {"a": float(np.quantile(scores.max(1), 0.7)), "b": 0.0}
    few = {"a": float(np.quantile(scores.max(1), 0.3)), "b": 0.0}
    fusion = {level: {**calibrated, "unknown_writer": {
        **{name: form for name in ("embedding", "hinge", "fused")},
        "by_lines": {"1": {name: few for name in ("embedding", "hinge", "fused")}}}}
        for level in ("line", "document")}
    export._rule_rates(queries, (present, ref_emb, ref_counts, enrolled), fusion, descriptor,
                       cohort, seed=0)
    rule = fusion["line"]["unknown_writer"]
    rates = rule["by_lines_rates"]["1"]["fused"]
    assert rates["enrolled_lines"] == 1 and 0 < rates["frr"] < 1
    assert rates["frr"] == (scores.max(1) < few["a"]).mean() != rule["rates"]["fused"]["frr"]
    own = queries[0][:, None] == present[None, :]
    stranger = runtime.Prepared(e, c, descriptor).scores(  # the query's writer left out
        queries[2], queries[3], calibrated, cohort, own)["fused"][~own].reshape(len(own), -1)
    stranger = stranger.max(1)
    assert rates["far"] == (stranger >= few["a"]).mean()
    assert rule["by_lines_verify_rates"]["1"]["fused"]["same_pairs"] == own.sum()
    # what identify and verify state: these for a writer of one line, the form's else
    assert measured_rates(fusion, "line", "fused", lines=1) is rates
    assert measured_rates(fusion, "line", "fused", lines=2) is rule["rates"]["fused"]
    assert measured_rates(fusion, "line", "fused", pairs=True, lines=1)[
        "enrolled_lines"] == 1
    said = runtime.evidence.rule_rates_words(rates, "line")
    assert said.startswith("At calibration, in a gallery of 6 writers each enrolled from 1 "
                           "line of a form, this rule accepted ")
    said = runtime.evidence.verify_rates_words(
        rule["by_lines_verify_rates"]["1"]["fused"], "line")
    assert said.startswith("At calibration, with one writer at a time enrolled from 1 line "
                           "of a form (as b is here), this rule said")
    printed = export.rates_words(fusion, "fused", 0.01)
    k1 = next(line for line in printed if line.startswith("    k = 1: lines "))
    assert (f"lines {rates['far']:.1%} ({rates['far_95'][0]:.1%}-{rates['far_95'][1]:.1%}), "
            f"{rates['frr']:.1%}") in k1 and "; documents " in k1
    assert printed[printed.index(k1) - 1].startswith("  each enrolled from k lines")
