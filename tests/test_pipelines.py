"""Input pipelines: shapes, ranges, ink, coverage, pairs, P x K, determinism, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from pipelines import (
    CorruptImages,
    PipelineConfig,
    eval_dataset,
    load_split,
    ops,
    pair_dataset,
    pk_dataset,
    train_dataset,
)

CFG = PipelineConfig(patch_size=32, patches_per_image=4, batch_size=16)


def _raw(dummy_dir, split="train"):
    return load_split("top50", split, dummy_dir)


def test_unknown_mode_normalisation_and_size_list_allowed_values():
    with pytest.raises(ValueError, match="allowed: patches, resize"):
        PipelineConfig(mode="squash")
    with pytest.raises(ValueError, match="allowed: unit, resnet50"):
        PipelineConfig(normalization="imagenet")
    with pytest.raises(ValueError, match="16..1024"):
        PipelineConfig(patch_size=8)


def test_unknown_split_and_unbuilt_config_are_clear(tmp_path):
    with pytest.raises(ValueError, match="allowed: train, validation, test"):
        load_split("top50", "dev", tmp_path)
    with pytest.raises(FileNotFoundError, match="iam-writers build --config top10"):
        load_split("top10", "train", tmp_path)


def test_patch_training_batches(dummy_dir):
    xs, ys = zip(*train_dataset(_raw(dummy_dir), CFG).as_numpy_iterator())
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.shape == (12 * 4, 32, 32, 1) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and set(y) <= set(range(12))


def test_random_crops_contain_ink(dummy_dir):
    cfg = dataclasses.replace(CFG, augment=False)
    for x, _ in train_dataset(_raw(dummy_dir), cfg).as_numpy_iterator():
        ink = (x[..., 0] > 0.5).mean(axis=(1, 2))
        assert (ink >= cfg.min_ink).all(), ink


@pytest.mark.parametrize(
    "norm, size, lo, hi", [("unit", 128, 0.0, 1.0), ("resnet50", 224, -124, 152)]
)
@pytest.mark.parametrize("keep_aspect", [False, True])
def test_resize_mode(dummy_dir, norm, size, lo, hi, keep_aspect):
    cfg = PipelineConfig(mode="resize", image_size=size, normalization=norm,
                         keep_aspect=keep_aspect, batch_size=4)
    x, y = next(train_dataset(_raw(dummy_dir), cfg).as_numpy_iterator())
    assert x.shape == (4, size, size, 3) and y.shape == (4,)
    assert lo <= x.min() < x.max() <= hi


def test_sliding_windows_cover_the_full_width():
    for width in (32, 33, 47, 64, 100):
        starts = ops.window_starts(tf.constant(width), 32, 16).numpy()
        assert starts[0] == 0 and starts[-1] + 32 == width
        assert (np.diff(starts) <= 16).all() and (np.diff(starts) > 0).all()


def test_eval_windows_are_every_window_of_every_image(dummy_dir):
    batches = list(eval_dataset(_raw(dummy_dir, "test"), CFG).as_numpy_iterator())
    ids = np.concatenate([b["image_id"] for b in batches])
    assert len(set(ids)) == 12
    lines = {ex["image_id"]: ex["x"].shape[1] for ex in
             load_split("top50", "test", dummy_dir).map(
                 lambda e: {"image_id": e["image_id"],
                            "x": ops.normalize_line(e["image"], 32, CFG.line_band)}
             ).as_numpy_iterator()}
    for image_id, width in lines.items():
        expected = len(ops.window_starts(tf.constant(width), 32, CFG.stride))
        assert (ids == image_id).sum() == expected


def test_no_form_in_two_splits(dummy_dir):
    seen = {}
    for split in ("train", "validation", "test"):
        for b in eval_dataset(_raw(dummy_dir, split), CFG).as_numpy_iterator():
            for form in set(b["form_id"]):
                assert seen.setdefault(form, split) == split


def test_pair_labels_agree_with_writers(dummy_dir):
    cfg = dataclasses.replace(CFG, batch_size=8)
    labels = []
    for (a, b), label, (wa, wb) in pair_dataset(_raw(dummy_dir), cfg, 24, with_writers=True):
        assert a.shape == b.shape == (8, 32, 32, 1)
        np.testing.assert_array_equal(label.numpy(), (wa.numpy() == wb.numpy()).astype(float))
        labels += list(label.numpy())
    assert len(labels) == 24 and sum(labels) == 12  # balanced


def test_pk_batches_have_p_writers_times_k(dummy_dir):
    batches = list(pk_dataset(_raw(dummy_dir), CFG, p=4, k=3, steps=5).as_numpy_iterator())
    assert len(batches) == 5
    for x, y in batches:
        assert x.shape == (12, 32, 32, 1)
        values, counts = np.unique(y, return_counts=True)
        assert len(values) == 4 and (counts == 3).all()
    n_writers = len(np.unique([ex["writer"] for ex in _raw(dummy_dir).as_numpy_iterator()]))
    x, y = next(iter(pk_dataset(_raw(dummy_dir), CFG, p=n_writers + 5, k=2, steps=1)))
    assert len(np.unique(y)) == n_writers and len(y) == 2 * n_writers  # P capped
    with pytest.raises(ValueError, match="P x K"):
        pk_dataset(_raw(dummy_dir), CFG, p=4, k=1, steps=1)


def _first(ds):
    return next(iter(ds))[0].numpy()


def _epoch(ds):
    return np.concatenate([x.numpy() for x, _ in ds])


def test_training_stream_is_deterministic_under_a_seed(dummy_dir):
    """Whole epochs, through the parallel maps: the order of their outputs is the seed's."""
    a = _epoch(train_dataset(_raw(dummy_dir), CFG))
    b = _epoch(train_dataset(_raw(dummy_dir), CFG))
    c = _epoch(train_dataset(_raw(dummy_dir), dataclasses.replace(CFG, seed=1)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    pk = [_epoch(pk_dataset(_raw(dummy_dir), CFG, p=4, k=2, steps=6)) for _ in range(2)]
    np.testing.assert_array_equal(*pk)


def test_epochs_draw_new_crops(dummy_dir):
    ds = train_dataset(_raw(dummy_dir), dataclasses.replace(CFG, shuffle_buffer=1))
    assert not np.array_equal(_first(ds), _first(ds))


def _raw_with_corrupt(dummy_dir):
    examples = list(_raw(dummy_dir).as_numpy_iterator())
    images = [e["image"] for e in examples]
    images[2] = images[2][: len(images[2]) // 2]  # truncated PNG
    return tf.data.Dataset.from_tensor_slices({
        "image": images,
        "writer": [e["writer"] for e in examples],
        "image_id": [e["image_id"] for e in examples],
        "form_id": [e["form_id"] for e in examples],
    }), examples[2]["image_id"].decode()


def test_corrupt_image_is_skipped_counted_and_named(dummy_dir):
    raw, bad = _raw_with_corrupt(dummy_dir)
    corrupt = CorruptImages()
    n = sum(len(y) for _, y in train_dataset(raw, CFG, corrupt))
    assert n == 11 * 4 and corrupt.names == [bad]


def test_corrupt_image_fails_clearly_when_asked(dummy_dir):
    raw, bad = _raw_with_corrupt(dummy_dir)
    cfg = dataclasses.replace(CFG, on_corrupt="fail")
    with pytest.raises(tf.errors.InvalidArgumentError, match=bad):
        for _ in train_dataset(raw, cfg):
            pass


def test_augmentation_keeps_range_and_shape():
    x = tf.random.stateless_uniform([6, 32, 32, 1], [1, 2])
    y = ops.augment(x, tf.constant([3, 4], tf.int64))
    assert y.shape == x.shape and float(tf.reduce_min(y)) >= 0 and float(tf.reduce_max(y)) <= 1
    np.testing.assert_array_equal(y, ops.augment(x, tf.constant([3, 4], tf.int64)))


def test_augmentation_draws_stroke_width_per_patch():
    """One call covers a whole group of lines (many batches): a single thicken/thin draw
    for all of it would make batch norm's statistics swing from batch to batch."""
    x = np.zeros([64, 32, 32, 1], np.float32)
    x[:, 4:28, 15:17] = 1.0  # a 2-px stroke: thinning erases it, thickening doubles it
    ink = (ops.augment(tf.constant(x), tf.constant([5, 6], tf.int64)).numpy() > 0.3)
    ink = ink.sum(axis=(1, 2, 3))
    plain = 2 * 24
    assert (ink < plain / 4).any() and (ink > 1.5 * plain).any(), ink


def test_normalize_line_crops_to_ink_and_ignores_paper_and_ink_colour():
    from pipelines.preprocess import normalize_line

    def page(paper, ink):
        img = np.full((100, 400), paper, np.uint8)
        img[40:60, 100:300:4] = ink  # strokes with paper between them
        img[40:60, 299] = ink
        return img

    out = normalize_line(page(230, 30), 32, 0)
    assert out.shape == (32, 320) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255 and out[:, 0].min() > 200  # cropped to ink
    np.testing.assert_allclose(normalize_line(page(180, 90), 32, 0), out, atol=2)
    narrow = normalize_line(page(230, 30)[:, 95:110], 32, 0)
    assert narrow.shape == (32, 32)  # padded to one patch


def test_a_band_of_scan_rows_keeps_handwriting_size_and_ignores_stray_marks():
    from pipelines.preprocess import normalize_line

    def page(stroke, speck=False):
        img = np.full((300, 400), 230, np.uint8)
        img[150 - stroke // 2 : 150 + stroke // 2, 100:300:4] = 30
        img[150 - stroke // 2 : 150 + stroke // 2, 299] = 30
        if speck:
            img[10:13, 200:203] = 30  # a mark far above the line
        return img

    def ink_rows(line):
        return int((line.max(axis=1) > 127).sum())

    small, large = normalize_line(page(20), 32, 128), normalize_line(page(40), 32, 128)
    assert small.shape == large.shape == (32, 50)  # 200 scan px at 32 / 128
    assert (ink_rows(small), ink_rows(large)) == (5, 10)  # 20 and 40 scan px at 1/4
    np.testing.assert_array_equal(normalize_line(page(20, speck=True), 32, 128), small)
    # the ink's bounding box scales every line to the patch: size is lost, a speck shrinks it
    assert ink_rows(normalize_line(page(20), 32, 0)) == 32
    assert ink_rows(normalize_line(page(40), 32, 0)) == 32
    assert ink_rows(normalize_line(page(20, speck=True), 32, 0)) < 8  # 32 without the speck


def test_reference_preprocessing_runs_where_tensorflow_cannot_be_imported(tmp_path):
    """The edge runtime shares pipelines.preprocess: it must not need TensorFlow."""
    import subprocess
    import sys

    import cv2

    img = np.full((60, 300), 240, np.uint8)
    img[20:40, 50:250:3] = 20
    cv2.imwrite(str(tmp_path / "line.png"), img)
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from pipelines.preprocess import decode_normalize\n"
        f"x = decode_normalize(open({str(tmp_path / 'line.png')!r}, 'rb').read(), 32, 128)\n"
        "assert 'tensorflow' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
        "print(x.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(32, 50, 1)"  # ink spans 199 px; 128 rows -> 32: 1/4
