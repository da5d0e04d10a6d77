"""The open-set benchmark's scoring: a stranger is a query scored against the gallery
without its writer, not a query whose writer's column is masked after scoring."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import small_vlad_descriptor

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


class Spread:
    """An identifier stand-in whose scores depend on the gallery, as the cohort-normalised
    fused score does: each query's cosines over their spread across the writers present."""

    score, fusion, cohort = "cosine", None, None

    def __init__(self, centroids: np.ndarray):
        self.writers, self.centroids = [f"w{i}" for i in range(len(centroids))], centroids
        self.prepared = SimpleNamespace(scores=self.cosines, alone=self.cosines)

    def cosines(self, emb, counts, *_):
        return {"cosine": emb @ self.centroids.T}

    def score_matrix(self, emb, counts, document=False, absent=None):
        sims = self.prepared.scores(emb, counts)["cosine"]
        gone = np.zeros(sims.shape, bool) if absent is None else absent
        spread = np.ma.masked_array(sims, gone).std(axis=1).filled(1)[:, None]
        return np.where(gone, -np.inf, sims / spread)

    def thresholds(self, scores, document=False):
        return np.full(len(scores), 2.0)

    def unknown_rule(self, document):
        return None


@pytest.fixture()
def open_set(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("open_set")


def test_strangers_are_scored_against_the_gallery_without_their_writer(open_set):
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(4, 8))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    records = [SimpleNamespace(writer_id=f"w{i % 4}", form_id=f"f{i % 4}-{i // 8}")
               for i in range(16)]
    emb = centroids[[i % 4 for i in range(16)]] + rng.normal(0, 0.3, (16, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    identifier, probe = Spread(centroids), list(range(16))

    levels = open_set.level_scores(identifier, emb, None, records, probe)
    strangers = open_set.level_scores(identifier, emb, None, records, probe, strangers=True)
    for level in ("line", "document"):
        sims, label = levels[level]
        unknown, same = strangers[level]
        assert (same == label).all() and (unknown[np.arange(len(label)), label] == -np.inf).all()
        others = label[:, None] != np.arange(4)[None, :]
        assert not np.allclose(unknown[others], sims[others])  # not masked after scoring
    unknown, label = strangers["line"]
    for q, w in enumerate(label):  # each line against the gallery without its writer
        kept = centroids[np.arange(4) != w] @ emb[q]
        np.testing.assert_allclose(unknown[q, np.arange(4) != w], kept / kept.std())

    figures = open_set.figures(identifier, levels, {w: [] for w in identifier.writers},
                               strangers)
    accepted = strangers["line"][0].max(1) >= 2.0
    assert figures["line_rejection"] == pytest.approx(1 - accepted.mean())
    # a writer enrolled alone (verify's pairs) scores as before
    pairs = open_set.level_scores(open_set.Alone(identifier), emb, None, records, probe)
    assert pairs["line"][0].shape == (16, 4)


def test_the_anchor_is_the_plain_cosine_and_every_row_gets_the_oracle(open_set):
    """The anchor row compares its own VLAD vectors by cosine however the identifier it
    wraps scores VLAD (exemplar SVMs); without a calibrated threshold it gets top-k and the
    oracle's rejection: identify's statistic, its threshold read off the unknown queries'."""
    from models import runtime

    rng = np.random.default_rng(4)
    descriptor = small_vlad_descriptor(rng)
    hinge, vlad = descriptor.hinge, descriptor.vlad
    hands = rng.normal(size=(4, 32))

    def rows(writers, noise=0.6) -> np.ndarray:  # hinge counts, VLAD sums near a hand
        return np.concatenate([rng.integers(1, 9, (len(writers), hinge.size)),
                               hands[writers] + rng.normal(0, noise, (len(writers), 32))], axis=1)

    sums = rows([0, 1, 2, 3])
    prepared = runtime.Prepared(None, sums, descriptor)
    prepared.exemplars(runtime.Prepared(None, rows(list(range(4)) * 5), descriptor))
    wrapped = SimpleNamespace(writers=["w0", "w1", "w2", "w3"], prepared=prepared,
                              unknown_rule=lambda document: {"lead": {"weight": 0.5}})
    # the anchor's own rows: each writer enrolled from two of them, summed
    enrolled_rows = rows([0, 0, 1, 1, 2, 2, 3, 3])
    anchor = open_set.Anchor(wrapped, descriptor, enrolled_rows,
                             {f"w{w}": [2 * w, 2 * w + 1] for w in range(4)})
    records = [SimpleNamespace(writer_id=f"w{i % 4}", form_id=f"f{i % 4}") for i in range(24)]
    counts = rows([i % 4 for i in range(24)], noise=1.5)
    levels = open_set.level_scores(anchor, None, counts, records, list(range(24)))
    encoded = vlad.encode(counts[:, hinge.size:])
    writers = enrolled_rows[0::2] + enrolled_rows[1::2]
    cosine = encoded @ vlad.encode(writers[:, hinge.size:]).T
    np.testing.assert_allclose(levels["line"][0], cosine, rtol=1e-5)
    assert not np.allclose(levels["line"][0], prepared.scores(None, counts)["vlad"])
    strangers = open_set.level_scores(anchor, None, counts, records, list(range(24)),
                                      strangers=True)
    figures = open_set.figures(anchor, levels, {w: [] for w in anchor.writers}, strangers)
    # decided as identify's rule decides: the best score plus half its lead over the second
    second, best = np.sort(strangers["line"][0], axis=1)[:, -2:].T
    bar = np.quantile(best + 0.5 * (best - second), 1 - open_set.ORACLE_FAR)
    second, best = np.sort(cosine, axis=1)[:, -2:].T
    oracle = figures["line_false_rejection_oracle"]
    assert oracle == pytest.approx((best + 0.5 * (best - second) < bar).mean())
    assert 0 < oracle < 1
    assert "line_rejection" not in figures and "document_false_rejection" not in figures
    assert len(figures["queries"]["document"]["rejected_oracle"]) == 4


def test_misleading_evidence_for_writers_who_are_not_enrolled_is_counted_as_shown(open_set):
    """Each unknown query's top candidate, and every comparison but its own writer's (minus
    infinity: left out of the gallery), read through each writer's calibrator, as identify
    reads it (a writer enrolled from a few lines has one of its own)."""
    from models import calibration
    from models.runtime.evidence import LikelihoodRatio

    rng = np.random.default_rng(0)
    table, own = (calibration.fit(np.r_[rng.normal(mean, 1.0, 300), rng.normal(0.0, 1.0, 3000)],
                                  np.r_[np.ones(300, bool), np.zeros(3000, bool)])
                  for mean in (2.0, 3.0))

    class Identifier:  # writer c is enrolled from a few lines: its calibrator is its own
        writers, score = ["a", "b", "c"], "fused"

        def lr_lines(self, writer):
            return 1 if writer == "c" else None

        def likelihood_of(self, level, score, lines):
            return LikelihoodRatio(own if lines == 1 else table) if level == "line" else None

    unknown = {"line": (np.array([[-np.inf, 0.0, 4.0], [1.0, -np.inf, 1.0]]), None),
               "document": (np.array([[-np.inf, 9.0, 9.0]]), None)}
    others = {"line": (np.array([[-2.0, -1.0, -np.inf]]), None),
              "document": (np.array([[0.0, -np.inf, 0.0]]), None)}
    counts = open_set.stranger_lrs(Identifier(), unknown, others)
    assert set(counts) == {"line"}  # the card calibrates no documents
    lr, lr_c = LikelihoodRatio(table), LikelihoodRatio(own)
    top = np.r_[lr_c(4.0), lr(1.0), lr(-1.0)]  # the top candidates: c, a, b
    every = np.r_[lr(0.0), lr_c(4.0), lr(1.0), lr_c(1.0), lr(-2.0), lr(-1.0)]
    assert counts["line"] == {"queries": 3, "top_over_1": (top > 0).sum(),
                              "top_over_100": (top > 2).sum(), "comparisons": 6,
                              "over_1": (every > 0).sum(), "over_100": (every > 2).sum()}
    assert counts["line"]["top_over_100"] == 1 and 1 < counts["line"]["over_1"] < 6
    assert lr(1.0) > 0 > lr_c(1.0)  # c's score 1.0 counts as misleading by a's table only


def test_gallery_b_is_filled_to_its_size_with_seeded_distractors(open_set):
    extra = [f"e{i:03d}" for i in range(137)]
    for unseen in (14, 16):
        writers = [f"u{i}" for i in range(unseen)]
        distractors, rest = open_set.distractor_writers(extra, writers, 80, seed=0)
        assert len(writers) + len(distractors) == 80
        assert sorted(distractors + rest) == extra
        assert distractors == open_set.distractor_writers(extra, writers, 80, seed=0)[0]
    assert open_set.distractor_writers(extra[:10], ["u0"], 80, seed=0)[0] == extra[:10]


def test_a_kept_run_is_reused_only_for_the_writers_it_was_trained_on(open_set, monkeypatch,
                                                                      tmp_path):
    """A run trained on another split's writers may have trained on this split's test
    writers, and one trained by another recipe is another model: it is trained again,
    never measured."""
    import models.export
    import models.runtime
    import models.train
    from iam_writers import data

    trained = []
    monkeypatch.setattr(open_set, "linked_layout", lambda records, writers, folder: folder)
    monkeypatch.setattr(data, "build", lambda cfg: None)

    def train(cfg):
        trained.append(cfg.out)
        cfg.out.mkdir(parents=True)
        (cfg.out / "metrics.json").write_text("{}")

    monkeypatch.setattr(models.train, "train", train)
    monkeypatch.setattr(models.export, "export", lambda cfg: None)
    monkeypatch.setattr(models.runtime, "Model", lambda path: path)
    args = SimpleNamespace(epochs=1, seed=0, metric_loss="cosface")
    for known in (["a", "b"], ["b", "a"], ["a", "c"]):
        open_set.train_and_export(args, [], known, tmp_path)
    assert len(trained) == 2  # the same writers in another order reuse the run
    (tmp_path / "training.txt").unlink()  # a run from before the record: unknown
    open_set.train_and_export(args, [], ["a", "c"], tmp_path)
    assert len(trained) == 3
    open_set.train_and_export(SimpleNamespace(epochs=2, seed=0, metric_loss="cosface"), [],
                              ["a", "c"], tmp_path)
    assert len(trained) == 4


def test_few_lines_galleries_draw_k_of_each_writers_lines_and_the_baseline_drops_the_rule(
        open_set):
    """`--few-lines`: each writer enrolled from k of its enrolled lines (seeded; all of a
    writer with k or fewer), and the baseline the same model judging every writer by the
    form's rule: its card without the rule for writers of few lines, the model's untouched."""
    members = {"a": [0, 1, 2, 3, 4], "b": [5, 6], "c": [7, 8, 9]}
    drawn = open_set.few_line_members(members, 2, seed=0, draw=0)
    assert drawn["b"] == [5, 6] and all(len(rows) == 2 for rows in drawn.values())
    assert all(set(drawn[w]) <= set(members[w]) for w in members)
    assert drawn == open_set.few_line_members(members, 2, seed=0, draw=0)  # seeded
    assert any(open_set.few_line_members(members, 2, seed=0, draw=d) != drawn
               for d in range(1, 6))  # another draw, other lines
    rule = {"fused": {"a": 1.0}, "by_lines": {"2": {}}, "by_lines_rule": "...",
            "by_lines_rates": {}, "by_lines_verify_rates": {}, "rates": {}}
    model = SimpleNamespace(card={"fusion": {level: {"unknown_writer": dict(rule)}
                                             for level in ("line", "document")}},
                            fingerprint="f")
    baseline = open_set.form_rule_model(model)
    for level in ("line", "document"):
        assert baseline.card["fusion"][level]["unknown_writer"] == {"fused": {"a": 1.0},
                                                                    "rates": {}}
        assert "by_lines" in model.card["fusion"][level]["unknown_writer"]
    assert baseline.fingerprint == "f"
