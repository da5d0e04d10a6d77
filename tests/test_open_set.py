"""Open-set identification: metric losses, P x K training, enroll/identify of unseen writers."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from iam_writers_tfds import synth
from models import runtime, zoo
from models.evaluate import interval
from models.losses import BatchHardTripletLoss, CosFaceLoss, SupConLoss
from models.runtime.evidence import FEW_LINES
from pipelines import PipelineConfig, load_split, pk_dataset
from tests.conftest import cli, once


def _supcon_reference(z: np.ndarray, y: np.ndarray, t: float) -> np.ndarray:
    """Khosla et al.'s formula, anchor by anchor, in plain Python."""
    out = []
    for i in range(len(y)):
        others = [a for a in range(len(y)) if a != i]
        denom = np.log(sum(np.exp(z[i] @ z[a] / t) for a in others))
        pos = [p for p in others if y[p] == y[i]]
        out.append(-np.mean([z[i] @ z[p] / t - denom for p in pos]) if pos else 0.0)
    return np.array(out)


def test_supcon_on_known_embeddings():
    z = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0.6, 0.8]], np.float32)
    y = np.array([0, 0, 1, 1, 2])
    got = np.asarray(SupConLoss(temperature=1.0).call(y, z))
    # anchor 0: its positive at similarity 1, the other three at 0, 0, 0.6
    np.testing.assert_allclose(got[0], np.log(np.e + 2 + np.exp(0.6)) - 1, rtol=1e-5)
    assert got[4] == 0  # no other sample of writer 2
    rng = np.random.default_rng(0)
    z = rng.normal(size=(12, 8)).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    y = rng.integers(0, 4, 12)
    np.testing.assert_allclose(SupConLoss(temperature=0.1).call(y, z),
                               _supcon_reference(z, y, 0.1), rtol=1e-4, atol=1e-5)


def test_batch_hard_triplet_on_known_embeddings():
    z = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    y = np.array([0, 0, 1])
    got = np.asarray(BatchHardTripletLoss(margin=1.0).call(y, z))
    # anchor 0: positive at sqrt(2), negative at 2; anchor 1: both at sqrt(2); anchor 2 alone
    np.testing.assert_allclose(got, [np.sqrt(2) - 2 + 1, 1.0, 0.0], rtol=1e-5)
    assert float(BatchHardTripletLoss(margin=0.2).call(y, z)[0]) == 0  # margin met


def test_cosface_on_known_cosines():
    cos = np.array([[0.9, 0.1, -0.2], [0.3, 0.3, 0.3]], np.float32)
    y = np.array([0, 2])
    got = np.asarray(CosFaceLoss(margin=0.2, temperature=0.5).call(y, cos))
    for i, row in enumerate(cos):
        logits = (row - 0.2 * (np.arange(3) == y[i])) / 0.5
        expected = -(logits[y[i]] - np.log(np.exp(logits).sum()))
        np.testing.assert_allclose(got[i], expected, rtol=1e-5)
    model = zoo.patch_embed((32, 32, 1), width=4, embedding_dim=8, centres=3)
    x = np.zeros((2, 32, 32, 1), np.float32)
    assert model(x).shape == (2, 3) and model.get_layer("embedding").output.shape == (None, 8)
    assert np.abs(model(x)).max() <= 1 + 1e-5  # cosines


def test_pk_batches_feed_the_metric_loss(synth_dir):
    keras.utils.set_random_seed(0)
    cfg = PipelineConfig(patch_size=32, augment=False, seed=1)
    x, y = next(iter(pk_dataset(load_split("top50", "train", synth_dir), cfg, p=4, k=4,
                                steps=1)))
    model = zoo.patch_embed((32, 32, 1), width=4, embedding_dim=8, dropout=0.0)
    loss = SupConLoss(0.1)
    per_anchor = np.asarray(loss.call(y, model(x)))
    assert per_anchor.shape == (16,) and (per_anchor > 0).all()  # every anchor has positives
    model.compile(keras.optimizers.Adam(1e-2), loss)
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0).history["loss"]
    assert history[-1] < 0.8 * history[0]  # the P x K batch is learnable through the loss


class _StubFeatures:
    """A runtime.Features stand-in: fixed embeddings per image file name, no descriptor."""

    fingerprint, descriptor, model, local, dpi = "fp", None, "stub", None, None

    def __init__(self, folder: Path, vectors: dict[str, list[float]]):
        self.folder, self.vectors = folder, vectors
        for seed, name in enumerate(vectors):  # enrolment hashes the files
            rng = np.random.default_rng(seed)
            line = synth.render_line(synth.WriterStyle.sample(rng), rng)
            (folder / name).write_bytes(cv2.imencode(".png", line)[1].tobytes())

    def path(self, name: str) -> Path:
        return self.folder / name

    def __call__(self, images: list, thumbnails: bool = False, skip: bool = False
                 ) -> tuple[np.ndarray, None]:
        self.read, self.skipped = [runtime.Read(None, 0, 300.0)] * len(images), {}  # 300 dpi
        self.thumbnails = [None] * len(images)
        return np.stack([runtime.unit(np.asarray(self.vectors[Path(i).name], np.float32))
                         for i in images]), None


class _StubModel:
    fingerprint, identification_threshold, card = "fp", 0.5, {}


def _identifier(gallery: Path, features: _StubFeatures) -> runtime.Identifier:
    identifier = runtime.Identifier(runtime.Gallery.open(gallery), _StubModel())
    identifier.features = features
    return identifier


def test_identify_says_unknown_below_the_threshold(tmp_path):
    features = _StubFeatures(tmp_path, {"a1": [1, 0, 0], "b1": [0, 1, 0], "a?": [0.9, 0.1, 0],
                                        "c?": [0, 0.3, 1], "a2": [0.6, 0.2, 0.7]})
    p = features.path
    runtime.enroll(tmp_path / "g", features, "ann", [p("a1")])
    runtime.enroll(tmp_path / "g", features, "bob", [p("b1")])
    identifier = _identifier(tmp_path / "g", features)
    hit = identifier.rank([p("a?")])
    assert hit["writer"] == "ann" and hit["top"][0]["similarity"] > 0.5
    assert hit["score"] == "embedding" and hit["images"] == [str(p("a?"))]
    miss = identifier.rank([p("c?")])  # best similarity 0.29 < 0.5
    assert miss["writer"] is None and miss["top"][0]["writer"] == "bob"
    assert identifier.rank_each([p("a?"), p("c?")]) == [hit, miss]  # one features call
    # a document: the mean embedding of its lines, one ranking
    doc = identifier.rank([p("c?"), p("a?"), p("a2")])
    assert doc["writer"] == "ann" and len(doc["images"]) == 3
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        identifier.rank([p("a?")], top_k=0)
    with pytest.raises(ValueError, match="no images given"):
        runtime.enroll(tmp_path / "g", features, "dan", [])


def test_identify_against_an_empty_gallery(tmp_path):
    runtime.Gallery.open(tmp_path / "g", create=True, fingerprint="fp").close()
    with pytest.raises(runtime.ModelError, match="gallery is empty"):
        _identifier(tmp_path / "g", _StubFeatures(tmp_path, {}))


def test_p_x_k_batch_size_is_checked():
    proc = cli("train", "--model", "patch_embed", "--batch-size", "16", "--out", "unused")
    assert proc.returncode == 2 and "--batch-size 32" in proc.stderr
    assert not Path("unused").exists()


def _embed_export(base: Path, synth_dir: Path) -> None:
    proc = cli("train", "--model", "patch_embed", "--config", "top50", "--data-dir", synth_dir,
               "--out", base / "run", "--epochs", "8", "--patch-size", "32",
               "--patches-per-image", "16", "--writers-per-batch", "8", "--embedding-dim", "32",
               "--lr-schedule", "cosine")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((base / "run" / "metrics.json").read_text())
    assert metrics["model"] == "patch_embed" and "roc_auc" in metrics["verification"]
    proc = cli("export", base / "run", "--out", base / "export", "--quantize", "none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (base / "export.log").write_text(proc.stdout)


@pytest.fixture(scope="session")
def embed_export(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """patch_embed trained by the CLI on the 10 synthetic writers, exported to float32."""
    return once(tmp_path_factory, "embed", lambda d: _embed_export(d, synth_dir)) / "export"


@pytest.mark.slow
def test_export_calibrates_on_writers_held_out_of_training(embed_export):
    """A seeded fifth of the writers is held out of training; fusion and every
    unknown-writer threshold come from them, at the stated false-accept rate."""
    from models.runtime import Model

    run = embed_export.parent / "run"
    held = json.loads((run / "calibration_writers.json").read_text())["writers"]
    card = json.loads((embed_export / "model_card.json").read_text())
    assert len(held) == 2 and card["calibration"]["writers"] == held
    assert card["calibration"]["far"] == 0.01 and "held out" in card["fusion"]["split"]
    model = Model(embed_export / "model_float32.tflite")
    assert set(model.gallery.writers) == set(card["labels"]) - set(held)  # not trained on
    for kind in ("line", "document"):
        for score, rate in card["fusion"][kind]["rates"].items():
            assert rate["far"] <= 0.01 and 0 <= rate["frr"] <= 1, (kind, score)
        # and the rates of the rule identify applies, on the same queries
        rule = card["fusion"][kind]["unknown_writer"]
        assert set(rule["rates"]) == set(card["fusion"][kind]["rates"])
        for score, rate in rule["rates"].items():
            assert 0 <= rate["far"] <= 1 and 0 <= rate["frr"] <= 1, (kind, score)
            assert rate["n_queries"] == card["fusion"][kind]["n_queries"] and rate["gallery"] >= 2
            # documents are one query a form; lines come several a form; forms several a
            # writer (held-out writers enrol one form and are asked of the others)
            assert (rate["forms"] == rate["n_queries"]) == (kind == "document")
            assert rate["writers"] < rate["forms"]
            for name in ("far", "frr"):  # counts of the queries, each with its interval
                count = rate[name] * rate["n_queries"]
                assert count == pytest.approx(round(count))
                effect = rate[f"{name}_design_effect"]
                assert effect >= 1
                assert rate[f"{name}_95"] == pytest.approx(interval(
                    round(count), rate["n_queries"], design_effect=effect,
                    clusters=rate["writers"]))
        # and of verify's rule: every query paired with each writer enrolled alone
        assert set(rule["verify_rates"]) == set(rule["rates"])
        for score, pairs in rule["verify_rates"].items():
            rate = rule["rates"][score]
            assert pairs["same_pairs"] == rate["n_queries"]
            assert pairs["different_pairs"] == rate["n_queries"] * (rate["gallery"] - 1)
            assert (pairs["forms"], pairs["writers"]) == (rate["forms"], rate["writers"])
            for name, n in (("far", pairs["different_pairs"]), ("frr", pairs["same_pairs"])):
                assert pairs[name] * n == pytest.approx(round(pairs[name] * n))
                assert pairs[f"{name}_95"] == pytest.approx(interval(
                    round(pairs[name] * n), n, design_effect=pairs[f"{name}_design_effect"],
                    clusters=pairs["writers"]))
        # export printed the fused score's, too few queries to show 1% said so
        fused, pairs = rule["rates"]["fused"], rule["verify_rates"]["fused"]
        said = (embed_export.parent / "export.log").read_text()
        assert (f"{kind}s".ljust(9) + f" {fused['n_queries']:>4}: strangers accepted "
                f"{fused['far']:.1%} ({fused['far_95'][0]:.1%}-{fused['far_95'][1]:.1%})") in said
        assert (f"{kind}s".ljust(9) + " different-writer pairs said one writer "
                f"{pairs['far']:.1%} ({pairs['far_95'][0]:.1%}-{pairs['far_95'][1]:.1%}) of "
                f"{pairs['different_pairs']}, same-writer pairs said two") in said
        thin = said.split(" are too few to show 1% of strangers accepted")[0].splitlines()[-1]
        assert f"{fused['n_queries']} {kind}s" in thin
        # few calibration queries: the fused score's tail is fitted, the raw scores' read
        assert rule["fused"]["tail"] == "gumbel" and rule["hinge"]["tail"] == "quantile"
    assert card["identification"]["far"] <= 0.01
    assert json.loads((run / "metrics.json").read_text())["held_out_writers"] == 2
    # half the training writers are the cohort that fused scores are normalised against;
    # the other half are different writers for the thresholds
    cohort = np.load(embed_export / card["cohort"]["file"])
    training = set(card["labels"]) - set(held)
    assert set(cohort["writers"]) < training and len(cohort["writers"]) == len(training) // 2
    assert card["cohort"]["impostors"] == len(training) - len(cohort["writers"])
    assert cohort["centroids"].shape[0] == cohort["sums"].shape[0] == card["cohort"]["writers"]


@pytest.mark.slow
def test_enroll_and_identify_writers_never_seen_in_training(embed_export, tmp_path,
                                                            monkeypatch):
    from iam_writers_tfds import kaggle_layout, synth

    card = json.loads((embed_export / "model_card.json").read_text())
    assert card["identify_by"] == "gallery"
    # a different generator seed draws writing styles the model never trained on
    new = synth.generate(tmp_path / "new", synth.SynthConfig(writers=4, forms_per_writer=3,
                                                             lines_per_form=5, seed=7))
    records, _ = kaggle_layout.scan(new)
    model = embed_export / "model_float32.tflite"
    probes = {}
    for writer in sorted({r.writer_id for r in records}):
        forms = sorted({r.form_id for r in records if r.writer_id == writer})
        enrolled = [r.path for r in records if r.form_id == forms[0]]
        proc = cli("enroll", tmp_path / "g", "--model", model, "--writer", f"new-{writer}",
                   *enrolled)
        assert proc.returncode == 0, proc.stderr[-2000:]
        probes.update({r.path: f"new-{writer}" for r in records
                       if r.writer_id == writer and r.form_id != forms[0]})
    proc = cli("identify", tmp_path / "g", *probes, "--model", model, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = json.loads(proc.stdout)
    top1 = np.mean([a["top"][0]["writer"] == probes[Path(a["images"][0])] for a in answers])
    assert len(answers) == 40 and top1 >= 0.75, top1
    # each answer carries what its rule gave at calibration: the rule for writers enrolled
    # from 5 lines, as these are
    rates = card["fusion"]["line"]["unknown_writer"]["by_lines_rates"]["5"]["fused"]
    assert all(a["rule_rates"] == rates for a in answers) and rates["enrolled_lines"] == 5
    # the plain answer says them once a kind of query, not once a line (--json: in each
    # answer alone); a page and a file of two pages are both documents
    assert "this rule accepted" not in proc.stderr
    rng = np.random.default_rng(3)
    style = synth.WriterStyle.sample(rng)
    # pages of a form's worth of lines, and b of fewer (verify's note, below)
    pages = [synth.render_page(style, rng, lines=lines)[0]
             for lines in (FEW_LINES, FEW_LINES, FEW_LINES - 2)]
    cv2.imwrite(str(tmp_path / "short.png"), pages.pop())
    for k, page in enumerate(pages):
        cv2.imwrite(str(tmp_path / f"page{k}.png"), page)
    assert cv2.imwritemulti(str(tmp_path / "pages.tif"), pages)
    plain = cli("identify", tmp_path / "g", *list(probes)[:3], tmp_path / "page0.png",
                tmp_path / "pages.tif", "--model", model)
    assert plain.returncode == 0 and len(plain.stdout.splitlines()) == 5, plain.stderr[-2000:]
    assert plain.stderr.count("this rule accepted") == 2
    for kind in ("line", "document"):
        said = runtime.evidence.rule_rates_words(
            card["fusion"][kind]["unknown_writer"]["by_lines_rates"]["5"]["fused"], kind)
        assert f"note: {said}\n" in plain.stderr
    given = runtime.Identifier(runtime.Gallery.open(tmp_path / "g"), runtime.Model(model),
                               threshold=0.5)  # --threshold: not the rule, not its rates
    assert "rule_rates" not in given.rank([answers[0]["images"][0]])
    given.gallery.close()
    # VLAD scores each enrolled writer by its exemplar SVM against the cohort, as export
    # calibrated it (the card says so), the cohort's own each writer against the others
    assert card["fusion"]["exemplar"]["c"] == runtime.descriptors.EXEMPLAR_C
    identifier = runtime.Identifier(runtime.Gallery.open(tmp_path / "g"), runtime.Model(model))
    weights, _ = runtime.descriptors.exemplar_svms(identifier.prepared.encoded,
                                                   identifier.cohort.encoded)
    np.testing.assert_allclose(identifier.prepared.vlad, weights, atol=1e-6)
    own = np.eye(len(identifier.cohort.encoded), dtype=bool)
    weights, _ = runtime.descriptors.exemplar_svms(identifier.cohort.encoded,
                                                   identifier.cohort.encoded, leave_out=own)
    np.testing.assert_allclose(identifier.cohort.vlad, weights, atol=1e-6)
    identifier.gallery.close()
    # enrolment stored each writer's SVM, so identify solves only the writers without a
    # current one: none; one whose images changed since (solved for fewer); every writer
    # of a gallery from before the table
    solved, solve = [], runtime.descriptors.exemplar_duals
    monkeypatch.setattr(runtime.descriptors, "exemplar_duals",
                        lambda p, *a, **k: solved.append(len(p)) or solve(p, *a, **k))
    cohort = len(identifier.cohort.encoded)
    for change, solves in ((None, [cohort]),
                           ("UPDATE exemplars SET n_images = 1 WHERE writer_id = 2", [cohort, 1]),
                           ("DROP TABLE exemplars", [cohort, 4])):
        solved.clear()
        if change:
            db = sqlite3.connect(tmp_path / "g.sqlite")
            db.execute(change)
            db.commit()
            db.close()
        again = runtime.Identifier(runtime.Gallery.open(tmp_path / "g"), runtime.Model(model))
        assert solved == solves
        np.testing.assert_allclose(again.prepared.vlad, identifier.prepared.vlad, atol=1e-6)
        # solved in another batch, the descent stops at another sweep (EXEMPLAR_TOL): the
        # bias agrees to about 1e-7, as the weights to 1e-6
        np.testing.assert_allclose(again.prepared.bias, identifier.prepared.bias, atol=1e-6)
        again.gallery.close()
    # each writer is enrolled from a form of 5 lines: under the rule fitted for so few
    rule = card["fusion"]["line"]["unknown_writer"]
    assert set(rule["by_lines"]) == {"1", "2", "3", "4", "5"}
    assert all(set(r) == set(rule["rates"]) for r in rule["by_lines"].values())
    growth = rule["by_lines"]["5"]["fused"]
    assert growth["a"] != rule["fused"]["a"]
    w = growth["lead"]["weight"]
    for a in answers:  # each line's threshold, lowered by its best writer's lead
        assert a["threshold"] == pytest.approx((runtime.identify.lead_threshold(growth, 4)
                                                + w * a["top"][1]["similarity"]) / (1 + w))
        assert a["lead_rule"]["threshold"] == pytest.approx(
            runtime.identify.lead_threshold(growth, 4))
        assert a["rule_lines"] == 5
    # verify weighs a pair as identify does: the questioned line against the reference
    # enrolled alone, by the fused score, at the unknown-writer threshold of one writer
    rt = runtime.Model(model)
    writers = sorted({r.writer_id for r in records})
    first = {w: next(r.path for r in records if r.writer_id == w) for w in writers}
    questioned = {w: next(p for p, owner in probes.items() if owner == f"new-{w}")
                  for w in writers}
    growth = rule["by_lines"]["1"]["fused"]  # b: one line, the rule and LR for one
    lr = runtime.evidence.LikelihoodRatio.of(card, "line", "fused", 1)
    wins = 0
    for w, other in zip(writers, writers[1:] + writers[:1]):
        same = runtime.verify(rt, questioned[w], first[w])
        assert same["scored_by"] == "fused" and same["level"] == "line"
        assert same["threshold"] == pytest.approx(runtime.identify.gallery_threshold(growth, 1))
        assert same["same_writer"] == (same["score"] >= same["threshold"])
        assert same["lr_lines"] == same["rule_lines"] == 1
        assert same["log10_lr"] == pytest.approx(float(lr(same["score"])))
        assert same["rule_rates"] == card["fusion"]["line"]["unknown_writer"][
            "by_lines_verify_rates"]["1"]["fused"]  # its rule's rates: pairs, b of one line
        assert same["scores"]["embedding"] == pytest.approx(
            float(rt.embed(questioned[w]) @ rt.embed(first[w])), abs=1e-5)
        wins += same["score"] > runtime.verify(rt, questioned[w], first[other])["score"]
    assert wins >= 3, wins
    alone = runtime.verify(rt, questioned[writers[0]], first[writers[0]], "embedding")
    assert alone["scored_by"] == "embedding" and set(alone["scores"]) == {"embedding"}
    drawn: dict[str, bytes] = {}
    paged = runtime.verify(rt, tmp_path / "page0.png", tmp_path / "page1.png", drawn=drawn)
    assert paged["level"] == "page" and paged["lines_a"] == paged["lines_b"] == FEW_LINES
    # b of fewer lines than FEW_LINES says how many: a line, a short page; a page of as many
    # says nothing
    assert "b_lines" not in paged and same["b_lines"] == 1
    assert runtime.verify(rt, tmp_path / "page0.png", tmp_path / "short.png")["b_lines"] == \
        FEW_LINES - 2
    for side, k in (("a", 0), ("b", 1)):  # for the report: each page as it was read
        scan = runtime.Model.read(tmp_path / f"page{k}.png", input="auto")
        assert drawn[side] == runtime.evidence.thumbnail(scan.pages, scan.lines), side
    assert paged["threshold"] == pytest.approx(runtime.identify.gallery_threshold(
        card["fusion"]["document"]["unknown_writer"]["fused"], 1))
    assert paged["rule_rates"] == card["fusion"]["document"]["unknown_writer"]["verify_rates"][
        "fused"]
    # an export whose cohort file went missing says so, naming it
    other = tmp_path / "other"
    other.mkdir()
    for name in ("model_card.json", "model_float32.tflite", card["vlad"]["file"]):
        (other / name).write_bytes((embed_export / name).read_bytes())
    proc = cli("identify", tmp_path / "g", next(iter(probes)), "--model",
               other / "model_float32.tflite")
    assert proc.returncode == 2 and "cohort.npz: missing from the export" in proc.stderr
    assert "Traceback" not in proc.stderr
    (other / card["cohort"]["file"]).write_text("not arrays")
    with pytest.raises(runtime.ModelError, match="cohort.npz: damaged"):
        _ = runtime.Model(other / "model_float32.tflite").cohort
    (other / card["cohort"]["file"]).unlink()
    # the hinge alone needs neither the VLAD codebook nor the cohort
    (other / card["vlad"]["file"]).unlink()
    hinge = runtime.features_for(runtime.Model(other / "model_float32.tflite"), "hinge")
    assert hinge.local.vlad is None and hinge.descriptor == "hinge-l10-b16"


@pytest.mark.slow
def test_a_training_writer_enrolled_is_not_measured_against_its_own_hand(
        embed_export, synth_layout, tmp_path, monkeypatch, capsys):
    """Someone may enrol a writer the export's cohort holds (IAM's writers, with a model
    trained on IAM), under its label. Its queries would be normalised against its own hand
    and its SVM trained to reject it; so its column is taken without that training writer,
    and enrolment says so. The rule that finds such a writer by score is tested on chosen
    vectors (test_descriptors.py): a cohort of four synthetic writers cannot set it, so
    here every enrolled writer is made to read as its closest cohort writer."""
    from iam_writers import cli as commands
    from iam_writers_tfds import kaggle_layout, synth

    real = runtime.identify.cohort_hands

    def every_closest(cohort, labels, writers, centroids, sums, document, encoded, lr):
        lowered = {**document, "unknown_writer": {"fused": {"a": -1e9, "b": 0.0}}}
        return real(cohort, labels, writers, centroids, sums, lowered, encoded, lr)

    monkeypatch.setattr(runtime.identify, "cohort_hands", every_closest)
    model = runtime.Model(embed_export / "model_float32.tflite")
    trained = model.cohort_writers[0]
    records, _ = kaggle_layout.scan(synth_layout)
    forms = sorted({r.form_id for r in records if r.writer_id == trained})
    new = synth.generate(tmp_path / "new", synth.SynthConfig(writers=1, forms_per_writer=1,
                                                             lines_per_form=5, seed=7))
    features = runtime.features_for(model, None)
    runtime.enroll(tmp_path / "g", features, trained,
                   [r.path for r in records if r.form_id == forms[0]])
    runtime.enroll(tmp_path / "g", features, "stranger", sorted(new.rglob("*.png")))
    identifier = runtime.Identifier(runtime.Gallery.open(tmp_path / "g"), model)
    hands = {h["writer"]: h for h in identifier.in_cohort()}
    assert hands[trained]["reads_as"] == trained and hands[trained]["taken_without"]
    assert not hands["stranger"]["taken_without"]
    # its SVM leaves that training writer out of its negatives; the stranger's keeps them all
    row = identifier.writers.index(trained)
    apart = np.array([w == trained for w in model.cohort_writers])
    gallery, against = identifier.prepared, identifier.cohort
    for r, negatives in ((row, against.encoded[~apart]), (1 - row, against.encoded)):
        weights, bias = runtime.descriptors.exemplar_svms(gallery.encoded[[r]], negatives)
        np.testing.assert_allclose(gallery.vlad[r], weights[0], atol=1e-6)
        assert gallery.bias[r] == pytest.approx(bias[0], abs=1e-6)
    # its other forms' lines score higher than when measured against its own hand
    queries = [r.path for r in records if r.writer_id == trained and r.form_id != forms[0]]
    emb, counts = identifier.features(queries)
    naive = runtime.Prepared(gallery.centroids, gallery.sums, gallery.descriptor).exemplars(
        against)
    fixed = identifier.score_matrix(emb, counts)[:, row]
    measured = naive.scores(emb, counts, identifier.fusion["line"], against)["fused"][:, row]
    assert (fixed > measured).mean() > 0.9, (fixed, measured)
    # enrolment's notes: one taken as the training writer, one told how to say so
    for writer, said in ((trained, "so taken as that writer. Its scores leave that writer"),
                         ("stranger", f"rename {tmp_path / 'g'} stranger ")):
        commands._warn_alike(identifier, argparse.Namespace(layout=None, writer=writer,
                                                            gallery=tmp_path / "g"))
        note = capsys.readouterr().err
        assert note.startswith(f"note: {writer}'s enrolled handwriting reads as training "
                               "writer ") and said in note, note
    # `enroll --layout`: one note, naming those taken and those that need a rename
    commands._warn_alike(identifier, argparse.Namespace(layout=tmp_path, writer=None,
                                                        gallery=tmp_path / "g"))
    note = capsys.readouterr().err
    assert note.startswith("note: 1 writer(s) are training writers of the model's cohort, "
                           f"enrolled under their labels ({trained}): each is taken") and (
        ". 1 writer(s) read as a training writer of the cohort under another name (stranger "
        "as ") in note and note.count("note:") == 1, note
    # identify says so beside an answer that names it (any answer: `--threshold` as low as
    # can be), in its JSON and its report
    reference = next(r.path for r in records if r.form_id == forms[0])
    naming = runtime.Identifier(identifier.gallery, model, threshold=-1e9)
    drawn: dict[str, bytes] = {}
    named = naming.rank([reference], drawn=drawn)
    assert named["writer"] == trained and named["in_cohort"]["taken_without"], named
    report = runtime.evidence.identify_report(tmp_path / "r.html", [named], naming, drawn)
    assert (f"Note: {trained}'s enrolled handwriting reads as training writer {trained}'s"
            in report.read_text())
    identifier.gallery.close()
    # verify says when its reference reads as a training writer of the cohort
    hand = runtime.verify(model, queries[0], reference)["b_in_cohort"]
    assert hand["reads_as"] in model.cohort_writers and hand["score"] >= hand["threshold"]
    commands._gallery_alike(argparse.Namespace(
        gallery=tmp_path / "g", model=embed_export / "model_float32.tflite", threads=None,
        descriptor=None, report=None, json=True))
    listed = json.loads(capsys.readouterr().out)
    assert {p["writer"]: p["taken_without"] for p in listed if p.get("in_cohort")} == {
        trained: True, "stranger": False}


def test_training_without_held_out_writers_keeps_its_epoch_length(synth_dir, monkeypatch):
    """Filtering the held-out writers leaves a split of unknown length: the P x K epoch is
    sized from the lines left (it once fell to the 2-step floor)."""
    from models import train
    from models.config import TrainConfig
    from pipelines import load_split

    cfg = TrainConfig(model="patch_embed", config="top50", data_dir=synth_dir, batch_size=32,
                      writers_per_batch=8, patches_per_image=16)
    held = train.calibration_writers(cfg)
    every = [int(ex["writer"]) for ex in load_split("top50", "train", synth_dir)]
    raw = train._without(load_split("top50", "train", synth_dir), held)
    left = [int(ex["writer"]) for ex in raw]
    assert len(held) == 2 and not set(held) & set(left)
    assert len(left) == sum(w not in held for w in every) < len(every)
    steps = []
    monkeypatch.setattr(train, "pk_dataset", lambda raw, pcfg, p, k, n: steps.append(n))
    train._pk(raw, cfg.pipeline_config(), cfg)
    assert steps == [len(left) * 16 // 32]


def test_calibration_holds_out_writers_with_one_form_too(monkeypatch):
    """The same seeded share of the one-form writers is held out beside the multi-form
    ones (they can only be different writers, which is what the unknown-writer thresholds
    rest on); the multi-form choice is the one a seed always made."""
    import tensorflow as tf

    from models import train
    from models.config import TrainConfig

    forms = {w: [f"f{w}-{k}" for k in range(1 if w >= 10 else 3)] for w in range(30)}
    rows = [(w, f) for w, fs in forms.items() for f in fs]
    monkeypatch.setattr(train, "load_split", lambda config, split, data_dir: (
        tf.data.Dataset.from_tensor_slices({"writer": [w for w, _ in rows],
                                            "form_id": [f for _, f in rows]})
        if split == "train" else tf.data.Dataset.from_tensor_slices(
            {"writer": tf.zeros([0], tf.int64), "form_id": tf.zeros([0], tf.string)})))
    cfg = TrainConfig(model="patch_embed", config="top50", seed=3)
    held = train.calibration_writers(cfg)
    multi, single = [w for w in held if w < 10], [w for w in held if w >= 10]
    assert len(multi) == 2 and len(single) == 4  # a fifth of 10, and of 20
    assert held == train.calibration_writers(cfg) and held == sorted(held)
    first = sorted(np.random.default_rng(3).choice(range(10), 2, replace=False).tolist())
    assert multi == first
    assert train.calibration_writers(TrainConfig(model="patch_cnn", config="top50")) == []
