"""The official IAM layout (lines + ascii, extracted or as .tgz): parsing, safety, builds."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from iam_writers_tfds import iam_layout, synth
from iam_writers_tfds.kaggle_layout import LayoutError
from pipelines import preprocess
from tests.conftest import DUMMY

IAM = DUMMY / "iam"


def test_the_text_files_parse_as_documented():
    forms = iam_layout.parse_forms(IAM / "ascii" / "forms.txt")
    lines = iam_layout.parse_lines(IAM / "ascii" / "lines.txt")
    assert len(forms) == 36 and forms["s00-001"] == "007"  # comment lines skipped
    assert len(lines) == 36 and lines["s00-001-00"].text == "of and to in"
    assert not lines["s00-000-00"].segmentation_ok and lines["s00-001-00"].segmentation_ok


def test_a_malformed_or_missing_text_file_is_named(tmp_path):
    root = tmp_path / "iam"
    shutil.copytree(IAM, root)
    path = root / "ascii" / "lines.txt"
    path.write_text(path.read_text() + "s00-009-00 maybe 1 2 3\n")
    with pytest.raises(LayoutError, match=r"lines\.txt:39: malformed line 's00-009-00 maybe"):
        iam_layout.scan(root, tmp_path / "x")
    path.unlink()
    with pytest.raises(LayoutError, match=r"no ascii/lines\.txt\. To get it, register at"):
        iam_layout.scan(root, tmp_path / "x")


def _tgz(path: Path, members: dict[str, bytes | None], link: str | None = None) -> Path:
    """A .tgz of files (None: a folder) and optionally one symbolic link."""
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(info)
    return path


def test_unsafe_archives_are_refused_and_leave_nothing(tmp_path):
    cases = {"slip": ({"lines/../../evil.png": b"x"}, None, "points outside"),
             "absolute": ({"/tmp/evil.png": b"x"}, None, "points outside"),
             "link": ({"lines/": None}, "lines/a.png", "is a link")}
    for name, (members, link, message) in cases.items():
        archive = _tgz(tmp_path / f"{name}.tgz", members, link)
        with pytest.raises(LayoutError, match=message):
            iam_layout.safe_extract_tar(archive, tmp_path / "out" / name)
        assert not (tmp_path / "out" / name).exists()
    (tmp_path / "junk.tgz").write_bytes(b"not a tar")
    with pytest.raises(LayoutError, match="junk.tgz: not a readable tar archive"):
        iam_layout.safe_extract_tar(tmp_path / "junk.tgz", tmp_path / "out" / "junk")


def test_archives_build_with_transcriptions_and_segmentation(tmp_path):
    """lines.tgz and ascii.tgz as IAM ships them, built by the `iam` config."""
    import tensorflow_datasets as tfds

    from iam_writers import data

    manual = tmp_path / "manual"
    manual.mkdir()
    for part in ("lines", "ascii"):
        with tarfile.open(manual / f"{part}.tgz", "w:gz") as tf:
            tf.add(IAM / part, arcname=part)
    b = data.build(data.BuildConfig("iam", manual, tmp_path / "tfds"))
    assert {s: b.info.splits[s].num_examples for s in ("train", "validation", "test")} == \
        {"train": 12, "validation": 12, "test": 12}
    texts = iam_layout.parse_lines(IAM / "ascii" / "lines.txt")
    seen = 0
    for split in ("train", "validation", "test"):
        for ex in tfds.as_numpy(b.as_dataset(split=split)):
            line = texts[ex["image_id"].decode()]
            assert ex["text"].decode() == line.text
            assert bool(ex["segmentation_ok"]) == line.segmentation_ok
            seen += 1
    assert seen == 36


def test_generated_iam_layout_has_grey_lines_and_the_words_drawn(tmp_path):
    root = synth.generate(tmp_path / "g", synth.SynthConfig(writers=2, forms_per_writer=3,
                                                            lines_per_form=2), "iam")
    records, skipped = iam_layout.scan(root, tmp_path / "x")
    assert len(records) == 12 and not skipped and {r.writer_id for r in records} == {"000", "001"}
    assert all(r.segmentation_ok and len(r.text.split()) >= 3 for r in records)
    image = cv2.imread(str(records[0].path), cv2.IMREAD_GRAYSCALE)
    assert len(np.unique(image)) > 50  # grey levels, not a binarised scan
    # the words are what was drawn: the generator's first line, redrawn from its seed
    rng = np.random.default_rng(0)
    form = f"s00-{int(rng.permutation(6)[0]):03d}"
    drawn, words = synth.render_words(synth.WriterStyle.sample(rng), rng)
    first = next(r for r in records if r.image_id == f"{form}-00")
    assert first.text == " ".join(words) and first.writer_id == "000"
    np.testing.assert_array_equal(cv2.imread(str(first.path), cv2.IMREAD_GRAYSCALE), drawn)


def test_line_normalisation_treats_grey_lines_as_their_binarised_scan():
    """The default recipe (a 128-row band at IAM's 300 dpi) was fitted on binarised lines;
    a grey-level line lands at the same scale, with the same ink."""
    rng = np.random.default_rng(3)
    grey, _ = synth.render_words(synth.WriterStyle.sample(rng), rng)
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    a, b = (preprocess.normalize_line(x, 64, 128) for x in (grey, binary))
    assert a.shape == b.shape
    ink_a, ink_b = a > 127, b > 127
    assert (ink_a & ink_b).sum() / (ink_a | ink_b).sum() > 0.8
