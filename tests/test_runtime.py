"""The edge runtime's pieces: preprocessing twins and the gallery format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from iam_writers_tfds import synth
from models import runtime
from pipelines import PipelineConfig, preprocess


def _line(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return synth.render_line(synth.WriterStyle.sample(rng), rng)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_line_padding_and_ink_equal_the_graph_twins(seed):
    import tensorflow as tf

    from pipelines import ops

    line = preprocess.normalize_line(_line(seed), 32, 128)[:, :, None]
    padded = preprocess.pad_line(line, 32, 16)
    width = padded.shape[1]
    assert width >= line.shape[1] > width - 16 and (width - 32) % 16 == 0
    assert not padded[:, line.shape[1]:].any()  # background only
    np.testing.assert_array_equal(padded, ops.pad_line(tf.constant(line), 32, 16).numpy())
    ink = preprocess.window_ink(padded, 32, 16)
    assert len(ink) == (width - 32) // 16 + 1
    np.testing.assert_allclose(ink[1], (padded[:, 16:48] > 127).mean(), atol=1e-6)
    np.testing.assert_allclose(ink, ops.window_ink(tf.constant(padded), 32, 16).numpy(),
                               atol=1e-6)
    assert preprocess.pad_line(np.zeros((32, 20, 1), np.uint8), 32, 16).shape[1] == 32


@pytest.mark.parametrize("band", [0, 128])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_in_graph_normalisation_matches_the_opencv_reference(seed, band):
    import tensorflow as tf

    from pipelines import ops

    gray = _line(seed)
    ref = preprocess.normalize_line(gray, 64, band)
    out = ops.normalize_line_graph(tf.constant(gray[:, :, None]), 64, band).numpy()[:, :, 0]
    assert out.shape == ref.shape
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.1  # measured: max 2, mean <= 0.05


def test_numpy_scaling_matches_the_pipeline():
    import tensorflow as tf

    from pipelines import ops

    x = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    for norm in ("unit", "resnet50"):
        cfg = PipelineConfig(mode="resize", normalization=norm)
        np.testing.assert_allclose(preprocess.scale_input(x, norm),
                                   ops.scale_input(tf.constant(x), cfg).numpy(), atol=1e-4)


def test_gallery_round_trip_centroids_and_checks(tmp_path):
    g = runtime.Gallery.new(tmp_path / "g", "abc", "hinge-l10-b16")
    e, h = np.eye(3, dtype=np.float32), np.arange(6.0).reshape(3, 2)
    g.add("ann", ["a1", "a2"], e[[0, 0]], h[[0, 1]])
    g.add("bob", ["b1"], e[[1]], h[[2]])
    g.save()
    back = runtime.Gallery.load(tmp_path / "g.npz")
    back.require("abc", "hinge-l10-b16", exact=True)
    assert back.writers == ["ann", "bob"] and back.images == ["a1", "a2", "b1"]
    np.testing.assert_allclose(back.centroids(), e[:2])
    np.testing.assert_allclose(back.hinge_sums(), [[2, 4], [4, 5]])
    with pytest.raises(runtime.ModelError, match="built by model abc and descriptor "
                                                 "hinge-l10-b16, not by model xyz"):
        back.require("xyz", None)
    meta = json.loads((tmp_path / "g.json").read_text())
    (tmp_path / "g.json").write_text(json.dumps({**meta, "descriptor": "lbp"}))
    with pytest.raises(runtime.ModelError, match="corrupt gallery .*unknown descriptor 'lbp'"):
        runtime.Gallery.load(tmp_path / "g")
    (tmp_path / "g.json").write_text("{")
    with pytest.raises(runtime.ModelError, match="corrupt gallery"):
        runtime.Gallery.load(tmp_path / "g")
    with pytest.raises(FileNotFoundError, match="Enroll writers first"):
        runtime.Gallery.load(tmp_path / "none")


def test_a_gallery_from_before_descriptors_still_loads(tmp_path):
    """Galleries written before descriptors had no `descriptor` and no hinge array."""
    g = runtime.Gallery.new(tmp_path / "g", "abc", None)
    g.add("ann", ["a1"], np.eye(2, dtype=np.float32)[[0]], None)
    g.save()
    meta = json.loads((tmp_path / "g.json").read_text())
    del meta["descriptor"]
    (tmp_path / "g.json").write_text(json.dumps(meta))
    old = runtime.Gallery.load(tmp_path / "g")
    assert old.descriptor is None and old.hinge is None and old.fingerprint == "abc"


def test_lines_reach_the_backend_in_width_buckets_and_only_their_own_windows_count(tmp_path):
    """Width buckets keep the interpreters few; the windows the bucket padding adds must
    not change a line's outputs."""
    from tests.fuzzing import fake_model

    model = fake_model(tmp_path)
    backend, widths = model.backend, []
    model.backend = lambda x: (widths.append(x.shape[2]), backend(x))[1]
    step = 16 * (runtime.BUCKET_PX // 16)
    for seed in range(4):
        image = _line(seed)
        out = model.outputs(image)
        line = preprocess.normalize_line(image, 32, model.spec.get("line_band", 0))
        line = preprocess.pad_line(line, 32, 16)
        keep = preprocess.window_ink(line, 32, 16) >= 0.03
        assert (widths[-1] - 32) % step == 0 and 0 <= widths[-1] - line.shape[1] < step
        own = backend(preprocess.scale_input(line[None, :, :, None], "unit"))
        np.testing.assert_allclose(out["log_probs"], own["log_probs"][keep])
