"""Likelihood ratios: fitted with lir at export, read by the runtime without it."""

from __future__ import annotations

import numpy as np
import pytest
from lir.algorithms.logistic_regression import LogitCalibrator

from models import calibration
from models.runtime import evidence
from tests.conftest import calibration_writers


def _scores(seed: int = 0, n_same: int = 300, n_different: int = 3000):
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(2.0, 1.0, n_same), rng.normal(0.0, 1.0, n_different)]
    return scores, np.r_[np.ones(n_same, bool), np.zeros(n_different, bool)]


def test_a_fitted_lr_is_monotone_bounded_and_read_alike_without_lir():
    scores, same = _scores()
    table = calibration.fit(scores, same)
    lr = evidence.LikelihoodRatio(table)
    grid = np.linspace(-10, 10, 2001)
    llrs = lr(grid)
    assert np.all(np.diff(llrs) >= 0) and llrs[-1] > llrs[0]  # rises with the score
    low, high = lr.bounds
    # no LR more extreme than the comparisons support: 1 / (n + 1) of the other kind
    assert -np.log10(same.sum() + 1) <= low < 0 < high <= np.log10((~same).sum() + 1)
    assert llrs.min() == low and llrs.max() == high
    # the runtime's table reads as lir's own fitted calibrator, held at the ELUB bounds
    fitted = LogitCalibrator().fit(scores, same.astype(int)).transform(scores)
    np.testing.assert_allclose(lr(scores), np.clip(fitted, low, high), rtol=1e-9, atol=1e-9)
    # two equal Gaussians 2 apart: log10 LR = (2 s - 2) / ln 10, within the bounds
    inside = (grid > table["score"][0]) & (grid < table["score"][1])
    np.testing.assert_allclose(llrs[inside], (2 * grid[inside] - 2) / np.log(10), atol=0.15)


def test_support_says_where_the_lr_is_held_at_its_bound():
    """Two writers past the upper knot share one LR; the words say why, so a reader does
    not take them as equally likely by their scores."""
    lr = evidence.LikelihoodRatio({"score": [-1.0, 2.0], "log10_lr": [-2.5, 2.9]})
    assert lr.support(0.5) == evidence.verbal(float(lr(0.5)))  # inside: the scale alone
    for score in (2.0, 5.0):
        assert lr.support(score) == ("moderately strong support for the same writer, at the "
                                     "bound of its calibration (a higher score is weighed "
                                     "no higher)")
    assert lr.support(-3.0).startswith("moderately strong support for different writers, at "
                                       "the bound of its calibration (a lower score")


def test_quality_tells_a_calibrated_lr_from_an_overconfident_one():
    scores, same = _scores(1)
    lr = evidence.LikelihoodRatio(calibration.fit(scores, same))
    test_scores, test_same = _scores(2)
    good = calibration.quality(lr(test_scores), test_same)
    bad = calibration.quality(4 * lr(test_scores), test_same)  # the same order, too strong
    assert good["cllr"] < 0.6 and good["cllr"] - good["cllr_min"] < 0.05
    assert bad["cllr_min"] == pytest.approx(good["cllr_min"])  # as discriminating
    assert bad["cllr"] > good["cllr"] + 0.1
    assert bad["strong_misleading_different"] > good["strong_misleading_different"] == 0


def test_scores_that_do_not_separate_the_writers_calibrate_nothing():
    scores, same = _scores()
    with pytest.raises(calibration.CalibrationError, match="does not rise"):
        calibration.fit(-scores, same)
    with pytest.raises(calibration.CalibrationError, match="both kinds"):
        calibration.fit(scores, np.ones_like(same))


@pytest.mark.parametrize("llr,words", [
    (0.3, "weak support for the same writer"),
    (1.5, "moderate support for the same writer"),
    (-2.5, "moderately strong support for different writers"),
    (3.2, "strong support for the same writer"),
    (-5.0, "very strong support for different writers"),
    (7.0, "extremely strong support for the same writer"),
    (0.0, "no support for either hypothesis (LR 1)"),
])
def test_the_verbal_scale(llr, words):
    assert evidence.verbal(llr) == words


def test_a_table_that_falls_is_refused():
    with pytest.raises(ValueError, match="rising"):
        evidence.LikelihoodRatio({"score": [0.0, 1.0], "log10_lr": [1.0, -1.0]})


def test_different_writers_calibrate_as_scored_with_the_query_writer_out(monkeypatch):
    """The fused score's spread holds every gallery score of a query: fitted with the
    query's own writer enrolled, different writers read low, and an unknown writer's best
    match would get too high an LR. So export scores them with that writer left out."""
    from models import export, runtime

    descriptor, lines, cohort, calibrated = calibration_writers(noise=0.6)
    writers, forms, emb, counts = lines
    fitted = {}
    monkeypatch.setattr(export, "_fitted",
                        lambda comparisons, level, notes: fitted.setdefault(level, comparisons))
    export._likelihood_ratios(lines, export._by_form(*lines), None,
                              {"line": calibrated, "document": calibrated}, descriptor, "test",
                              [], cohort)
    ref_writers, ref_forms, ref_emb, ref_counts = export._by_form(*lines)
    gallery = runtime.Prepared(ref_emb, ref_counts, descriptor)
    own = writers[:, None] == ref_writers[None, :]
    keep = forms[:, None] != ref_forms[None, :]
    enrolled = gallery.scores(emb, counts, calibrated, cohort)["fused"]
    left_out = gallery.scores(emb, counts, calibrated, cohort, own)["fused"]
    scores, same = fitted["line"]["fused"]
    np.testing.assert_allclose(scores[same], enrolled[keep & own])
    np.testing.assert_allclose(scores[~same], left_out[keep & ~own])
    # the query's own writer in the spread reads the other writers lower
    assert left_out[keep & ~own].mean() > enrolled[keep & ~own].mean()
    # and again with each form a reference of k of its lines (seeded): the same pairs, the
    # scores of so few lines
    for k in export.FEW_LINE_LRS:
        few, labels = fitted[f"line against {k} line(s)"]["fused"]
        np.testing.assert_array_equal(labels, same)
        if k < 3:  # the forms hold 3 lines: 1 or 2 of them score otherwise
            assert (few != scores).any()
        else:  # all 3 of them: the form itself
            np.testing.assert_allclose(few, scores)
    one = export._few_lines(export._by_form(*lines)[:2], lines, 1, 0, by_form=True)
    form = forms == one[1][0]
    assert any(np.allclose(one[3][0], counts[i]) for i in np.flatnonzero(form))  # one line
    np.testing.assert_array_equal(one[3], export._few_lines(
        export._by_form(*lines)[:2], lines, 1, 0, by_form=True)[3])  # seeded
    # impostors (one form each) add different writers to the lines' comparisons only
    impostors = (np.array([6, 6, 7, 7]), np.array([12, 12, 13, 13]), emb[:4], counts[:4])
    alone = dict(fitted)
    fitted.clear()
    export._likelihood_ratios(lines, export._by_form(*lines), None,
                              {"line": calibrated, "document": calibrated}, descriptor, "test",
                              [], cohort, impostors)
    scores, same = fitted["line"]["fused"]
    # 40 lines, each against the 13 forms not its own; the impostors have no second form
    assert same.sum() == alone["line"]["fused"][1].sum() == 36
    assert len(same) == 40 * 13 and len(alone["line"]["fused"][1]) == 36 * 11
    for level in ("document", "page"):
        for name, (scores, labels) in fitted[level].items():
            np.testing.assert_array_equal(scores, alone[level][name][0])
            np.testing.assert_array_equal(labels, alone[level][name][1])
