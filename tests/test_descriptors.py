"""Classical descriptors (contour-hinge, RootSIFT + VLAD) and identification with a
descriptor alone."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from iam_writers_tfds import synth
from models import runtime
from models.runtime import descriptors, evidence
from models.runtime.descriptors import (
    CONTOUR_MIN,
    CONTOUR_STEP,
    HINGE_DOCUMENT_THRESHOLD,
    HINGE_THRESHOLD,
    KEYPOINT_SIZE,
    STROKE_WIDTH,
    VLAD_VIEWS,
    Descriptor,
    Hinge,
    References,
    Vlad,
    chi_square,
    each,
    exemplar_svms,
    ink_contours,
    rootsift,
    strokes_drawn,
    viewed,
)
from models.runtime.pages import ink_mask
from tests.conftest import cli, small_vlad_descriptor


def _square(side: int = 40) -> np.ndarray:
    image = np.full((100, 100), 255, np.uint8)
    image[30:30 + side, 20:20 + side] = 0
    return image


def _matrix(counts: np.ndarray, bins: int) -> np.ndarray:
    """The (lo, hi) histogram as a symmetric bins x bins matrix."""
    m = np.zeros((bins, bins))
    m[np.triu_indices(bins)] = counts
    return m + np.triu(m, 1).T


def test_hinge_of_a_square_by_hand():
    # legs of one pixel, four directions (0: right, 1: up, 2: left, 3: down). Along an edge
    # the two neighbours lie on opposite sides; at a corner the legs are at right angles.
    side = 40
    m = _matrix(Hinge(leg=1, bins=4)(_square(side)), 4)
    edge = 2 * (side - 2)  # the non-corner pixels of two parallel edges
    expected = np.zeros((4, 4))
    expected[0, 2] = expected[1, 3] = edge  # horizontal edges, vertical edges
    for a, b in ((0, 3), (2, 3), (1, 2), (0, 1)):  # top-left, top-right, bottom-right, ...
        expected[a, b] = 1
    np.testing.assert_array_equal(np.triu(m), expected)
    assert m.trace() == 0  # no contour pixel has both legs in one direction


def test_hinge_turns_with_the_image(synth_layout):
    """A quarter turn of the page adds a quarter of the bins to both legs' directions."""
    line = cv2.imread(str(next((synth_layout / "data_subset" / "data_subset").glob("*.png"))),
                      cv2.IMREAD_GRAYSCALE)
    hinge = Hinge(leg=10, bins=16)
    m, turned = _matrix(hinge(line), 16), _matrix(hinge(np.rot90(line).copy()), 16)
    assert m.sum() > 1000
    np.testing.assert_array_equal(turned, np.roll(np.roll(m, 4, axis=0), 4, axis=1))


def test_specks_shorter_than_two_legs_do_not_count():
    image = np.full((60, 60), 255, np.uint8)
    image[10:13, 10:13] = 0  # a 3x3 speck: an 8-pixel contour
    assert Hinge(leg=10).__call__(image).sum() == 0
    assert Hinge(leg=2)(image).sum() == 8


def test_chi_square_between_distributions():
    a, b = np.array([[4.0, 0, 0]]), np.array([[0, 2.0, 2.0], [1.0, 0, 0], [2.0, 2.0, 0]])
    np.testing.assert_allclose(chi_square(a, b), [[1.0, 0.0, 0.5 * (0.25 / 1.5 + 0.25 / 0.5)]])
    assert chi_square(b, a).T.tolist() == chi_square(a, b).tolist()


def test_descriptor_names_round_trip():
    assert Hinge.parse(Hinge(7, 12).name) == Hinge(7, 12)
    with pytest.raises(ValueError, match="hinge-lLEG-bBINS"):
        Hinge.parse("lbp")


def test_a_gallery_refuses_another_descriptor_naming_only_what_differs(tmp_path):
    gallery = runtime.Gallery.open(tmp_path / "g", create=True, descriptor=Hinge(10, 16).name)
    gallery.add("ann", ["a.png"], ["0" * 64], None, np.ones((1, Hinge().size)))
    gallery.require(None, "hinge-l10-b16")
    with pytest.raises(runtime.ModelError, match="built by descriptor hinge-l10-b16, not by "
                                                 "descriptor hinge-l8-b16"):
        gallery.require(None, "hinge-l8-b16")
    with pytest.raises(runtime.ModelError, match="built by no model, not by model abc"):
        gallery.require("abc", "hinge-l10-b16", exact=True)  # enrolling adds both


def test_fast_hinge_similarity_equals_one_minus_chi_square():
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 50, (300, 136)).astype(float)
    refs[rng.random(refs.shape) < 0.3] = 0
    refs[5] = 0  # an empty histogram
    queries = rng.integers(0, 30, (4, 136)).astype(float)
    queries[queries < 8] = 0
    queries[3] = 0
    fast = References(refs)
    fast.CHUNK = 64  # several chunks
    np.testing.assert_allclose(fast.similarity(queries), 1 - chi_square(queries, refs),
                               atol=1e-6)


@pytest.fixture(scope="module")
def lines(synth_layout) -> dict[str, dict[str, list[Path]]]:
    """writer -> form -> line files of the session's generated layout."""
    from iam_writers_tfds import kaggle_layout

    out: dict[str, dict[str, list[Path]]] = {}
    for r in kaggle_layout.scan(synth_layout)[0]:
        out.setdefault(r.writer_id, {}).setdefault(r.form_id, []).append(r.path)
    return out


def test_enroll_and_identify_with_the_hinge_alone(lines, tmp_path):
    gallery = tmp_path / "g"
    writers = sorted(lines)[:4]
    for w in writers:
        first = sorted(lines[w])[0]
        proc = cli("enroll", gallery, "--descriptor", "hinge", "--writer", w, *lines[w][first])
        assert proc.returncode == 0 and "descriptor hinge-l10-b16" in proc.stdout, proc.stderr
    info = json.loads(cli("gallery", "info", gallery, "--json").stdout)
    assert info["descriptor"] == "hinge-l10-b16" and info["model"] is None
    assert info["writers"] == 4 and info["images"] == sum(len(lines[w][sorted(lines[w])[0]])
                                                          for w in writers)
    # each writer's second form, its lines taken together as one document
    for w in writers:
        doc = lines[w][sorted(lines[w])[1]]
        proc = cli("identify", gallery, *doc, "--document", "--json")
        assert proc.returncode == 0, proc.stderr[-2000:]
        [result] = json.loads(proc.stdout)
        assert result["score"] == "hinge" and result["images"] == [str(p) for p in doc]
        assert result["top"][0]["writer"] == w
    # one image a query: one result each, in order
    probes = [lines[w][sorted(lines[w])[1]][0] for w in writers]
    proc = cli("identify", gallery, *probes, "--json", "--threshold", "2")
    results = json.loads(proc.stdout)
    assert [r["images"] for r in results] == [[str(p)] for p in probes]
    assert all(r["writer"] is None for r in results)  # nothing reaches a score of 2
    # without --threshold: the runtime's hinge thresholds, one for lines, one for documents
    [line] = json.loads(cli("identify", gallery, probes[0], "--json").stdout)
    assert line["threshold"] == HINGE_THRESHOLD != HINGE_DOCUMENT_THRESHOLD
    assert result["threshold"] == HINGE_DOCUMENT_THRESHOLD  # the last document above
    # no model, so no calibration: the note says how to get likelihood ratios
    assert line["note"] == evidence.NO_LR_WITHOUT_MODEL and "log10_lr" not in line["top"][0]


def test_descriptor_only_bad_input_gets_one_line(lines, tmp_path):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((80, 400), 240, np.uint8))
    gallery = tmp_path / "g"
    proc = cli("enroll", gallery, "--writer", "x", blank)  # no model: the hinge
    assert proc.returncode == 2 and "blank" in proc.stderr and str(blank) in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.glob("g.*"))
    w = sorted(lines)[0]
    assert cli("enroll", gallery, "--descriptor", "hinge", "--writer", w,
               lines[w][sorted(lines[w])[0]][0]).returncode == 0
    proc = cli("identify", gallery, blank)
    assert proc.returncode == 2 and "blank" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("identify", gallery, lines[w][sorted(lines[w])[1]][0], "--descriptor",
               "embedding")
    assert proc.returncode == 2 and "needs --model" in proc.stderr


def test_a_model_where_the_gallery_goes_gets_one_line_and_no_gallery(lines, tmp_path):
    """`enroll MODEL --writer W IMAGES`, the model first as `predict` takes it, named a new
    hinge gallery after the model; and a missing gallery or model among several images was
    told to --skip-unreadable, which skips images."""
    w = sorted(lines)[0]
    image = lines[w][sorted(lines[w])[0]][0]
    model, export = tmp_path / "model.tflite", tmp_path / "export"
    model.write_bytes(b"TFL3")
    export.mkdir()
    (export / "model_card.json").write_text("{}")
    for where in (model, export):
        proc = cli("enroll", where, "--writer", w, image)
        assert proc.returncode == 2 and proc.stderr.endswith(
            f": error: {where}: a model, not a gallery. Pass it with --model, and the "
            "gallery's path (e.g. galleries/staff) in its place.\n")
        with pytest.raises(runtime.GalleryError, match="a model, not a gallery"):
            runtime.Gallery.open(where, create=True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["export", "model.tflite",
                                                           "model_card.json"]
    proc = cli("identify", tmp_path / "none", image, image)
    assert proc.returncode == 2 and proc.stderr.endswith(
        f"{tmp_path / 'none.sqlite'}: no such gallery. Enroll writers first: iam-writers "
        f"enroll {tmp_path / 'none'} --writer ID IMAGES\n")
    proc = cli("predict", tmp_path / "none.tflite", image, image)
    assert proc.returncode == 2 and proc.stderr.endswith(
        "no such model. Pass an export folder, one of its model_*.tflite files or its "
        "saved_model folder.\n")


def test_identify_skip_unreadable_answers_the_others(lines, tmp_path):
    """One bad file among many: refused with how to answer the others; with
    --skip-unreadable each other image is answered, each bad one named in its place."""
    blank, corrupt = tmp_path / "blank.png", tmp_path / "corrupt.png"
    cv2.imwrite(str(blank), np.full((80, 400), 240, np.uint8))
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    missing = tmp_path / "missing.png"
    gallery = tmp_path / "g"
    w = sorted(lines)[0]
    assert cli("enroll", gallery, "--descriptor", "hinge", "--writer", w,
               *lines[w][sorted(lines[w])[0]]).returncode == 0
    good = lines[w][sorted(lines[w])[1]][:2]
    asked = [good[0], blank, missing, corrupt, good[1]]
    proc = cli("identify", gallery, *asked)
    assert proc.returncode == 2 and not proc.stdout and f"{blank}: the image is blank" in \
        proc.stderr and "--skip-unreadable answers the other 4 images" in proc.stderr
    proc = cli("identify", gallery, *asked, "--skip-unreadable", "--json", "--report",
               tmp_path / "r.html")
    assert proc.returncode == 1, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["images"] for r in results] == [[str(p)] for p in asked]
    assert [r["top"][0]["writer"] for r in (results[0], results[4])] == [w, w]
    why = [r.get("error", "") for r in results]
    assert why[0] == why[4] == "" and "writer" not in results[1]
    assert why[1].startswith(f"{blank}: the image is blank")
    assert why[2].startswith(f"{missing}: no such image file")
    assert why[3].startswith(f"{corrupt}: not a readable image")
    assert f"3 of 5 images not read, the others answered: {blank}, {missing}, {corrupt}" \
        in proc.stderr and "Traceback" not in proc.stderr
    report = (tmp_path / "r.html").read_text()
    assert report.count("Not read: ") == 3 and "the image is blank" in report
    assert report.count("id=\"query-") == 5
    # each answer is the one it gets alone
    [alone] = json.loads(cli("identify", gallery, good[1], "--json").stdout)
    assert alone == results[4]
    # a document of the images read, the others named
    proc = cli("identify", gallery, *asked, "--skip-unreadable", "--document", "--json")
    [doc] = json.loads(proc.stdout)
    assert proc.returncode == 1 and doc["images"] == [str(p) for p in good]
    assert list(doc["skipped"]) == [str(blank), str(missing), str(corrupt)]
    [both] = json.loads(cli("identify", gallery, *good, "--document", "--json").stdout)
    assert {k: v for k, v in doc.items() if k != "skipped"} == both
    # nothing read: no answer, no report
    proc = cli("identify", gallery, blank, corrupt, "--skip-unreadable", "--report",
               tmp_path / "none.html")
    assert proc.returncode == 1 and proc.stdout.splitlines() == [
        f"not read: {blank}: the image is blank (nothing 40 gray levels darker than the paper). "
        "Pass a scan of handwriting, dark ink on light paper.",
        f"not read: {corrupt}: not a readable image (truncated, corrupt or another file type). "
        "Re-download it or delete it."]
    assert "2 of 2 images not read: " in proc.stderr and not (tmp_path / "none.html").exists()


def test_fused_scores_are_standardised_by_the_statistics_of_the_export():
    fusion = {"weight": 0.25, "embedding": {"mean": 0.2, "std": 0.1},
              "hinge": {"mean": 0.9, "std": 0.02}}
    sims = {"embedding": np.array([[0.4, 0.2, 0.0]]), "hinge": np.array([[0.94, 0.9, 0.86]])}
    fused = runtime.fuse(sims, fusion)  # a card from before VLAD: the hinge's `weight`
    np.testing.assert_allclose(fused, [[0.75 * 2 + 0.25 * 2, 0.0, -2.0]])
    # a writer's score does not depend on who else is enrolled, so neither does the threshold
    np.testing.assert_allclose(runtime.fuse({k: v[:, :1] for k, v in sims.items()}, fusion),
                               fused[:, :1])
    # a card with VLAD weighs each score by name
    three = {**fusion, "vlad": {"mean": 0.1, "std": 0.05},
             "weights": {"embedding": 0.5, "hinge": 0.25, "vlad": 0.25}}
    sims["vlad"] = np.array([[0.2, 0.1, 0.15]])
    np.testing.assert_allclose(runtime.fuse(sims, three), [[1 + 0.5 + 0.5, 0, -1 - 0.5 + 0.25]])


def test_fused_scores_against_a_cohort_keep_the_order_and_discount_a_common_hand():
    """Against a cohort, a query's fused scores are taken relative to its best cohort scores:
    the candidates keep their order, and a query that scores high against everyone (the
    cohort too) scores lower than one that stands out only against its writer."""
    from models.config import COHORT_TOP

    fusion = {"weights": {"vlad": 1.0}, "vlad": {"mean": 0.0, "std": 1.0}}
    rng = np.random.default_rng(0)
    gallery = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    cohort = np.stack([rng.normal(0, 0.3, 40), rng.normal(2.5, 0.3, 40)])  # 2nd: a common hand
    plain = runtime.fuse({"vlad": gallery}, fusion)
    normalised = runtime.fuse({"vlad": gallery}, fusion, {"vlad": cohort})
    assert (np.argsort(normalised, 1) == np.argsort(plain, 1)).all()
    assert normalised[0, 0] > normalised[1, 0] + 1
    best = np.sort(cohort[1])[-COHORT_TOP:].mean()
    spread = np.concatenate([gallery[1], cohort[1]]).std()
    np.testing.assert_allclose(normalised[1], (gallery[1] - best) / spread)


def test_a_writer_absent_from_the_gallery_leaves_the_spread_as_if_never_enrolled():
    """A query scored with a writer `absent` scores the others as against a gallery without
    that writer (the stranger a benchmark or a calibration measures), and the absent one
    minus infinity; masking after scoring would keep the writer's high score in the spread
    and squeeze the others towards the cohort's best, a stranger's best score below it."""
    fusion = {"weights": {"hinge": 0.0, "vlad": 1.0}, "hinge": {"mean": 0.0, "std": 1.0},
              "vlad": {"mean": 0.0, "std": 1.0}}
    rng = np.random.default_rng(1)
    sims = {"hinge": rng.normal(0, 1, (2, 4)), "vlad": np.array([[9.0, 1.0, 0.5, 0.0],
                                                                 [0.2, 1.0, 0.5, 0.0]])}
    cohort = {name: rng.normal(0, 1, (2, 30)) for name in sims}
    absent = np.array([[True, False, False, False], [False, False, False, False]])
    fused = runtime.fuse(sims, fusion, cohort, absent)
    without = runtime.fuse({k: v[:, 1:] for k, v in sims.items()}, fusion, cohort)
    assert fused[0, 0] == -np.inf and np.isfinite(fused[1]).all()  # a zero weight: no NaN
    np.testing.assert_allclose(fused[0, 1:], without[0])
    masked_after = runtime.fuse(sims, fusion, cohort)[0, 1:]
    assert (np.abs(fused[0, 1:]) > np.abs(masked_after)).all()
    np.testing.assert_allclose(fused[1], runtime.fuse(sims, fusion, cohort)[1])


def test_a_cohort_writer_enrolled_under_its_label_is_taken_without_its_own_hand():
    """A writer whose enrolled handwriting reads as a cohort writer's is found at the
    document threshold; only one enrolled under that writer's label is taken as it: its
    column leaves that writer out of the cohort it is normalised against. A lookalike
    under another name is named, and scored as before. Under the threshold, the label is
    taken where its writer is the closest and the LR supports it."""
    from models.config import COHORT_TOP
    from models.runtime.identify import cohort_hands

    rng = np.random.default_rng(0)
    cohort = _unit(rng.normal(size=(30, 32)))
    labels = [f"c{i:02d}" for i in range(30)]
    writers = ["c07", "someone", "r0", "r1", "r2", "r3"]
    enrolled = _unit(np.concatenate([cohort[[7, 3]] + 0.4 * _unit(rng.normal(size=(2, 32))),
                                     rng.normal(size=(4, 32))]))
    document = {"weights": {"embedding": 1.0}, "embedding": {"mean": 0.0, "std": 1.0},
                "unknown_writer": {"fused": {"a": 2.2, "b": 0.0}}}
    side = runtime.Prepared(cohort, None, None)
    hands = cohort_hands(side, labels, writers, enrolled, None, document)
    assert [(writers[w], labels[c]) for w, c in zip(*np.nonzero(hands.reads))] == [
        ("c07", "c07"), ("someone", "c03")]
    assert [(writers[w], labels[c]) for w, c in zip(*np.nonzero(hands.same))] == [
        ("c07", "c07")]
    assert (hands.scores.max(axis=1)[2:] < 2.2).all()
    assert cohort_hands(side, None, writers, enrolled, None, document) is None
    # under the threshold, a label is taken where its writer is the closest and the
    # calibrated LR supports it: c12 (IAM's 286 from its second page); not c20, closest to c05
    farther = _unit(cohort[[12, 5]] + 1.2 * _unit(np.random.default_rng(1).normal(size=(2, 32))))
    more = writers + ["c12", "c20"], np.concatenate([enrolled, farther])
    for lr, taken in ((None, []), (lambda s: s - 2.0, []), (lambda s: s - 1.0, ["c12"])):
        label = cohort_hands(side, labels, *more, None, document, lr=lr)
        assert labels[label.scores[6].argmax()] == "c12" and label.scores[6].max() < 2.2
        assert labels[label.scores[7].argmax()] == "c05" and not label.reads[6:].any()
        assert [(more[0][w], labels[c]) for w, c in zip(*np.nonzero(label.same))] == [
            ("c07", "c07")] + [(w, w) for w in taken]
    # a query like c07: its column is taken against the other 29, every other as before
    query = _unit(cohort[[7]] + 0.3 * _unit(rng.normal(size=(1, 32))))
    sims, against = {"embedding": query @ enrolled.T}, {"embedding": query @ cohort.T}
    plain = runtime.fuse(sims, document, against)
    taken = runtime.fuse(sims, document, against, same_hand=hands.same)
    np.testing.assert_allclose(taken[:, 1:], plain[:, 1:])
    others = np.sort(np.delete(against["embedding"], 7, axis=1))[:, -COHORT_TOP:].mean()
    spread = np.concatenate([sims["embedding"], against["embedding"]], axis=1).std()
    assert taken[0, 0] == pytest.approx((sims["embedding"][0, 0] - others) / spread)
    assert taken[0, 0] > plain[0, 0] + 0.5


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_exemplar_svms_are_linearsvcs_solved_in_the_samples_span():
    """Each writer's exemplar SVM is the one scikit-learn's LinearSVC finds (the same loss,
    balanced classes), unit weights and the bias on their scale; left out, each negative is
    separated from the others alone. Vectors that share a common direction, as VLAD
    vectors of handwriting do, are what makes plain coordinate descent crawl."""
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    common = rng.normal(size=512)
    negatives = _unit(rng.normal(size=(12, 512)) + common)
    positives = _unit(np.concatenate([negatives[:2] + rng.normal(size=(2, 512)),
                                      rng.normal(size=(2, 512)) + common]))
    # an enrolled writer leaves out the cohort writers it reads as; the cohort, itself
    apart = np.zeros((4, 12), bool)
    apart[0, 0] = apart[2, [3, 5]] = True
    for vectors, leave_out in ((positives, apart), (negatives, np.eye(12, dtype=bool))):
        weights, bias = exemplar_svms(vectors, negatives, leave_out=leave_out)
        np.testing.assert_allclose(np.linalg.norm(weights, axis=1), 1, rtol=1e-5)
        for i, x in enumerate(vectors):
            others = negatives[~leave_out[i]]
            svm = LinearSVC(C=1.0, class_weight="balanced", tol=1e-8, max_iter=100_000).fit(
                np.concatenate([x[None], others]), np.r_[1, np.zeros(len(others))])
            norm = np.linalg.norm(svm.coef_[0])
            np.testing.assert_allclose(weights[i], svm.coef_[0] / norm, atol=1e-4)
            assert bias[i] == pytest.approx(svm.intercept_[0] / norm, abs=1e-4)
            assert x @ weights[i] + bias[i] > 0 > (others @ weights[i] + bias[i]).max()


def test_exemplar_svms_in_batches_are_those_of_all_at_once(monkeypatch):
    """Large galleries are solved a batch of writers at a time, to bound memory: each
    writer's SVM depends on the cohort alone, so batches change nothing."""
    from models.runtime import descriptors

    rng = np.random.default_rng(4)
    negatives, positives = _unit(rng.normal(size=(6, 64))), _unit(rng.normal(size=(5, 64)))
    whole = exemplar_svms(positives, negatives)
    monkeypatch.setattr(descriptors, "EXEMPLAR_BATCH", 2)
    monkeypatch.setattr(descriptors, "ENCODE_ROWS", 2)  # the weights too: blocks 2, 2, 1
    batched = exemplar_svms(positives, negatives)
    for a, b in zip(whole, batched):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert len(batched[0]) == 5


def test_a_gallery_against_a_cohort_scores_vlad_by_exemplar_svms():
    """Prepared against a cohort, a gallery's VLAD score is each writer's exemplar SVM
    against the cohort's VLAD vectors, and the cohort's own each of its writers' against
    the others; the hinge is untouched, and before `exemplars` VLAD is the cosine."""
    rng = np.random.default_rng(2)
    descriptor = small_vlad_descriptor(rng)
    hinge, vlad = descriptor.hinge, descriptor.vlad
    common = rng.normal(size=(1, 32))

    def rows(n: int) -> np.ndarray:  # hinge counts, then VLAD residual sums of a common hand
        return np.concatenate([rng.integers(1, 9, (n, hinge.size)),
                               common + rng.normal(0, 0.5, (n, 32))], axis=1)

    cohort = runtime.Prepared(None, rows(20), descriptor)
    gallery = runtime.Prepared(None, rows(3), descriptor)
    queries = rows(5)
    encoded = vlad.encode(queries[:, hinge.size:])
    before = gallery.scores(None, queries)
    np.testing.assert_allclose(before["vlad"], encoded @ gallery.encoded.T, rtol=1e-5)
    gallery.exemplars(cohort.exemplars(cohort))
    after = gallery.scores(None, queries)
    weights, bias = exemplar_svms(gallery.encoded, cohort.encoded)
    np.testing.assert_allclose(after["vlad"], encoded @ weights.T + bias, rtol=1e-4)
    np.testing.assert_allclose(after["hinge"], before["hinge"])
    weights, bias = exemplar_svms(cohort.encoded, cohort.encoded,
                                  leave_out=np.eye(len(cohort.encoded), dtype=bool))
    np.testing.assert_allclose(cohort.scores(None, queries)["vlad"], encoded @ weights.T + bias,
                               rtol=1e-4)
    assert not np.allclose(after["vlad"], before["vlad"])


@pytest.fixture(scope="module")
def generated_lines() -> dict[int, list[np.ndarray]]:
    """Four generated lines of each of four writers."""
    lines = {}
    for w in range(4):
        rng = np.random.default_rng(100 + w)
        style = synth.WriterStyle.sample(rng)
        lines[w] = [synth.render_line(style, rng) for _ in range(4)]
    return lines


def test_vlad_is_seeded_saved_and_sums_over_a_document(generated_lines, tmp_path):
    fit_on = [line for w in (0, 1) for line in generated_lines[w]]
    vlad = Vlad.fit(fit_on, centres=8, dims=16, seed=3)
    assert vlad.name == Vlad.fit(fit_on, centres=8, dims=16, seed=3).name  # seeded
    assert vlad.name != Vlad.fit(fit_on, centres=8, dims=16, seed=4).name
    vlad.save(tmp_path / "v.npz")
    back = Vlad.load(tmp_path / "v.npz")
    line = generated_lines[2][0]
    assert back.name == vlad.name and np.array_equal(back(line), vlad(line))
    # a document's residuals are the sum of its lines', so galleries sum them like counts
    doc = generated_lines[2][:2]
    wide = np.full((doc[0].shape[0] + doc[1].shape[0] + 40,
                    max(d.shape[1] for d in doc) + 40), 245, np.uint8)
    # two views (as read, and its strokes redrawn one width, upright), laid end to end
    assert vlad.views == VLAD_VIEWS and vlad.upright and vlad(doc[0]).shape == (2 * 8 * 16,)
    assert vlad.name.startswith(f"vlad-k8-d16-c5s8-w{STROKE_WIDTH:g}u-")
    one = Vlad.fit(fit_on, centres=8, dims=16, seed=3, views=(0.0,))
    np.testing.assert_array_equal(one(line), vlad(line)[:8 * 16])  # the first view alone
    assert "-w" not in one.name and one.name != vlad.name
    encoded = vlad.encode(np.stack([vlad(doc[0]) + vlad(doc[1]), vlad(wide)]))
    np.testing.assert_allclose(np.linalg.norm(encoded[0]), 1, rtol=1e-6)
    assert not encoded[1].any()  # blank paper: no keypoints, no residuals
    # many rows are encoded a block at a time, each as it would be alone
    many = np.random.default_rng(0).normal(size=(2 * descriptors.ENCODE_ROWS + 3, vlad.size))
    together = vlad.encode(many)
    assert together.shape == many.shape and together.dtype == np.float32
    np.testing.assert_array_equal(together, np.concatenate([vlad.encode(r) for r in many]))
    kept = many.copy()  # in place in its output only: the sums stay as they were
    roots = (np.sign(many) * np.sqrt(np.abs(many))).reshape(len(many), -1, 16)
    roots /= np.linalg.norm(roots, axis=2, keepdims=True)
    roots = roots.reshape(len(many), -1) / np.sqrt(roots.shape[1])  # each centre's norm 1
    np.testing.assert_allclose(together, roots, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(many, kept)
    n = len(rootsift(line))  # fewer descriptors than centres: one clear line, not k-means'
    with pytest.raises(ValueError, match=f"1 images give {n} RootSIFT descriptors: too few "
                                         f"to fit {n + 1} centres"):
        Vlad.fit([line], centres=n + 1, dims=16)


def test_rootsift_is_read_along_the_ink_contours_or_at_sifts_keypoints(generated_lines):
    line = generated_lines[0][0]
    contours = [c for c in ink_contours(line) if len(c) > CONTOUR_MIN]
    along = rootsift(line)
    # one descriptor at every CONTOUR_STEP-th pixel of each contour longer than a speck
    assert len(along) == sum(-(-len(c) // CONTOUR_STEP) for c in contours) > 0
    np.testing.assert_allclose((along ** 2).sum(axis=1), 1, rtol=1e-5)  # RootSIFT: unit L2
    assert len(rootsift(line, step=2)) > len(along)
    sift = cv2.SIFT_create()
    keypoints = sift.detect(line, None)
    assert len(rootsift(line, step=0)) == len(keypoints) != len(along)
    blank = np.full((60, 300), 245, np.uint8)
    assert rootsift(blank).shape == rootsift(blank, step=0).shape == (0, 128)


def test_the_codebook_is_fitted_on_a_seeded_sample_of_every_place_read(generated_lines):
    """Choosing the places before describing them gives the descriptors that describing all
    and then choosing did, in the order chosen (k-means++ starts from it): the codebook
    stays the one it was."""
    lines = generated_lines[0][:3]
    for width, step in ((0.0, CONTOUR_STEP), (STROKE_WIDTH, CONTOUR_STEP), (0.0, 0)):
        every = np.concatenate([rootsift(viewed(line, width, True), step) for line in lines])
        chosen = np.random.default_rng(5).choice(len(every), 40, replace=False)
        np.testing.assert_array_equal(
            Vlad._sample(lines, width, True, step, KEYPOINT_SIZE, 40, seed=5), every[chosen])
        np.testing.assert_array_equal(  # fewer places than the sample: every one
            Vlad._sample(lines, width, True, step, KEYPOINT_SIZE, len(every), seed=5), every)


def test_a_codebook_saved_before_contour_sampling_reads_sifts_keypoints(generated_lines,
                                                                         tmp_path):
    """Exports from before contour sampling saved no sampling: their galleries' rows were
    summed at SIFT's keypoints, and must stay comparable with new queries."""
    vlad = Vlad.fit(generated_lines[0], centres=4, dims=8, seed=0, step=0, views=(0.0,))
    np.savez(tmp_path / "old.npz", mean=vlad.mean[0], projection=vlad.projection[0],
             centres=vlad.centres[0])  # as `save` wrote it then: one view, unstacked
    old = Vlad.load(tmp_path / "old.npz")
    line = generated_lines[1][0]
    assert old.step == 0 and old.name == vlad.name and "-c" not in old.name.split("-d8")[1]
    np.testing.assert_array_equal(old(line), vlad(line))
    contour = Vlad(vlad.mean, vlad.projection, vlad.centres)  # the same arrays, sampled anew
    assert contour.name != old.name and contour.name.startswith("vlad-k4-d8-c5s8-")
    assert not np.allclose(contour(line), old(line))
    contour.save(tmp_path / "new.npz")
    back = Vlad.load(tmp_path / "new.npz")
    assert (back.step, back.keypoint, back.name) == (contour.step, contour.keypoint,
                                                     contour.name)


def test_vlad_sums_each_descriptors_residual_to_its_nearest_centre(generated_lines):
    vlad = Vlad.fit(generated_lines[0], centres=8, dims=16, seed=0)
    line = generated_lines[1][0]
    expected = np.zeros((len(vlad.views), 8, 16))
    for v in range(len(vlad.views)):  # the definition, one descriptor at a time
        # in float64, as VLAD sums them: a view's descriptors can near-tie two centres
        centres = vlad.centres[v].astype(np.float64)
        for x in ((vlad.local(line, v) - vlad.mean[v]) @ vlad.projection[v]).astype(float):
            k = np.argmin(np.linalg.norm(centres - x, axis=1))
            expected[v, k] += x - centres[k]
    np.testing.assert_allclose(vlad(line), expected.ravel(), rtol=1e-5, atol=1e-5)


def test_a_codebook_saved_before_upright_reads_its_redrawn_view_as_drawn(generated_lines,
                                                                          tmp_path):
    """Exports from before `upright` saved two views without it: their galleries' rows were
    summed from the redrawn lines as drawn, and must stay comparable with new queries."""
    vlad = Vlad.fit(generated_lines[0], centres=4, dims=8, seed=0, upright=False)
    np.savez(tmp_path / "old.npz", mean=vlad.mean, projection=vlad.projection,
             centres=vlad.centres, step=vlad.step, keypoint=vlad.keypoint,
             views=np.array(vlad.views))  # as `save` wrote it then
    old = Vlad.load(tmp_path / "old.npz")
    line = generated_lines[1][0]
    assert not old.upright and old.name == vlad.name and f"w{STROKE_WIDTH:g}-" in old.name
    np.testing.assert_allclose(old(line), vlad(line), rtol=1e-5)  # BLAS's order aside
    stood = Vlad(vlad.mean, vlad.projection, vlad.centres, views=vlad.views, upright=True)
    assert stood.name != old.name and f"w{STROKE_WIDTH:g}u-" in stood.name
    np.testing.assert_allclose(stood(line)[:4 * 8], old(line)[:4 * 8], rtol=1e-5)  # view 0
    assert not np.allclose(stood(line), old(line), rtol=1e-3)
    stood.save(tmp_path / "new.npz")
    assert Vlad.load(tmp_path / "new.npz").name == stood.name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_upright_finds_the_shear_that_stands_the_strokes_up(seed):
    """A line sheared by s reads as slanted by s more: `slant` finds its own slant less s
    (to a step of its grid), so that `upright` stands both alike."""
    rng = np.random.default_rng(seed)
    drawn = strokes_drawn(synth.render_line(synth.WriterStyle.sample(rng), rng),
                          STROKE_WIDTH)
    own = descriptors.slant(drawn)
    for shear in (-0.4, 0.4):
        assert abs(descriptors.slant(descriptors.sheared(drawn, shear, 255))
                   - (own - shear)) <= 0.1
    stood = descriptors.upright(drawn)
    assert stood.shape[0] == drawn.shape[0] and stood.shape[1] > drawn.shape[1]
    assert abs(descriptors.slant(stood)) <= 0.1  # upright stays upright


def test_slant_counts_the_columns_that_the_sheared_image_holds():
    """`slant` counts the sheared ink's columns from the ink pixels alone: the same counts
    as the columns of the image `sheared` warps (to its interpolation's rounding), at every
    shear it tries."""
    rng = np.random.default_rng(3)
    drawn = strokes_drawn(synth.render_line(synth.WriterStyle.sample(rng), rng),
                          STROKE_WIDTH)
    ink = (drawn < 128).astype(np.float32)
    ys, xs = np.nonzero(ink)
    for shear in descriptors.SHEARS:
        warped = descriptors.sheared(ink, shear, 0).sum(axis=0)
        counted = descriptors.sheared_columns(ys, xs, ink.shape, shear)
        assert counted.shape == warped.shape
        np.testing.assert_allclose(counted, warped, atol=5e-3)
        assert counted.sum() == pytest.approx(len(ys))


def test_strokes_drawn_one_width_whatever_the_pen():
    """The second view redraws the ink with its strokes about STROKE_WIDTH px wide: loops
    and strokes drawn with a fine and a broad pen read alike there, and not as scanned."""
    def written(pen: int) -> np.ndarray:
        image = np.full((120, 400), 250, np.uint8)
        for k in range(5):
            cv2.ellipse(image, (40 + 70 * k, 60), (22, 30), 20, 0, 360, 20, pen, cv2.LINE_AA)
            cv2.line(image, (62 + 70 * k, 30), (70 + 70 * k, 100), 20, pen, cv2.LINE_AA)
        return image

    fine, broad = written(2), written(8)
    scanned = [ink_mask(image) for image in (fine, broad)]
    drawn = [ink_mask(strokes_drawn(image, STROKE_WIDTH)) for image in (fine, broad)]
    width = [descriptors.stroke_width(ink) for ink in scanned + drawn]
    assert width[1] > 2.5 * width[0]
    assert abs(width[2] - width[3]) < 0.5 and abs(width[2] - STROKE_WIDTH) < 1.5

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    assert iou(*drawn) > 0.75 > 0.45 > iou(*scanned)
    blank = np.full((60, 300), 245, np.uint8)
    assert strokes_drawn(blank, STROKE_WIDTH).min() == 255  # no ink, none drawn


def test_descriptors_of_many_images_come_in_order_alike_on_threads(generated_lines):
    lines = [line for w in range(4) for line in generated_lines[w]]
    describe = Descriptor(Hinge(), Vlad.fit(generated_lines[0], centres=4, dims=8, seed=0))
    serial = [describe(line) for line in lines]
    for threads in (1, 3):
        # alike to float32 rounding: NumPy's BLAS sums on one thread inside the pool
        np.testing.assert_allclose(np.stack(list(each(describe, lines, threads))), serial,
                                   rtol=1e-5, atol=1e-5)
    assert list(each(describe, [])) == []


def test_a_stream_of_images_is_read_a_few_ahead_of_its_descriptors():
    read = []

    def stream():
        for i in range(50):
            read.append(i)
            yield np.full((4, 4), i, np.float64)

    rows = each(lambda image: image.sum(axis=1), stream(), threads=2)
    assert next(rows).tolist() == [0.0] * 4 and len(read) <= 5  # two per thread, and one
    assert [row[0] for row in rows] == [4.0 * i for i in range(1, 50)]


def test_features_of_many_images_are_those_of_each_alone(generated_lines):
    """Lines and a page's lines in one call, on one pool: each image's rows sum its own."""
    page, _ = synth.render_page(synth.WriterStyle.sample(np.random.default_rng(3)),
                                np.random.default_rng(4), lines=4)
    images = [generated_lines[0][0], page, generated_lines[1][0], generated_lines[2][1]]
    describe = Descriptor(Hinge(), Vlad.fit(generated_lines[0], centres=4, dims=8, seed=0))
    features = runtime.Features(None, describe, "auto")
    _, together = features(images)
    assert [r.lines for r in features.read] == [None, 4, None, None]
    alone = np.concatenate([features([image])[1] for image in images])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)
    assert not np.allclose(together[1], together[0], rtol=0.1)


def test_an_image_in_memory_is_named_as_its_caller_knows_it(generated_lines):
    """Export composes pages from a form's lines: a refused one names the form, not
    "<array>"."""
    features = runtime.Features(None, Descriptor(Hinge()), "page")
    blank = np.full((400, 600), 255, np.uint8)
    with pytest.raises(runtime.NoInkError, match="form x01-001, composed: the image is blank"):
        features([generated_lines[0][0], blank], names=["line", "form x01-001, composed"])
    with pytest.raises(runtime.NoInkError, match="<array>: the image is blank"):
        features([blank])


def test_vlad_tells_generated_writers_apart(generated_lines):
    vlad = Vlad.fit([line for w in (0, 1) for line in generated_lines[w]], centres=16,
                    dims=32, seed=0)
    writers = np.repeat(np.arange(4), 4)
    v = vlad.encode(np.stack([vlad(line) for w in range(4) for line in generated_lines[w]]))
    sims = v @ v.T
    same = (writers[:, None] == writers[None, :]) & ~np.eye(len(writers), dtype=bool)
    other = writers[:, None] != writers[None, :]
    assert sims[same].mean() > sims[other].mean() + 0.05, (sims[same].mean(), sims[other].mean())


def test_a_descriptor_holds_the_hinge_then_vlad_and_names_both(generated_lines):
    vlad = Vlad.fit(generated_lines[0], centres=4, dims=8, seed=0)
    both, hinge = Descriptor(Hinge(), vlad), Descriptor(Hinge())
    line = generated_lines[1][0]
    row = both(line)
    assert row.shape == (Hinge().size + 2 * 32,) and both.size == row.size  # two views
    counts, sums = both.split(row[None])
    np.testing.assert_array_equal(counts[0], Hinge()(line))
    np.testing.assert_array_equal(sums[0], vlad(line))
    assert hinge.split(row[None])[1] is None  # the hinge alone reads a gallery of both
    np.testing.assert_array_equal(hinge.split(row[None])[0], counts)
    assert both.name == f"hinge-l10-b16+{vlad.name}" and hinge.name == "hinge-l10-b16"
    assert Descriptor.hinge_of(both.name) == Hinge() and Descriptor.vlad_of(both.name) == \
        vlad.name and Descriptor.vlad_of(hinge.name) is None
