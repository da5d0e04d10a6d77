"""Model shapes and sizes, one learning step, losses, aggregation, weights handling."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from models import zoo
from models.evaluate import aggregate, far_threshold, interval, topk_accuracy, verification
from models.losses import ContrastiveLoss

RESNET50_NOTOP_PARAMS = 23_587_712


def test_patch_cnn_shape_and_documented_size():
    model = zoo.patch_cnn((64, 64, 1), 10, width=16)
    assert model.output_shape == (None, 10)
    assert model.count_params() == 293_850  # stem 5x5x16, 3 blocks of 2 convs, softmax
    with_emb = zoo.patch_cnn((64, 64, 1), 10, width=16, embedding_dim=32)
    assert with_emb.get_layer("embedding").output.shape == (None, 32)


def test_one_training_step_lowers_the_loss():
    keras.utils.set_random_seed(0)
    model = zoo.patch_cnn((32, 32, 1), 3, width=8, dropout=0.0)
    loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(keras.optimizers.Adam(1e-2), loss)
    rng = np.random.default_rng(0)
    x = rng.random((12, 32, 32, 1), dtype=np.float32)
    y = np.arange(12) % 3

    def train_mode_loss() -> float:  # batch statistics, as the step itself sees them
        return float(loss(y, model(x, training=True)))

    before = train_mode_loss()
    model.train_on_batch(x, y)
    assert train_mode_loss() < before


@pytest.mark.parametrize("name", ["patch_cnn", "patch_embed"])
def test_a_compiled_model_makes_no_state_in_its_first_step(name):
    """State made inside the first traced step makes TensorFlow trace the step twice."""
    from models.config import TrainConfig
    from models.train import compiled_model

    cfg = TrainConfig(model=name, patch_size=32, width=8, embedding_dim=8, batch_size=8,
                      writers_per_batch=2)
    import tensorflow as tf

    model, _ = compiled_model(cfg, 3)
    made = []

    def spy(next_creator, **kwargs):
        made.append(kwargs.get("name"))
        return next_creator(**kwargs)

    rng = np.random.default_rng(0)
    with tf.variable_creator_scope(spy):
        model.fit(rng.random((8, 32, 32, 1), dtype=np.float32), np.arange(8) % 2, verbose=0)
    assert made == []


def test_resnet50_classifier_matches_the_notebook(tmp_path):
    base = zoo.backbone("resnet50", (224, 224, 3), "none")
    model = zoo.resnet50_classifier(10, head_units=1024, dropout=0.5, weights="none")
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 10)
    names = [layer.name for layer in model.layers]
    assert names[-4:] == ["gap", "head", "dropout", "writer"]
    assert model.get_layer("dropout").rate == 0.5
    assert model.get_layer("head").activation.__name__ == "relu"
    head = 2048 * 1024 + 1024 + 1024 * 10 + 10
    assert model.count_params() == RESNET50_NOTOP_PARAMS + head
    # phase one with pretrained weights: only the head trains (weights from a local file)
    path = tmp_path / "r50.weights.h5"
    base.save_weights(path)
    model = zoo.resnet50_classifier(10, head_units=1024, dropout=0.5, weights=str(path))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == head
    blocks = zoo.unfreeze_last_blocks(model, 2)
    assert blocks == ["conv5_block2", "conv5_block3"]
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) > head


@pytest.mark.parametrize("name, last", [
    ("conv5_block3_out", "conv5_block3"), ("block_16_project", "block_16"),
    ("block7a_se_squeeze", "block7a"), ("top_conv", None), ("conv1_conv", None),
])
def test_block_names_of_each_backbone(name, last):
    assert zoo._block_of(name) == last


def test_siamese_tower_embeds_on_the_unit_sphere_and_pairs_give_distances():
    tower = zoo.siamese_tower(embedding_dim=16, head_units=32, weights="none",
                              backbone_name="mobilenetv2")
    pair = zoo.siamese_pair_model(tower)
    x = np.random.default_rng(0).random((2, 128, 128, 3), dtype=np.float32)
    emb = tower.predict(x, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    d = pair.predict((x, x[::-1]), verbose=0)
    np.testing.assert_allclose(d[:, 0], np.linalg.norm(emb - emb[::-1], axis=1), atol=1e-4)
    assert zoo.embedding_model(pair) is tower


def test_contrastive_loss_matches_known_distances():
    loss = ContrastiveLoss(margin=1.0, reduction=None)
    y = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    d = np.array([0.0, 0.5, 0.2, 1.0, 1.5], np.float32)
    expected = [0.0, 0.25, 0.64, 0.0, 0.0]
    np.testing.assert_allclose(np.asarray(loss(y, d)), expected, rtol=1e-6)


def test_aggregation_averages_inked_rows_per_group():
    values = np.array([[0.0, 2.0], [2.0, 0.0], [9.0, 9.0], [1.0, 1.0]])
    groups = np.array(["b", "b", "b", "a"])
    keep = np.array([True, True, False, False])  # group a has no kept row: use all its rows
    ids, means = aggregate(values, groups, keep)
    assert list(ids) == ["a", "b"]
    np.testing.assert_allclose(means, [[1.0, 1.0], [1.0, 1.0]])
    scores = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    assert topk_accuracy(scores, np.array([1, 2]), 1) == 0.5
    assert topk_accuracy(scores, np.array([1, 2]), 2) == 0.5
    assert topk_accuracy(scores, np.array([1, 2]), 3) == 1.0


def test_verification_metrics_on_separable_embeddings():
    emb = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99]], np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    v = verification(emb, np.array([0, 0, 1, 1]))
    assert v["roc_auc"] == 1.0 and v["eer"] == 0.0 and v["tar_at_far_1pct"] == 1.0


def test_a_local_weights_file_loads(tmp_path):
    source = zoo.backbone("mobilenetv2", (96, 96, 3), "none")
    inner = source.layers[-1]
    path = tmp_path / "mobilenet.weights.h5"
    inner.save_weights(path)
    loaded = zoo.backbone("mobilenetv2", (96, 96, 3), str(path))
    for a, b in zip(inner.get_weights(), loaded.layers[-1].get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(zoo.WeightsError, match="weights file not found"):
        zoo.backbone("resnet50", (224, 224, 3), str(tmp_path / "missing.h5"))


def test_offline_imagenet_error_says_what_to_do(tmp_path):
    env = {**os.environ, "KERAS_HOME": str(tmp_path), "HOME": str(tmp_path)}
    code = (
        "from models import zoo\n"
        "try:\n"
        "    zoo.backbone('resnet50', (224, 224, 3), 'imagenet')\n"
        "except zoo.WeightsError as e:\n"
        "    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300)
    if "ERR" not in out.stdout:
        pytest.skip("ImageNet weights were reachable: this machine is online")
    msg = out.stdout
    assert "Pass --weights none, or --weights PATH to a local weights file" in msg
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 in ~/.keras/models" in msg


def test_unknown_writer_thresholds_hold_the_false_accept_rate():
    """Three enrolled writers; each query's best other-writer score is an impostor's."""
    rng = np.random.default_rng(0)
    writers = np.repeat(np.arange(3), 200)
    sims = rng.normal(0, 1, (600, 3))
    sims[np.arange(600), writers] += 3  # genuine scores sit higher
    for far in (0.01, 0.05, 0.2):
        r = far_threshold(sims, writers, np.arange(3), far)
        impostor = np.where(np.eye(3, dtype=bool)[writers], -np.inf, sims).max(1)
        assert r["far"] == (impostor >= r["threshold"]).mean() <= far
        assert r["far"] > far - 0.01  # the lowest such threshold, not a needlessly high one
        assert r["frr"] == (sims[np.arange(600), writers] < r["threshold"]).mean()


def test_a_rate_on_few_queries_gets_a_wide_exact_interval():
    """Clopper-Pearson: with none seen in n, the upper bound is 1 - 0.025^(1/n) (28% on 11
    documents); all seen, the lower is its mirror; and the interval holds the rate."""
    for n in (11, 94, 400):
        assert interval(0, n) == pytest.approx([0, 1 - 0.025 ** (1 / n)])
        assert interval(n, n) == pytest.approx([0.025 ** (1 / n), 1])
    low, high = interval(10, 94)
    assert low < 10 / 94 < high and high - low > 0.1  # ten errors in 94 pin little down
    assert interval(0, 11)[1] > 0.28 and interval(0, 400)[1] < 0.01


def test_lines_that_err_together_count_as_fewer_queries():
    """Korn and Graubard's interval: a rate whose errors fill whole forms varies as the
    forms do, so its interval is about the forms' own; errors spread over the forms, or
    every query its own form, leave the exact interval (its degrees of freedom aside)."""
    from scipy import stats

    from models.evaluate import design_effect

    forms = np.repeat(np.arange(10), 8)  # 10 forms of 8 lines
    together = np.isin(forms, [0, 1])  # 16 of 80 lines wrong: every line of two forms
    effect = design_effect(together, forms)
    assert 7 < effect < 9  # about the 8 lines a form
    low, high = interval(16, 80, design_effect=effect, clusters=10)
    assert low < interval(2, 10)[0] and high > interval(2, 10)[1]  # no tighter than 2 of 10
    assert low < interval(16, 80)[0] / 5 and high > 2 * interval(16, 80)[1]
    spread = np.zeros(80, bool)
    spread[[8 * form + line for form in range(8) for line in range(2)]] = True  # 2 a form
    assert design_effect(spread, forms) == 1.0
    # none wrong: nothing to measure the forms' spread by, only their degrees of freedom
    assert design_effect(np.zeros(80, bool), forms) == 1.0
    assert interval(0, 80)[1] < interval(0, 80, clusters=10)[1] < interval(0, 10)[1]
    alone = np.arange(94)  # every query its own form: the exact interval itself
    hits = alone < 10
    assert design_effect(hits, alone) == pytest.approx(1.0)
    exact = stats.binomtest(10, 94).proportion_ci(method="exact")
    assert interval(10, 94, design_effect=design_effect(hits, alone), clusters=94) \
        == pytest.approx([exact.low, exact.high])


def test_pairs_err_together_by_either_writer_of_the_pair():
    """verify's different-writer pairs: errors that gather in one enrolled writer (whom
    strangers resemble) are spread evenly over the asked writers, which alone see none of
    it; the two-way design effect sees either grouping's, whichever is given first."""
    from models.evaluate import design_effect

    asked, enrolled = (a.ravel() for a in np.meshgrid(np.arange(10), np.arange(10),
                                                      indexing="ij"))
    asked, enrolled = np.repeat(asked, 4), np.repeat(enrolled, 4)  # 4 pairs of each two
    hits = enrolled == 0  # every pair with writer 0: 40 of 400
    assert design_effect(hits, asked) == 1.0
    both = design_effect(hits, asked, enrolled)
    assert both == pytest.approx(design_effect(hits, enrolled)) and both > 30
    assert design_effect(hits, enrolled, asked) == pytest.approx(both)
    hits = asked == 0  # the other way round
    assert design_effect(hits, asked, enrolled) == pytest.approx(design_effect(hits, asked))
    # spread over both: nothing gathers, as one-way
    rng = np.random.default_rng(0)
    hits = rng.random(400) < 0.1
    assert design_effect(hits, asked, enrolled) < 2


def test_the_lead_rule_holds_the_false_accept_rate_between_fitted_gallery_sizes():
    """Export fits the unknown-writer rule (the best score plus a share of its lead over the
    second) on different-writer scores; on fresh ones, at a gallery size it did not draw,
    it accepts about `far` of them, and a query's threshold on its best score decides
    exactly as the rule does."""
    from models.export import UNKNOWN_LEAD, _unknown_growth
    from models.runtime.identify import gallery_threshold, lead_threshold, query_thresholds

    rng = np.random.default_rng(0)
    sims = rng.normal(0, 1, (1000, 64))  # no query's writer among the 64 references
    growth = _unknown_growth(sims, np.full(1000, -1), np.arange(64),
                             np.ones((1000, 64), bool), far=0.05, seed=0, standardised=True)
    lead = growth["lead"]
    assert lead["weight"] == UNKNOWN_LEAD and lead["sizes"] == [2, 4, 8, 16, 32, 64]
    assert growth["sizes"][0] == 1 and lead["thresholds"][-1] > lead["thresholds"][0]
    # measured at 2, 4, ...: interpolated in ln(n) between them; beyond, rising as the best
    # score's threshold does
    assert lead_threshold(growth, 4) == lead["thresholds"][1]
    assert lead_threshold(growth, 64) == lead["thresholds"][-1]
    assert lead_threshold(growth, 8) < lead_threshold(growth, 11) < lead_threshold(growth, 16)
    assert lead_threshold(growth, 640) == pytest.approx(lead["thresholds"][-1]
                                                        + growth["b"] * np.log(10))
    fresh = rng.normal(0, 1, (20000, 48))
    t = query_thresholds(growth, fresh)
    assert 0.04 <= (fresh.max(1) >= t).mean() <= 0.065
    larger = rng.normal(0, 1, (5000, 256))  # beyond the largest gallery drawn: no more
    assert (larger.max(1) >= query_thresholds(growth, larger)).mean() <= 0.06
    second, best = np.sort(fresh, axis=1)[:, -2:].T
    rule = best + lead["weight"] * (best - second) - lead_threshold(growth, 48)
    assert np.array_equal(best >= t, rule >= 0)
    # a stranger's query far ahead of its second is rare: its threshold is lower
    assert t[np.argmax(best - second)] < t[np.argmin(best - second)]
    # one writer has no second: the best score alone, at the threshold of one writer
    assert np.all(query_thresholds(growth, fresh[:, :1]) == gallery_threshold(growth, 1))
    # older cards, without the rule: the gallery's threshold for every query
    plain = {k: v for k, v in growth.items() if k != "lead"}
    assert np.all(query_thresholds(plain, fresh) == gallery_threshold(plain, 48))
    assert growth["tail"] == "quantile"  # 50 of the 1,000 queries beyond the 5% point


def test_few_calibration_queries_set_the_unknown_writer_point_by_a_fitted_tail(monkeypatch):
    """With under `UNKNOWN_TAIL_QUERIES` queries beyond the far point (77 documents at 1%),
    export reads a standardised score's (the cohort-normalised fused) off a Gumbel fitted
    to all the draws: seeded calibrations of fresh
    strangers place it closer together than the empirical quantile does, and it still
    accepts about `far` of new strangers."""
    import models.export as export
    from models.runtime.identify import query_thresholds

    fresh = np.random.default_rng(99).normal(0, 1, (20000, 48))

    def calibrated(seed: int, standardised: bool = True) -> tuple[str, float, float]:
        sims = np.random.default_rng(seed).normal(0, 1, (77, 64))
        growth = export._unknown_growth(sims, np.full(77, -1), np.arange(64),
                                        np.ones((77, 64), bool), far=0.01, seed=seed,
                                        standardised=standardised)
        t = query_thresholds(growth, fresh)
        return growth["tail"], float(np.median(t)), float((fresh.max(1) >= t).mean())

    fitted = [calibrated(seed) for seed in range(10)]
    assert {tail for tail, _, _ in fitted} == {"gumbel"}
    assert 0.005 <= np.mean([far for _, _, far in fitted]) <= 0.015
    # raw cosines and hinge similarities, bounded and unstandardised, keep the quantile
    assert calibrated(0, standardised=False)[0] == "quantile"
    monkeypatch.setattr(export, "UNKNOWN_TAIL_QUERIES", 0)
    read = [calibrated(seed) for seed in range(10)]
    assert {tail for tail, _, _ in read} == {"quantile"}
    assert np.std([t for _, t, _ in fitted]) < 0.8 * np.std([t for _, t, _ in read])


def test_the_galleries_drawn_for_the_unknown_writer_rule_are_uniform_among_the_others():
    """Each query's gallery of n is drawn from its other references alone, without
    replacement, each of them as often as another; the best two are read off it."""
    from models.export import _best_two

    rng = np.random.default_rng(0)
    sims = np.tile(np.arange(10, dtype=float), (3, 1))  # a score names its reference
    other = np.ones((3, 10), bool)
    other[0, [8, 9]] = False  # the query's own writer's references
    other[1, :5] = False
    drawn = np.stack([_best_two(sims, other, 3, rng) for _ in range(6000)])  # [D, Q, 2]
    assert drawn.shape == (6000, 3, 2) and (drawn[..., 0] < drawn[..., 1]).all()
    assert not np.isin(drawn[:, 0], [8, 9]).any() and (drawn[:, 1] >= 5).all()
    # as many others as drawn: the two best of them, every time
    assert (_best_two(sims, other, 5, rng)[1] == [8, 9]).all()
    # the best of 3 of 8 (0..7) is k with probability C(k, 2) / C(8, 3)
    best = np.bincount(drawn[:, 0, 1].astype(int), minlength=8) / len(drawn)
    expected = np.array([k * (k - 1) / 2 for k in range(8)]) / 56
    np.testing.assert_allclose(best, expected, atol=0.02)
    # one reference drawn: the best alone
    assert _best_two(sims, other, 1, rng).shape == (3, 1)
