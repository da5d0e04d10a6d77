"""Evaluation plots people can read: the confusion matrix is recall per true writer."""

from __future__ import annotations

import numpy as np
import pytest

from models import plots


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures the plots would save, kept open for inspection."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, out, dpi: figures.append(fig))
    return figures


def _lines(per_writer: dict[int, int], wrong: dict[int, tuple[int, int]]):
    """(y_true, y_pred): each writer's lines, `wrong[w] = (n, other)` given to `other`."""
    y_true = np.concatenate([np.full(n, w) for w, n in per_writer.items()])
    y_pred = y_true.copy()
    for w, (n, other) in wrong.items():
        y_pred[np.flatnonzero(y_true == w)[:n]] = other
    return y_true, y_pred


def test_confusion_is_normalised_per_true_writer():
    # one writer with 419 lines, four with 30: the big writer's count must not set the scale
    y_true, y_pred = _lines({0: 419, 1: 30, 2: 30, 3: 30, 4: 30}, {0: (19, 1), 3: (6, 2)})
    present, counts, recall = plots.confusion_matrices(y_true, y_pred)
    assert present.tolist() == [0, 1, 2, 3, 4]
    assert counts[0, 0] == 400 and counts[0, 1] == 19 and counts[3, 2] == 6
    np.testing.assert_allclose(recall.sum(axis=1), 1.0)
    assert recall[0, 0] == pytest.approx(400 / 419) and recall[3, 3] == pytest.approx(0.8)
    assert recall[1, 1] == 1.0  # a 30-line writer's right answers fill the scale as well


def test_a_writer_only_predicted_gets_an_empty_row():
    present, counts, recall = plots.confusion_matrices(np.array([0, 0, 1]), np.array([0, 2, 1]))
    assert present.tolist() == [0, 1, 2] and recall[2].tolist() == [0, 0, 0]
    assert recall[0].tolist() == [0.5, 0, 0.5]


def test_few_writers_show_their_counts_many_do_not(drawn, tmp_path):
    y_true, y_pred = _lines({0: 419, 1: 30, 2: 30}, {0: (19, 1)})
    plots.confusion(y_true, y_pred, ["w0", "w1", "w2"], tmp_path / "c.png")
    ax = drawn[-1].axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["400", "19", "30", "30"])
    assert ax.images[0].get_clim() == (0, 1)
    many = {w: 10 for w in range(plots.ANNOTATE_UP_TO + 5)}
    y_true, y_pred = _lines(many, {})
    plots.confusion(y_true, y_pred, [f"w{i}" for i in many], tmp_path / "c.png")
    assert not drawn[-1].axes[0].texts
