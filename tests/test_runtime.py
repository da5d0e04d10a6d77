"""The edge runtime's pieces: preprocessing twins and width buckets."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from iam_writers_tfds import synth
from iam_writers_tfds.images import MultiPageImageError
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
    for min_ink in (0.03, ink.max() + 0.01, 0.9):  # some windows; a thin pen's; none
        np.testing.assert_array_equal(preprocess.kept_windows(ink, min_ink),
                                      ops.kept_windows(tf.constant(ink), min_ink).numpy())
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
    # OpenCV's fixed-point resize against TF's float one, both rounded to 8 bits, then
    # stretched to 0..255: over 40 generated lines at most 4 levels apart, 0.48 on average
    # (a crop or scale that differs moves whole strokes, tens of levels)
    assert diff.max() <= 4 and diff.mean() < 0.5


def test_numpy_scaling_matches_the_pipeline():
    import tensorflow as tf

    from pipelines import ops

    x = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    for norm in ("unit", "resnet50"):
        cfg = PipelineConfig(mode="resize", normalization=norm)
        np.testing.assert_allclose(preprocess.scale_input(x, norm),
                                   ops.scale_input(tf.constant(x), cfg).numpy(), atol=1e-4)


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


def test_a_line_with_too_little_ink_for_the_model_is_refused_saying_how_much(tmp_path):
    """A faint sliver of a line (a few specks of ink) is readable as an image but gives the
    model no window to read: the refusal says so with the ink measured, not that the image
    holds no handwriting."""
    from tests.fuzzing import fake_model

    image = np.full((60, 1500), 250, np.uint8)
    for x, y in [(100, 10), (600, 45), (1200, 25)]:
        image[y:y + 2, x:x + 2] = 20
    with pytest.raises(runtime.NoInkError,
                       match=r"sliver: too little ink for the model \(its most inked window "
                             r"is \d\.\d% ink, at least 1% needed\)"):
        fake_model(tmp_path).outputs(image, "sliver")


def test_a_negative_is_told_apart_from_a_blank_image():
    """White ink on black (a negative) has nothing darker than its ground, as a blank image
    has not: it was called blank, with no word of inverting it."""
    from models.runtime.model import inked

    line = _line(0)
    assert inked(line, "line") is line
    with pytest.raises(runtime.NoInkError, match="negative: light marks on a dark ground.*"
                       "Invert the image's colours"):
        inked(255 - line, "negative")
    for ground in (0, 250):
        with pytest.raises(runtime.NoInkError, match=f"{ground}: the image is blank"):
            inked(np.full_like(line, ground), str(ground))


def test_a_tiff_of_several_pages_is_not_read_as_one_line(tmp_path):
    """Where one line is expected (the model's input), a multi-page TIFF is refused, not
    read as its first page."""
    from tests.fuzzing import fake_model

    assert cv2.imwritemulti(str(tmp_path / "two.tif"), [_line(0), _line(1)])
    with pytest.raises(MultiPageImageError, match=r"two\.tif: a file of 2 pages where one line "
                       "is expected.*identify, enroll, predict or verify"):
        fake_model(tmp_path).inputs(tmp_path / "two.tif")


def test_a_thin_pens_line_is_read_from_its_most_inked_windows(tmp_path):
    """A line written with a thin pen, where no window reaches the 3% of ink that training
    windows hold (2 of 2,881 real dev lines), is read from its windows with at least 1%
    rather than refused."""
    from tests.fuzzing import fake_model

    model = fake_model(tmp_path)
    image = np.full((60, 1500), 250, np.uint8)
    x = np.arange(40, 1460)
    image[(30 + 25 * np.sin(x / 9)).astype(int), x] = 20  # a one-pixel wavy stroke
    ink = preprocess.window_ink(preprocess.pad_line(preprocess.normalize_line(image, 32, 0),
                                                    32, 16), 32, 16)
    assert 0.01 < ink.max() < 0.03  # thin: no window would be kept at 3%
    out = model.outputs(image, "thin")
    assert len(out["log_probs"]) == (ink >= 0.01).sum() > 0
