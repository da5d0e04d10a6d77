"""Likelihood ratios from scores, fitted with `lir` (the Netherlands Forensic Institute's
package for LR systems) on comparisons of writers that no model was trained on.

Export fits one calibrator per kind of query (a line, a document, a page) and per score.
The card stores each as a bounded monotone table (`models.runtime.evidence.LikelihoodRatio`
reads it with NumPy alone), with the rates measured on the comparisons it was fitted on.
"""

from __future__ import annotations

import numpy as np
from lir.algorithms.bayeserror import elub
from lir.algorithms.logistic_regression import LogitCalibrator
from lir.data.models import LLRData
from lir.metrics import cllr, cllr_min
from lir.plotting.expected_calibration_error import calculate_ece

from models.runtime.evidence import transformed

METHOD = ("lir LogitCalibrator (logistic regression of the score, classes weighted equally), "
          "bounded by lir's empirical lower and upper bounds (ELUB)")
HISTOGRAM_BINS = 24
MAX_DIFFERENT = 50_000  # different-writer comparisons fitted at most (a seeded sample)
STRONG = 2.0  # |log10 LR| above this is strong evidence (100 to 1 or more)
ECE_PRIOR_ODDS = -2.0  # log10 prior odds of the ECE printed: 1 to 100, a gallery of 100


# The hinge's scores (1 - a chi-square distance d) crowd just below 1: the regression reads
# them as -log d (docs/results.md, likelihood ratios).
TRANSFORMS = {"hinge": "log_distance"}


class CalibrationError(ValueError):
    """Comparisons that cannot calibrate a likelihood ratio."""


def comparisons(sims: np.ndarray, writers: np.ndarray, references: np.ndarray,
                keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, same writer?) of queries [Q] against references [R] (enrolled writers, or
    single forms), from their score matrix [Q, R]; `keep` [Q, R] leaves pairs out (a
    query against its own form)."""
    same = writers[:, None] == references[None, :]
    keep = np.ones_like(same) if keep is None else keep
    return sims[keep].astype(np.float64), same[keep]


def fit(scores: np.ndarray, same: np.ndarray, transform: str | None = None) -> dict:
    """The log10 LR of a score: same writer against a different writer, as a table of two
    knots (score, log10 LR) read by linear interpolation and held at the bounds beyond them;
    with a histogram of both kinds of score and the quality measured on them. The
    logistic regression runs on the score after `transform` (`TRANSFORMS`), which the
    table names and the runtime applies first."""
    same = np.asarray(same, bool)
    if (~same).sum() > MAX_DIFFERENT:  # ELUB holds a row per comparison and LR threshold
        keep = same.copy()
        keep[np.random.default_rng(0).choice(np.flatnonzero(~same), MAX_DIFFERENT,
                                             replace=False)] = True
        scores, same = np.asarray(scores)[keep], same[keep]
    if same.all() or not same.any():
        raise CalibrationError(f"{len(same)} comparisons, {int(same.sum())} of the same writer: "
                               "a likelihood ratio needs both kinds")
    labels = same.astype(int)
    x = transformed(scores, transform)
    calibrator = LogitCalibrator().fit(x, labels)
    llrs = calibrator.transform(x)
    slope = float(calibrator._logit.coef_[0, 0]) / np.log(10)
    intercept = float(calibrator._logit.intercept_[0]) / np.log(10)
    if slope <= 0:
        raise CalibrationError("the score does not rise with the same writer on these "
                               f"{len(same)} comparisons")
    low, high = elub(llrs.copy(), labels)
    knots = [float((low - intercept) / slope), float((high - intercept) / slope)]
    # the middle 99% of each kind's scores, so that the few same-writer ones show
    edges = np.linspace(min(np.quantile(scores[same], 0.005), np.quantile(scores[~same], 0.005)),
                        max(np.quantile(scores[same], 0.995), np.quantile(scores[~same], 0.995)),
                        HISTOGRAM_BINS + 1)
    return {"method": METHOD, "transform": transform, "score": knots,
            "log10_lr": [float(low), float(high)],
            "n_same": int(same.sum()), "n_different": int((~same).sum()),
            "histogram": {"edges": edges.round(5).tolist(),
                          "same": np.histogram(scores[same], edges)[0].tolist(),
                          "different": np.histogram(scores[~same], edges)[0].tolist()},
            "measured": quality(np.clip(llrs, low, high), same)}


def quality(llrs: np.ndarray, same: np.ndarray) -> dict:
    """How good log10 LRs are: Cllr (bits; 0 is perfect, 1 is an LR of 1 everywhere),
    Cllr-min (what calibration could reach: discrimination alone), ECE at prior odds 1 to
    100, and the rates of misleading evidence, all and strong (|log10 LR| > 2)."""
    same = np.asarray(same, bool)
    data = LLRData(features=np.asarray(llrs, np.float64), labels=same.astype(int))
    prior = 1 / (1 + 10 ** -ECE_PRIOR_ODDS)
    ece = calculate_ece(10 ** data.llrs, data.labels, np.array([prior]))[0]
    return {"cllr": float(cllr(data)), "cllr_min": float(cllr_min(data)),
            "ece_1_to_100": float(ece),
            "misleading_same": float((llrs[same] < 0).mean()),
            "misleading_different": float((llrs[~same] > 0).mean()),
            "strong_misleading_same": float((llrs[same] < -STRONG).mean()),
            "strong_misleading_different": float((llrs[~same] > STRONG).mean()),
            "n_same": int(same.sum()), "n_different": int((~same).sum())}
