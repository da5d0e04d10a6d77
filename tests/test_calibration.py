"""Likelihood ratios: fitted with lir at export, read by the runtime without it."""

from __future__ import annotations

import numpy as np
import pytest
from lir.algorithms.logistic_regression import LogitCalibrator

from models import calibration
from models.runtime import evidence


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
