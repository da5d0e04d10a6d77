import collections
import stat
import zipfile

import pytest

from iam_writers_tfds import kaggle_layout as kl


def test_parse_forms_reads_first_two_columns(tmp_path):
    f = tmp_path / kl.FORMS_FILE
    f.write_text("# comment\na01-000u 000 2 prt 7 5 52 36\n\na01-003 001 0 all 0 0 0 0\n")
    assert kl.parse_forms(f) == {"a01-000u": "000", "a01-003": "001"}


@pytest.mark.parametrize("line", ["a01-000u", "a01_000u 000", "a01-000u 0/0", "a01-000u"])
def test_malformed_forms_line_stops_with_line_number(tmp_path, line):
    f = tmp_path / kl.FORMS_FILE
    f.write_text(f"a01-001 000\n{line}\n")
    with pytest.raises(kl.LayoutError, match=rf"{kl.FORMS_FILE}:2: malformed line"):
        kl.parse_forms(f)


def test_non_utf8_forms_file_is_named(tmp_path):
    f = tmp_path / kl.FORMS_FILE
    f.write_bytes(b"a01-001 000\n\xff\xfe 001\n")
    with pytest.raises(kl.LayoutError, match="not valid UTF-8"):
        kl.parse_forms(f)


def test_form_listed_with_two_writers_stops(tmp_path):
    f = tmp_path / kl.FORMS_FILE
    f.write_text("a01-001 000\na01-001 001\n")
    with pytest.raises(kl.LayoutError, match="two writers"):
        kl.parse_forms(f)


def test_form_of_uses_first_two_dash_parts():
    assert kl.form_of("a01-000u-s00-01.png") == "a01-000u"
    assert kl.form_of("nodash.png") is None


def _forms(n_writers=12, forms_per_writer=(1, 2, 3, 4, 5, 8)):
    out = {}
    for w in range(n_writers):
        for f in range(forms_per_writer[w % len(forms_per_writer)]):
            out[f"w{w:02d}-{f:03d}"] = f"{w:03d}"
    return out


def test_split_is_form_disjoint_stratified_and_deterministic():
    forms = _forms()
    split, train_only = kl.split_forms(forms, seed=3)
    assert split == kl.split_forms(forms, seed=3)[0]
    assert set(split) == set(forms)  # every form in exactly one split (it is a dict)
    per_writer = collections.defaultdict(collections.Counter)
    for form, s in split.items():
        per_writer[forms[form]][s] += 1
    for writer, counts in per_writer.items():
        total = sum(counts.values())
        if total >= 3:
            assert counts["validation"] >= 1 and counts["test"] >= 1 and counts["train"] >= 1
        else:
            assert writer in train_only and counts["train"] == total
    assert sorted(train_only) == sorted(w for w, c in per_writer.items() if sum(c.values()) < 3)


def test_split_depends_on_seed():
    forms = _forms(forms_per_writer=(8,))
    assert kl.split_forms(forms, seed=0)[0] != kl.split_forms(forms, seed=1)[0]


def test_top_writers_breaks_ties_by_writer_id(tmp_path):
    recs = [kl.Record(tmp_path, f"{w}-{i}", f"{w}-x", w) for w, n in
            [("005", 3), ("002", 3), ("009", 5), ("001", 1)] for i in range(n)]
    assert kl.top_writers(recs, 3) == ["009", "002", "005"]


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            if isinstance(data, zipfile.ZipInfo):
                zf.writestr(data, name)
            else:
                zf.writestr(name, data)
    return path


@pytest.mark.parametrize("bad", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_zip_slip_is_refused_and_nothing_extracted(tmp_path, bad):
    archive = _zip(tmp_path / "a.zip", [("ok.txt", b"x"), (bad, b"evil")])
    with pytest.raises(kl.LayoutError, match="zip-slip"):
        kl.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_symlink_member_is_refused(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(kl.LayoutError, match="symbolic link"):
        kl.safe_extract(archive, tmp_path / "out")


def test_oversized_member_is_refused(tmp_path):
    archive = _zip(tmp_path / "a.zip", [("big.bin", b"0" * 2000)])
    with pytest.raises(kl.LayoutError, match="above the 1,000-byte limit"):
        kl.safe_extract(archive, tmp_path / "out", max_member_bytes=1000)
    assert not (tmp_path / "out").exists()


def test_not_a_zip_is_named(tmp_path):
    (tmp_path / "a.zip").write_bytes(b"nope")
    with pytest.raises(kl.LayoutError, match="a.zip: not a readable zip"):
        kl.safe_extract(tmp_path / "a.zip", tmp_path / "out")
