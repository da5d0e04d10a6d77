"""The gallery database: transactions, concurrent enrolment, kills, erasure, old galleries."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from iam_writers_tfds import synth
from models import runtime
from models.runtime.gallery import Gallery, GalleryError, gallery_file, upgrade
from tests.conftest import REPO, as_another_user, cli

LEGACY = REPO / "tests" / "data" / "legacy_gallery"  # written by the npz + json code (59a0349)


def _features(n: int, seed: int, dim: int = 8, bins: int = 136):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb, rng.integers(0, 50, (n, bins)).astype(np.float64)


def _hashes(prefix: str, n: int) -> list[str]:
    return [hashlib.sha256(f"{prefix}{i}".encode()).hexdigest() for i in range(n)]


def _new(tmp_path: Path, fingerprint: str | None = "fp", descriptor: str | None = "hinge-l10-b16"):
    return Gallery.open(tmp_path / "g", create=True, fingerprint=fingerprint,
                        descriptor=descriptor)


def test_round_trip_aggregates_and_mismatch_names_only_what_differs(tmp_path):
    g = _new(tmp_path)
    emb, hinge = _features(3, 0)
    g.add("ann", ["a1", "a2"], _hashes("a", 2), emb[:2], hinge[:2])
    g.add("bob", ["b1"], _hashes("b", 1), emb[2:], hinge[2:])
    g.close()
    back = Gallery.open(tmp_path / "g.sqlite")
    assert back.path == gallery_file(tmp_path / "g") == tmp_path / "g.sqlite"
    snap = back.snapshot()
    assert snap.writers == ["ann", "bob"]
    np.testing.assert_allclose(snap.centroids, [runtime.unit(emb[:2].sum(0)), emb[2]],
                               rtol=1e-6)
    np.testing.assert_allclose(snap.hinge_sums, [hinge[:2].sum(0), hinge[2]])
    assert snap.hinge_sums.dtype == np.float32  # as identification computes
    assert [w["images"] for w in back.writers()] == [2, 1]
    assert [i["path"] for i in back.images("ann")] == ["a1", "a2"] and back.check() == []
    back.require("fp", "hinge-l10-b16", exact=True)
    with pytest.raises(GalleryError, match=r"built by model fp, not by model xyz\. "):
        back.require("xyz", "hinge-l10-b16")
    with pytest.raises(GalleryError, match=r"built by model fp, not by no model\. "):
        back.require(None, "hinge-l10-b16", exact=True)  # enrolling must add both
    with pytest.raises(GalleryError, match="embeddings of size 4, but the gallery holds size 8"):
        back.add("cat", ["c"], _hashes("c", 1), emb[:1, :4], hinge[:1])
    info = back.info()
    assert (info["writers"], info["images"], info["schema"], info["hinge_dim"]) == (2, 3, 1, 136)


def test_sums_are_stored_in_the_dtype_the_gallery_was_made_with(tmp_path, monkeypatch):
    """A new gallery stores its writers' sums in float32, half the bytes to read at open; one
    made in float64 before keeps float64 as it grows, and both read the same sums."""
    from models.runtime import gallery as module

    emb, hinge = _features(3, 2)
    hinge[:, 0] += 0.1  # not exact in float32: each gallery must read its own
    sizes = {}
    for dtype in ("<f8", "<f4"):
        monkeypatch.setattr(module, "SUM_DTYPE", np.dtype(dtype))
        g = Gallery.open(tmp_path / dtype[1:], create=True, fingerprint="fp",
                         descriptor="hinge-l10-b16")
        g.add("ann", ["a1"], _hashes(dtype + "a", 1), emb[:1], hinge[:1])
        g.close()
        monkeypatch.setattr(module, "SUM_DTYPE", np.dtype("<f4"))  # the code of today
        g = Gallery.open(tmp_path / dtype[1:])
        g.add("ann", ["a2"], _hashes(dtype + "a2", 1), emb[1:2], hinge[1:2])
        g.add("bob", ["b1"], _hashes(dtype + "b", 1), emb[2:], hinge[2:])
        snap = g.snapshot()
        assert snap.hinge_sums.dtype == np.float32 and g.check() == []
        np.testing.assert_allclose(snap.hinge_sums, [hinge[:2].sum(0), hinge[2]], rtol=1e-6)
        sizes[dtype] = {len(r[0]) for r in g.db.execute("SELECT hinge_sum FROM writers")}
        assert g.info()["sum_dtype"] == dtype
        g.close()
    assert sizes == {"<f8": {136 * 8}, "<f4": {136 * 4}}


def test_check_finds_a_sum_that_disagrees_but_not_float32_rounding(tmp_path):
    """Sums stored in float32 round at every enrolment: a sum that cancels down to a small
    total keeps the rounding of its large terms, and is sound; a sum that counts an image
    twice is not."""
    g = _new(tmp_path)
    emb, hinge = _features(3, 3)
    hinge[0, 0], hinge[1, 0], hinge[2, 0] = 1000.1, 0.0001, -1000.1
    g.add("ann", ["a1", "a2"], _hashes("a", 2), emb[:2], hinge[:2])  # rounded to float32
    g.add("ann", ["a3"], _hashes("a3", 1), emb[2:], hinge[2:])  # cancels down to 0.0001
    total = np.frombuffer(g.db.execute("SELECT hinge_sum FROM writers").fetchone()[0],
                          np.float32)
    assert not np.isclose(total[0], hinge[:, 0].sum(), rtol=1e-6, atol=1e-6)
    assert g.check() == []
    g.db.execute("UPDATE writers SET hinge_sum = ?",
                 ((total + hinge[0].astype(np.float32)).tobytes(),))
    assert g.check() == ["ann: the hinge sum disagrees with the images"]


def test_an_enrolment_is_all_or_nothing_and_an_image_has_one_writer(tmp_path):
    g = _new(tmp_path)
    emb, hinge = _features(4, 1)
    g.add("ann", ["a1", "a2"], _hashes("a", 2), emb[:2], hinge[:2])
    # the second image is ann's: bob's whole enrolment is refused, naming both writers
    with pytest.raises(GalleryError, match="a2: already enrolled as ann's .*not enrolling it "
                                           "as bob's"):
        g.add("bob", ["b1", "a2"], [_hashes("b", 1)[0], _hashes("a", 2)[1]], emb[2:], hinge[2:])
    assert [w["writer"] for w in g.writers()] == ["ann"] and g.check() == []
    again = g.add("ann", ["a2 again", "a3"], [_hashes("a", 2)[1], _hashes("a", 3)[2]],
                  emb[2:], hinge[2:])
    assert (again.added, again.skipped) == (1, ["a2 again"])
    assert g.writers()[0]["images"] == 3 and g.check() == []


def test_a_gallery_another_process_keeps_locked_is_named_in_one_line(tmp_path, monkeypatch):
    """A writer that outlasts the wait gave SQLite's traceback ("database is locked"); a
    read of a gallery in rollback-journal mode that a writer holds said it was corrupt."""
    from models.runtime import gallery as module

    monkeypatch.setattr(module, "BUSY_TIMEOUT_S", 0.2)
    emb, hinge = _features(2, 3)
    def enrol(file: Path) -> None:  # an open gallery, then another writes
        g = Gallery.open(file)
        g.add("ann", ["a1"], _hashes("a", 1), emb[:1], hinge[:1])
        g.close()

    def read(file: Path) -> None:  # another holds a rollback journal's exclusive lock
        Gallery.open(file).close()

    for journal, lock, call in (("WAL", "IMMEDIATE", enrol), ("DELETE", "EXCLUSIVE", read)):
        file = tmp_path / f"{journal}.sqlite"
        Gallery.open(file, create=True, fingerprint="fp", descriptor="hinge-l10-b16",
                     journal=journal).close()
        other = sqlite3.connect(file, isolation_level=None)
        other.execute(f"BEGIN {lock}")
        with pytest.raises(GalleryError, match=rf"^{file}: another process kept the gallery "
                                               r"locked for 0.2 s \(database is locked\).*"
                                               r"Run this again when that is done\.$"):
            call(file)
        other.rollback()
        call(file)  # once the other is done
        other.close()


def test_enroll_skips_known_images_without_computing_their_features(tmp_path):
    class Counting:
        fingerprint, descriptor, dpi, calls = None, "hinge-l10-b16", None, 0
        model = local = None  # no model: no exemplar SVMs to solve

        def __call__(self, images, thumbnails=False):
            self.calls += len(images)
            self.read = [runtime.Read(None, 0, 300.0)] * len(images)
            self.thumbnails = [b"png"] * len(images)
            return None, np.ones((len(images), 136))

    files = _line_files(tmp_path / "lines", 3, seed=5)
    features = Counting()
    first = runtime.enroll(tmp_path / "g", features, "ann", files[:2] + files[:1])
    assert (first.added, first.skipped, features.calls) == (2, [], 2)  # one copy of a twice
    second = runtime.enroll(tmp_path / "g", features, "ann", files)
    assert (second.added, second.skipped, features.calls) == (1, [str(f) for f in files[:2]], 3)


def test_removed_features_are_gone_from_the_file(tmp_path):
    g = _new(tmp_path)
    emb, hinge = _features(6, 2)
    g.add("ann", ["a"], _hashes("a", 1), emb[:1], hinge[:1])
    duals = np.array([0.123, -0.456, 0.789])  # her exemplar SVM, derived from her features
    g.add("secret-writer-zelda", ["z1", "z2"], _hashes("z", 2), emb[1:3], hinge[1:3],
          exemplar=lambda sums: ("cohort", duals))
    g.add("bob", ["b"], _hashes("b", 1), emb[3:4], hinge[3:4])
    marks = [emb[1].astype("<f4").tobytes(), hinge[2].astype("<f4").tobytes(),
             b"secret-writer-zelda", _hashes("z", 2)[0].encode(), duals.astype("<f8").tobytes()]

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.glob("g.sqlite*"))

    assert all(m in on_disk() for m in marks)  # the search can find them
    assert g.remove("secret-writer-zelda") == 2
    assert not any(m in on_disk() for m in marks)
    assert [w["writer"] for w in g.writers()] == ["ann", "bob"] and g.check() == []
    with pytest.raises(GalleryError, match="no writer 'zelda'"):
        g.remove("zelda")


def test_a_backup_holds_what_was_committed_at_one_moment_and_is_a_gallery_itself(tmp_path):
    """`gallery backup` copies through SQLite's backup API: enrolments committed but still
    in the write-ahead log are in it (a copy of the .sqlite file alone misses them), one
    under way is not, and the copy opens as a gallery in write-ahead-log mode."""
    g = _new(tmp_path)
    emb, hinge = _features(3, 2)
    g.add("ann", ["a"], _hashes("a", 1), emb[:1], hinge[:1])
    g.close()
    holder = sqlite3.connect(tmp_path / "g.sqlite")  # keeps the log from being folded in
    holder.execute("SELECT count(*) FROM writers").fetchone()
    late = Gallery.open(tmp_path / "g")
    late.add("bob", ["b1", "b2"], _hashes("b", 2), emb[1:], hinge[1:])
    late.close()
    assert (tmp_path / "g.sqlite-wal").stat().st_size > 0  # bob is in the log alone
    holder.execute("BEGIN IMMEDIATE")  # another enrolment under way, not committed
    holder.execute("INSERT INTO writers (name, enrolled, updated, n_images) VALUES "
                   "('zed', 'now', 'now', 0)")
    (tmp_path / "keep").mkdir()
    proc = cli("gallery", "backup", tmp_path / "g", tmp_path / "keep" / "g-2026-12")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (f"backed up {tmp_path / 'g.sqlite'} (2 writers, 3 images) into "
                           f"{tmp_path / 'keep' / 'g-2026-12.sqlite'}, checked sound\n")
    holder.rollback()
    holder.close()
    assert [p.name for p in (tmp_path / "keep").iterdir()] == ["g-2026-12.sqlite"]
    copy, g = Gallery.open(tmp_path / "keep" / "g-2026-12"), Gallery.open(tmp_path / "g")
    assert copy.writers() == g.writers() and copy.dates()[:2] == g.dates()[:2]
    *history, backed = copy.history()  # and says what it is a copy of, since when
    assert history == g.history() and (backed.action, backed.detail) == (
        "backed up", f"from {tmp_path / 'g.sqlite'}") and copy.check() == []
    np.testing.assert_array_equal(copy.snapshot().hinge_sums, g.snapshot().hinge_sums)
    assert copy.db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    proc = cli("gallery", "backup", tmp_path / "g", tmp_path / "keep" / "g-2026-12.sqlite")
    assert proc.returncode == 2 and "g-2026-12.sqlite: already exists. Back up into a new " \
        "file." in proc.stderr
    proc = cli("gallery", "backup", tmp_path / "g", tmp_path / "nowhere" / "g")
    assert proc.returncode == 2 and "nowhere: no such folder" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.sqlite", "g.sqlite-shm",
                                                          "g.sqlite-wal", "keep"]


def test_a_stored_exemplar_svm_is_read_for_its_cohort_and_the_writers_images_as_they_are(
        tmp_path):
    g = _new(tmp_path)
    emb, hinge = _features(4, 2)

    def solve(sums: np.ndarray) -> tuple[str, np.ndarray]:  # duals that show their sums
        return "cohort-a", np.r_[sums[:3], 7.0]

    g.add("ann", ["a1"], _hashes("a1", 1), emb[:1], hinge[:1], exemplar=solve)
    g.add("bob", ["b1"], _hashes("b1", 1), emb[1:2], hinge[1:2])  # enrolled without one
    stored = g.snapshot("cohort-a").duals
    np.testing.assert_array_equal(stored[0], np.r_[hinge[0, :3], 7.0])
    assert stored[1] is None and g.info()["exemplar_svms"] == 1
    assert g.snapshot("cohort-b").duals == [None, None]  # another model's cohort
    assert g.snapshot().duals == [None, None]
    g.add("ann", ["a2"], _hashes("a2", 1), emb[2:3], hinge[2:3])  # her images changed
    assert g.snapshot("cohort-a").duals == [None, None] and g.info()["exemplar_svms"] == 0
    g.add("ann", ["a3"], _hashes("a3", 1), emb[3:4], hinge[3:4], exemplar=solve)
    np.testing.assert_array_equal(g.snapshot("cohort-a").duals[0],
                                  np.r_[(hinge[0] + hinge[2] + hinge[3])[:3], 7.0])
    assert g.check() == []


def test_the_history_dates_every_change_and_a_removal_erases_the_name(tmp_path):
    """A gallery kept for months says what changed and when, a removal included; a writer
    removed at their request leaves no name behind, under any name they had."""
    g = _new(tmp_path)
    emb, hinge = _features(6, 4)
    g.add("zelda-before", ["z1", "z2"], _hashes("z", 2), emb[:2], hinge[:2])
    g.add("bob", ["b1"], _hashes("b", 1), emb[2:3], hinge[2:3])
    g.add("zelda-before", ["z2", "z3"], _hashes("z", 3)[1:], emb[3:5], hinge[3:5])  # z2 known
    g.rename("zelda-before", "zelda-after")
    assert [(e.action, e.writer, e.images, e.detail) for e in g.history("zelda-after")] == [
        ("enrolled", "zelda-before", 2, None), ("enrolled", "zelda-before", 1, None),
        ("renamed", "zelda-after", None, "zelda-before")]
    g.remove("bob", keep_name=True)  # a correction: the name stays on record
    g.add("bob", ["b2"], _hashes("b2", 1), emb[5:], hinge[5:])  # another person, that name
    assert [(e.action, e.images) for e in g.history("bob")] == [("enrolled", 1)]
    assert g.remove("zelda-after") == 3
    events = g.history()
    assert [(e.action, e.writer, e.images) for e in events] == [
        ("created", None, None), ("enrolled", None, 2), ("enrolled", "bob", 1),
        ("enrolled", None, 1), ("renamed", None, None), ("removed", "bob", 1),
        ("enrolled", "bob", 1), ("removed", None, 3)]
    assert events[0].detail == "built by model fp and descriptor hinge-l10-b16"
    assert [e.at for e in events] == sorted(e.at for e in events) and g.info()["last_change"] == (
        f"{events[-1].at}, removed a writer whose name was erased (3 images)")
    g.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("g.sqlite*"))
    assert b"zelda" not in on_disk and b"bob" in on_disk
    proc = cli("gallery", "history", tmp_path / "g", "--writer", "bob")
    assert proc.returncode == 0 and proc.stdout == f"{events[6].at}  enrolled bob (1 image)\n"
    proc = cli("gallery", "history", tmp_path / "g", "--writer", "zelda-after")
    assert proc.returncode == 2 and "no writer 'zelda-after' in the gallery's history" in \
        proc.stderr
    # a gallery from before the history: it begins with the next change, and says so
    db = sqlite3.connect(tmp_path / "g.sqlite")
    db.execute("DROP TABLE history")
    db.close()
    proc = cli("gallery", "history", tmp_path / "g")
    assert proc.stdout == (f"{tmp_path / 'g.sqlite'}: no history yet: it was made by an "
                           "iam-writers version that kept none; its next change begins it "
                           "(`gallery list` and `show` date every enrolment)\n")
    old = Gallery.open(tmp_path / "g")
    assert old.history() == [] and old.info()["last_change"].endswith(
        "its latest enrolment or rename (no history before this version)")
    proc = cli("gallery", "history", tmp_path / "g", "--writer", "bob")  # enrolled before
    assert proc.returncode == 0 and "bob was enrolled before the gallery's history began" in \
        proc.stdout
    old.rename("bob", "robert")
    proc = cli("gallery", "history", tmp_path / "g", "--json")
    assert [(e["action"], e["writer"], e["detail"]) for e in json.loads(proc.stdout)] == [
        ("renamed", "robert", "bob")]
    proc = cli("gallery", "history", tmp_path / "g")
    assert proc.stdout.splitlines()[0] == (
        f"{old.path}: its history begins {old.history()[0].at}; the changes before were made "
        "by an iam-writers version that kept none (`gallery list` and `show` date every "
        "enrolment)")


def test_rename_refuses_a_name_in_use(tmp_path):
    g = _new(tmp_path, fingerprint=None)
    _, hinge = _features(2, 3)
    g.add("ann", ["a"], _hashes("a", 1), None, hinge[:1])
    g.add("bob", ["b"], _hashes("b", 1), None, hinge[1:])
    with pytest.raises(GalleryError, match="a writer 'bob' is already enrolled"):
        g.rename("ann", "bob")
    g.rename("ann", "anne")
    assert [w["writer"] for w in g.writers()] == ["anne", "bob"]


@pytest.mark.parametrize("name", ["", " ", "x\ny", "tab\there", " bob", "bob ", "a\u2028b"])
def test_a_writer_name_is_one_line_of_text(name, tmp_path):
    """Every listing and answer shows a name on one line (`gallery list` tab-separated): a
    name with a line break, a tab or a space at an end was enrolled and broke them. It is
    refused, shown escaped, before a new gallery's file is made; so is a rename to it."""
    with pytest.raises(GalleryError, match="empty writer name|one line of text") as err:
        runtime.enroll(tmp_path / "new", runtime.features_for(None, "hinge"), name,
                       [np.full((64, 300), 250, np.uint8)])
    assert "\n" not in str(err.value) and "\t" not in str(err.value)
    assert not list(tmp_path.iterdir())
    g = _new(tmp_path, fingerprint=None)
    g.add("Zoë Ångström", ["a"], _hashes("a", 1), None, _features(1, 3)[1])
    with pytest.raises(GalleryError, match="empty writer name|one line of text"):
        g.rename("Zoë Ångström", name)
    assert [w["writer"] for w in g.writers()] == ["Zoë Ångström"]


def test_a_gallerys_names_from_before_the_rule_are_kept_by_a_rebuild(tmp_path):
    """A name enrolled before names were checked (a space at its end) is the user's: a
    rebuild keeps it rather than refusing the gallery; a rename mends it."""
    from models.runtime import identify

    hinge = runtime.features_for(None, "hinge")
    runtime.enroll(tmp_path / "old", hinge, "bob", _line_files(tmp_path / "b", 1, seed=2))
    with sqlite3.connect(tmp_path / "old.sqlite") as db:
        db.execute("UPDATE writers SET name = 'bob ' WHERE name = 'bob'")
    identify.rebuild(tmp_path / "old", tmp_path / "new", hinge)
    new = Gallery.open(tmp_path / "new")
    assert [w["writer"] for w in new.writers()] == ["bob "]
    new.rename("bob ", "bob")
    assert [w["writer"] for w in new.writers()] == ["bob"]


def test_a_gallery_from_before_the_database_is_converted_on_first_use(tmp_path):
    for suffix in (".npz", ".json"):
        shutil.copy(LEGACY.with_suffix(suffix), tmp_path / f"old{suffix}")
    arrays = np.load(LEGACY.with_suffix(".npz"))
    g = Gallery.open(tmp_path / "old")
    assert (g.fingerprint, g.descriptor) == ("a1b2c3d4", "hinge-l10-b16")
    snap = g.snapshot()
    assert snap.writers == ["ann", "bob"] and [i["path"] for i in g.images("ann")] == [
        "ann-1.png", "ann-2.png"]
    np.testing.assert_allclose(snap.hinge_sums, [arrays["hinge"][:2].sum(0), arrays["hinge"][2]])
    np.testing.assert_allclose(snap.centroids[1], arrays["embeddings"][2], rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) \
        == ["old.sqlite"]
    with pytest.raises(FileExistsError, match="nothing to upgrade"):
        upgrade(tmp_path / "old")
    for suffix in (".npz", ".json"):  # and through the command line
        shutil.copy(LEGACY.with_suffix(suffix), tmp_path / f"cli{suffix}")
    proc = cli("gallery", "upgrade", tmp_path / "cli")
    assert proc.returncode == 0 and "cli.sqlite" in proc.stdout, proc.stderr
    assert Gallery.open(tmp_path / "cli").snapshot().writers == ["ann", "bob"]


def test_an_old_gallery_in_a_read_only_folder_is_read_in_memory(tmp_path, monkeypatch):
    from models.runtime import gallery

    for suffix in (".npz", ".json"):
        shutil.copy(LEGACY.with_suffix(suffix), tmp_path / f"old{suffix}")

    def read_only(path):  # what upgrade meets in a read-only folder (tests run as root)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(gallery, "upgrade", read_only)
    g = Gallery.open(tmp_path / "old")
    assert g.snapshot().writers == ["ann", "bob"] and g.check() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json", "old.npz"]


def test_a_full_disk_is_named_and_nothing_of_the_change_is_kept(tmp_path, monkeypatch):
    """An enrolment, a new gallery or a backup on a full disk ended in SQLite's traceback
    ("database or disk is full"), an enrolment's at its commit. SQLite's own limit on a
    file's pages raises that error here, as a full disk does."""
    from iam_writers_tfds.atomic import NoSpaceError

    g = _new(tmp_path)
    emb, hinge = _features(3, 5)
    g.add("ann", ["a1"], _hashes("a", 1), emb[:1], hinge[:1])
    pages, = g.db.execute("PRAGMA page_count").fetchone()
    g.db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(GalleryError, match=r"g\.sqlite: the disk is full \(database or disk "
                                           r"is full\); nothing of this change was written\."):
        g.add("bob", ["b1", "b2"], _hashes("b", 2), emb[1:], hinge[1:],
              thumbnails=[bytes(20000)] * 2)  # more than the free space of its pages
    assert g.snapshot().writers == ["ann"] and g.check() == []
    connect = sqlite3.connect

    def full(*args, **kwargs) -> sqlite3.Connection:  # every file SQLite makes now is full
        db = connect(*args, **kwargs)
        db.execute("PRAGMA max_page_count = 2")
        return db

    monkeypatch.setattr(sqlite3, "connect", full)
    before = sorted(tmp_path.iterdir())
    for make in (lambda: g.backup(tmp_path / "copy"),
                 lambda: Gallery.open(tmp_path / "new", create=True, fingerprint="fp")):
        with pytest.raises(NoSpaceError, match=rf"^{tmp_path}/(copy|new)\.sqlite: the disk of "
                                               rf"{tmp_path} is full \(database or disk is "
                                               r"full\); nothing was written\."):
            make()
        assert sorted(tmp_path.iterdir()) == before


def test_a_gallery_on_a_network_share_keeps_a_rollback_journal(tmp_path, monkeypatch):
    """SQLite's write-ahead log needs memory shared on one machine: on NFS or SMB, and on
    WSL's /mnt/c, it fails ("disk I/O error") or, between machines, corrupts. A gallery made
    there (or backed up there) takes the rollback journal; one on a local disk mounted
    inside the share keeps the log."""
    from models.runtime import gallery

    share, local = tmp_path / "case files", tmp_path / "case files" / "local"
    local.mkdir(parents=True)
    table = tmp_path / "mounts"
    table.write_text(f"/dev/sda1 / ext4 rw 0 0\n"
                     f"server:/cases {str(share).replace(' ', chr(92) + '040')} nfs4 rw 0 0\n"
                     f"/dev/sdb1 {str(local).replace(' ', chr(92) + '040')} ext4 rw 0 0\n")
    monkeypatch.setattr(gallery, "MOUNTS", table)
    assert gallery.shared_filesystem(share / "sub") == "nfs4"

    def journal(file: Path) -> str:
        db = sqlite3.connect(file)
        try:
            return db.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            db.close()

    emb, hinge = _features(1, 4)
    for folder, mode in ((share / "sub", "delete"), (local, "wal")):
        g = Gallery.open(folder / "g", create=True, fingerprint="fp",
                         descriptor="hinge-l10-b16")
        g.add("ann", ["a1"], _hashes("a", 1), emb, hinge)
        g.close()
        assert journal(folder / "g.sqlite") == mode
    backup = Gallery.open(local / "g").backup(share / "backup")
    assert journal(backup) == "delete" and Gallery.open(backup).snapshot().writers == ["ann"]


def test_a_file_name_that_is_not_utf8_is_enrolled_and_a_writer_name_is_refused(tmp_path):
    """An image whose file name is not UTF-8 (an old archive's Latin-1 `\\xff`, which Python
    holds as a lone surrogate) ended enroll in SQLite's UnicodeEncodeError, and printing it
    under a UTF-8 locale in another; a writer's name typed on a Latin-1 terminal too. And
    `--json` wrote every name outside ASCII escaped ("\\u0141ukasz"), for that file name's
    sake."""
    g = _new(tmp_path)
    emb, hinge = _features(2, 9)
    odd = str(tmp_path / "\udcffname.png")  # the file b"\xffname.png", as Python names it
    hashes = _hashes("o", 2)
    g.add("Łukasz", [odd, "plain.png"], hashes, emb, hinge, thumbnails=[b"png1", b"png2"])
    assert [i["path"] for i in g.images("Łukasz")] == [odd, "plain.png"]
    assert [s.path for s in g.sources()[0][1]] == [odd, "plain.png"]
    assert g.enrolment("Łukasz").paths == [odd, "plain.png"]
    assert g.owners(hashes[:1]) == {hashes[0]: ("Łukasz", odd)}
    assert g.thumbnails("Łukasz", limit=1) == [(odd, b"png1")] and g.check() == []
    g.close()
    strict = {"PYTHONIOENCODING": "utf-8:strict"}  # as under en_US.UTF-8 (C.UTF-8 escapes)
    shown = cli("gallery", "show", tmp_path / "g.sqlite", "Łukasz", env=strict)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"{tmp_path}/\\udcffname.png\t")
    # JSON: the name as it reads where stdout is UTF-8, the file name's byte as JSON's escape
    listed = cli("gallery", "show", tmp_path / "g.sqlite", "Łukasz", "--json", env=strict)
    assert f'"{tmp_path}/\\udcffname.png"' in listed.stdout
    assert json.loads(listed.stdout)[0]["path"] == odd
    named = cli("gallery", "list", tmp_path / "g.sqlite", "--json", env=strict)
    assert '"Łukasz"' in named.stdout and json.loads(named.stdout)[0]["writer"] == "Łukasz"
    latin = cli("gallery", "list", tmp_path / "g.sqlite", "--json",
                env={"PYTHONIOENCODING": "latin-1"})
    assert '"\\u0141ukasz"' in latin.stdout and latin.stdout.isascii()
    renamed = cli("gallery", "rename", tmp_path / "g.sqlite", "Łukasz", "M\udcfcller", env=strict)
    assert renamed.returncode == 2 and renamed.stderr.endswith(
        "argument new: the writer name 'M\\udcfcller' is not UTF-8 text (the terminal or file "
        "sent it in another encoding, such as Latin-1). Set the terminal to UTF-8, or pass "
        "the name in ASCII.\n")
    with pytest.raises(GalleryError, match="is not UTF-8 text"):
        runtime.enroll(tmp_path / "g", None, "M\udcfcller", [np.zeros((9, 9), np.uint8)])


@pytest.mark.parametrize("case", ["read-only file", "read-only folder", "log in the folder",
                                  "another user's log", "unforeseen"])
def test_a_gallery_this_user_cannot_write_is_read_and_refuses_changes_in_one_line(
        tmp_path, monkeypatch, shared_folder, case):
    """A gallery in a read-only folder (an archive, a read-only share) was called corrupt:
    SQLite must create its -shm file to read a WAL database. One read-only in a writable
    folder was read, but left -shm and -wal files that its owner could not write, and a
    change ended in SQLite's traceback."""
    import os
    import pwd

    if os.geteuid() != 0 and case == "another user's log":
        pytest.skip("needs two users: the tests run as root in CI")
    emb, hinge = _features(2, 7)
    folder = shared_folder
    file = folder / "g.sqlite"
    g = Gallery.open(file, create=True, fingerprint="fp", descriptor="hinge-l10-b16")
    g.add("ann", ["a1"], _hashes("a", 1), emb[:1], hinge[:1])
    g.add("bob", ["b1"], _hashes("b", 1), emb[1:], hinge[1:])
    g.close()
    if case == "log in the folder":  # a change not yet copied from the -wal into the file
        other = sqlite3.connect(file, isolation_level=None)
        other.execute("PRAGMA wal_autocheckpoint = 0")
        other.execute("UPDATE writers SET name = 'cy' WHERE name = 'bob'")
        for name in ("g.sqlite", "g.sqlite-wal"):  # a copy of both, without the -shm
            shutil.copy(folder / name, tmp_path / name)
        other.close()
        for name in ("g.sqlite", "g.sqlite-wal"):
            shutil.copy(tmp_path / name, folder / name)
    if case in ("another user's log", "read-only folder") and os.geteuid() == 0:
        os.chown(file, pwd.getpwnam("nobody").pw_uid, -1)  # the gallery is nobody's
    if case == "another user's log":  # root read it with sqlite3, leaving these
        (folder / "g.sqlite-wal").write_bytes(b"")
        (folder / "g.sqlite-shm").write_bytes(bytes(32768))
    elif case != "read-only folder":
        file.chmod(0o444)
    if case in ("read-only folder", "log in the folder"):
        folder.chmod(0o555)
    before = file.read_bytes()
    if case == "unforeseen":  # a refusal that the permissions did not foretell
        from models.runtime import gallery

        monkeypatch.setattr(gallery, "_read_only", lambda file: None)

    class Unused:  # an enrolment refused before any image is read
        fingerprint, descriptor = "fp", "hinge-l10-b16"

        def __call__(self, images, thumbnails=False):
            raise AssertionError("features computed")

    def enrol(path: str) -> str:
        try:
            runtime.enroll(path, Unused(), "dan", [np.zeros((40, 40), np.uint8)])
        except (GalleryError, PermissionError, AssertionError) as err:
            return str(err)
        return "enrolled"

    def read_then_change() -> dict:
        g = Gallery.open("g.sqlite")
        writers = g.snapshot().writers
        problems = g.check()
        try:
            g.remove("ann")
        except GalleryError as err:
            return {"writers": writers, "problems": problems, "error": str(err),
                    "enrol": enrol("g.sqlite"),  # and a new one beside it, where refused:
                    "new": enrol("new") if not os.access(".", os.W_OK) else None}
        return {"writers": writers, "problems": problems}

    got = as_another_user(folder, read_then_change)
    if case == "log in the folder":
        assert got == {"error": "g.sqlite: this user cannot write the gallery (a read-only "
                       "file), and g.sqlite-wal beside it holds changes not yet in the "
                       "gallery, which SQLite cannot read without writing there. Run this "
                       "as a user who can write it, or copy the gallery with its -wal file "
                       "to a folder you can write."}
    else:
        why = {"read-only file": "this user cannot write the gallery (a read-only file)",
               "unforeseen": "SQLite could not write it (attempt to write a readonly "
                             "database)",
               "read-only folder": "this user cannot write the gallery's folder",
               "another user's log": "this user cannot write g.sqlite-wal and "
                                     "g.sqlite-shm beside it (another user's)"}[case]
        refused = (f"g.sqlite: {why}; it can be read, not changed. Run this as a user "
                   "who can write it, or copy it to a folder you can write and pass the "
                   "copy.")
        new = ("new.sqlite: cannot write in . (Permission denied). Choose a folder you "
               "may write in." if case == "read-only folder" else None)
        assert got == {"writers": ["ann", "bob"], "problems": [], "error": refused,
                       "enrol": "features computed" if case == "unforeseen" else refused,
                       "new": new}
    assert file.read_bytes() == before  # nothing changed, nothing left beside it
    left = {"log in the folder": ["g.sqlite", "g.sqlite-wal"],
            "another user's log": ["g.sqlite", "g.sqlite-shm", "g.sqlite-wal"],
            "unforeseen": ["g.sqlite", "g.sqlite-shm", "g.sqlite-wal"]}
    assert sorted(p.name for p in folder.iterdir()) == left.get(case, ["g.sqlite"])


def test_a_gallery_linked_from_a_read_only_folder_is_written_where_it_is(shared_folder):
    """SQLite writes -wal and -shm beside a link's target: a gallery linked from a read-only
    folder into a writable one was taken for read-only, its changes refused."""
    import os
    import pwd

    (shared_folder / "data").mkdir()
    (shared_folder / "data").chmod(0o777)  # mkdir's mode passes through the umask
    g = Gallery.open(shared_folder / "data" / "g", create=True, fingerprint="fp",
                     descriptor="hinge-l10-b16")
    emb, hinge = _features(1, 8)
    g.add("ann", ["a1"], _hashes("a", 1), emb, hinge)
    g.close()
    if os.geteuid() == 0:
        os.chown(shared_folder / "data" / "g.sqlite", pwd.getpwnam("nobody").pw_uid, -1)
    (shared_folder / "links").mkdir()
    (shared_folder / "links" / "g.sqlite").symlink_to("../data/g.sqlite")
    (shared_folder / "links").chmod(0o555)

    def rename() -> dict:
        g = Gallery.open("links/g.sqlite")
        g.rename("ann", "cy")
        return {"writers": g.snapshot().writers}

    assert as_another_user(shared_folder, rename) == {"writers": ["cy"]}


@pytest.mark.parametrize("content", [b"", b"not a database at all\n" * 10, "truncated"])
def test_a_broken_gallery_file_gets_one_line_and_is_not_changed(tmp_path, content):
    path = tmp_path / "g.sqlite"
    if content == "truncated":
        g = _new(tmp_path)
        for i in range(40):
            emb, hinge = _features(5, i)
            g.add(f"w{i}", [f"{i}-{k}" for k in range(5)], _hashes(f"{i}-", 5), emb, hinge)
        g.close()
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    line = tmp_path / "line.png"
    cv2.imwrite(str(line), synth.render_line(synth.WriterStyle.sample(np.random.default_rng(0)),
                                             np.random.default_rng(0)))
    for args in (("identify", path, line), ("gallery", "list", path),
                 ("enroll", path, "--writer", "x", line)):
        proc = cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "gallery" in proc.stderr, proc.stderr
        assert str(path) in proc.stderr and "Traceback" not in proc.stderr
        assert path.read_bytes() == content


def _line_files(folder: Path, n: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    style = synth.WriterStyle.sample(rng)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        out.append(folder / f"{seed}-{i}.png")
        cv2.imwrite(str(out[-1]), synth.render_line(style, rng))
    return out


def test_sixteen_concurrent_enrolments_lose_nothing(tmp_path):
    lines = {f"w{k:02d}": _line_files(tmp_path / "lines", 2, k) for k in range(16)}
    procs = [subprocess.Popen([sys.executable, "-m", "iam_writers", "enroll", tmp_path / "g",
                               "--writer", w, *files], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w, files in lines.items()]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    g = Gallery.open(tmp_path / "g")
    assert sorted(w["writer"] for w in g.writers()) == sorted(lines)
    assert all(w["images"] == 2 for w in g.writers()) and g.check() == []
    created, *enrolled = g.history()  # one process made it; each enrolment is on record
    assert created.action == "created" and sorted(
        (e.action, e.writer, e.images) for e in enrolled) == [("enrolled", w, 2) for w in lines]


# Enrols writer sys.argv[2] with N synthetic images into sys.argv[1], then says "done".
ENROLLER = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    from models.runtime.gallery import Gallery
    path, writer, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    g = Gallery.open(path, create=True, fingerprint="fp", descriptor="hinge-l10-b16")
    rng = np.random.default_rng(len(writer))
    emb = rng.normal(size=(n, 64)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    hinge = rng.integers(0, 50, (n, 136)).astype(np.float64)
    hashes = [hashlib.sha256(f"{writer}/{i}".encode()).hexdigest() for i in range(n)]
    print("ready", flush=True)
    g.add(writer, [f"{writer}/{i}" for i in range(n)], hashes, emb, hinge)
    print("done", flush=True)
""")


def _enroller(path: Path, writer: str, n: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", ENROLLER, str(path), writer, str(n)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)


def _enrolment_seconds(path: Path, n: int) -> float:
    """How long one enrolment of `n` images takes on this machine, from "ready" to "done"."""
    proc = _enroller(path, "timed", n)
    assert proc.stdout.readline() == "ready\n"
    start = time.monotonic()
    assert proc.stdout.readline() == "done\n"
    took = time.monotonic() - start
    assert proc.wait() == 0
    return took


def test_enrolments_killed_at_random_moments_are_all_or_nothing(tmp_path):
    rng = np.random.default_rng(0)
    n, outcomes = 3000, []
    # kill moments span twice an enrolment as timed here (0.03 s on a fast machine, several
    # times that on a slow one), so that about half of them land before the commit
    took = _enrolment_seconds(tmp_path / "timing", n)
    for trial in range(20):
        proc = _enroller(tmp_path / "g", f"w{trial}", n)
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0, 2 * took))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        g = Gallery.open(tmp_path / "g")
        counts = {w["writer"]: w["images"] for w in g.writers()}
        assert counts.get(f"w{trial}", n) == n and g.check() == []
        # the history records the enrolments committed, and those alone
        assert [e.writer for e in g.history()[1:]] == list(counts)
        outcomes.append(f"w{trial}" in counts)
        g.close()
    print(f"kill trials: {sum(outcomes)} enrolments committed, {20 - sum(outcomes)} rolled back "
          f"(an enrolment took {took:.3f} s)")
    assert 0 < sum(outcomes) < 20, "every kill landed on the same side of the commit"
    assert set(counts.values()) == {n}


def test_identify_sees_only_complete_enrolments_while_others_write(tmp_path):
    """Six enrolments of 400 images each, started a little apart while a reader keeps
    opening the gallery: every state it reads is whole, and it sees the gallery grow."""
    waiting, running = [f"w{k}" for k in range(6)], []
    seen, deadline, started = set(), time.monotonic() + 120, 0.0
    while (waiting or any(p.poll() is None for p in running)) and time.monotonic() < deadline:
        if waiting and time.monotonic() - started > 0.3:
            running.append(_enroller(tmp_path / "g", waiting.pop(0), 400))
            started = time.monotonic()
        if not gallery_file(tmp_path / "g").exists():
            continue
        g = Gallery.open(tmp_path / "g")
        snap = g.snapshot()
        assert g.check() == []
        assert all(w["images"] == 400 for w in g.writers())
        seen.add(len(snap.writers))
        g.close()
    for p in running:
        assert p.wait(timeout=60) == 0
    assert len(Gallery.open(tmp_path / "g").writers()) == 6
    assert len(seen) > 1  # the reader saw the gallery grow between complete states


def test_a_query_that_is_an_enrolled_image_is_said_to_be_one(tmp_path):
    """Asking about an image that is enrolled (an exemplar asked about by mistake, or under
    another name) names its own writer, strongly, and says nothing: the answer says which
    enrolled image it is, in the JSON and in words; another file of the same content too."""
    ann, bob = _line_files(tmp_path / "a", 2, seed=1), _line_files(tmp_path / "b", 1, seed=2)
    hinge = runtime.features_for(None, "hinge")
    runtime.enroll(tmp_path / "g", hinge, "ann", [ann[0]])
    runtime.enroll(tmp_path / "g", hinge, "bob", bob)
    copy = tmp_path / "copy.png"
    shutil.copy(ann[0], copy)
    identifier = runtime.Identifier(Gallery.open(tmp_path / "g"), None)
    asked = identifier.rank_each([copy, ann[1]])
    assert asked[0]["enrolled"] == {str(copy): {"writer": "ann", "path": str(ann[0].resolve())}}
    assert "enrolled" not in asked[1]
    document = identifier.rank([ann[1], copy])
    assert list(document["enrolled"]) == [str(copy)]
    proc = cli("identify", tmp_path / "g", copy, ann[1])
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout.splitlines()
    assert f"note: the same image as ann's enrolled {ann[0].resolve()}" in said[0]
    assert "enrolled" not in said[1]


def test_rebuild_reads_each_file_as_it_was_enrolled_from_any_folder(tmp_path, monkeypatch):
    """Paths are stored absolute, with the resolution and the reading (line or page) each
    file was enrolled by: a rebuild months later needs neither the folder nor the flags."""
    from models.runtime import identify

    ann = _line_files(tmp_path / "lines", 1, seed=1)
    big = tmp_path / "lines" / "big.png"  # another of ann's lines, scanned at 600 dpi
    cv2.imwrite(str(big), cv2.resize(synth.render_line(synth.WriterStyle.sample(
        np.random.default_rng(1)), np.random.default_rng(7)), None, fx=2, fy=2))
    bob = _line_files(tmp_path / "lines", 2, seed=2)
    hinge = runtime.features_for(None, "hinge")
    monkeypatch.chdir(tmp_path / "lines")  # enrolled by relative paths
    runtime.enroll(tmp_path / "old", hinge, "ann", [Path(ann[0].name)])
    runtime.enroll(tmp_path / "old", runtime.features_for(None, "hinge", "auto", 600.0), "ann",
                   [Path(big.name)])
    runtime.enroll(tmp_path / "old", runtime.features_for(None, "hinge", "line"), "bob",
                   [Path(p.name) for p in bob])
    old = Gallery.open(tmp_path / "old")
    assert [(Path(s.path).resolve(), s.dpi, s.read_as) for _, images in old.sources()
            for s in images] == [(ann[0].resolve(), 300, "line"), (big.resolve(), 600, "line")] \
        + [(p.resolve(), 300, "line") for p in bob]
    monkeypatch.chdir(tmp_path)
    proc = cli("gallery", "show", tmp_path / "old", "ann")  # what ann is known by
    assert proc.returncode == 0, proc.stderr
    assert [(Path(line.split("\t")[0]).resolve(), line.split("\t")[1])
            for line in proc.stdout.splitlines()] == [
        (ann[0].resolve(), "line at 300 dpi"), (big.resolve(), "line at 600 dpi")]
    proc = cli("gallery", "show", tmp_path / "old", "zed")
    assert proc.returncode == 2 and "old.sqlite: no writer 'zed'" in proc.stderr
    identify.rebuild(tmp_path / "old", tmp_path / "new", hinge)
    new = Gallery.open(tmp_path / "new")
    assert new.sources() == old.sources()
    np.testing.assert_allclose(new.snapshot().hinge_sums, old.snapshot().hinge_sums)
    # a --dpi given to the rebuild wins over the recorded one: the 600-dpi line reads apart
    identify.rebuild(tmp_path / "old", tmp_path / "at300",
                     runtime.features_for(None, "hinge", "auto", 300.0))
    at300 = Gallery.open(tmp_path / "at300")
    assert [s.dpi for s in at300.sources()[0][1]] == [300, 300]
    assert not np.allclose(at300.snapshot().hinge_sums[0], old.snapshot().hinge_sums[0])
    np.testing.assert_allclose(at300.snapshot().hinge_sums[1], old.snapshot().hinge_sums[1])
    Gallery.open(tmp_path / "empty", create=True, descriptor=hinge.descriptor).close()
    with pytest.raises(GalleryError, match="empty.sqlite: no writers enrolled, nothing to "
                                           "rebuild"):
        identify.rebuild(tmp_path / "empty", tmp_path / "none", hinge)
    assert not gallery_file(tmp_path / "none").exists()


def test_a_gallery_from_before_the_reading_was_recorded_gains_it(tmp_path):
    """Galleries of schema 1 written before the `dpi`, `read_as`, `paper`, `camera` and
    `lines` columns still open, rebuild (by the command's settings) and record them for
    what is enrolled next; a page's lines counted, a line one, older images not known."""
    from models.runtime import identify
    from tests.conftest import generated_page

    files = _line_files(tmp_path / "lines", 3, seed=3)
    cv2.imwrite(str(page := tmp_path / "page.png"), generated_page(4, lines=5)[0])
    hinge = runtime.features_for(None, "hinge")
    runtime.enroll(tmp_path / "g", hinge, "ann", files[:2])
    runtime.enroll(tmp_path / "g", hinge, "cy", [page])
    db = sqlite3.connect(gallery_file(tmp_path / "g"))
    for column in ("dpi", "read_as", "paper", "camera", "lines"):
        db.execute(f"ALTER TABLE images DROP COLUMN {column}")
    db.commit()
    db.close()
    g = Gallery.open(tmp_path / "g")
    assert [w["lines"] for w in g.writers()] == [None, None]
    runtime.enroll(tmp_path / "g", hinge, "bob", files[2:])
    assert [(s.dpi, s.read_as, s.paper, s.camera, s.lines) for _, images in g.sources()
            for s in images] == \
        [(None, None, None, None, None)] * 3 + [(300, "line", None, None, 1)]
    assert g.check() == []
    assert [i["read_as"] for i in g.images("ann")] == [None, None]
    assert "reading not recorded" in cli("gallery", "show", tmp_path / "g", "ann").stdout
    listed = cli("gallery", "list", tmp_path / "g").stdout
    assert "\tlines not recorded\t" in listed and "bob\t1 image(s)\t1 line(s)\t" in listed
    cv2.imwrite(str(other := tmp_path / "other.png"), generated_page(5, lines=5)[0])
    runtime.enroll(tmp_path / "g", hinge, "dee", [other])
    assert [w["lines"] for w in g.writers()] == [None, None, 1, 5]
    assert g.lines(["dee", "ann", "bob"]) == {"dee": 5, "ann": None, "bob": 1}
    assert "page of 5 lines at 300 dpi" in cli("gallery", "show", tmp_path / "g", "dee").stdout
    identify.rebuild(tmp_path / "g", tmp_path / "new", hinge)
    np.testing.assert_allclose(Gallery.open(tmp_path / "new").snapshot().hinge_sums,
                               g.snapshot().hinge_sums)


def test_a_connection_held_open_reads_right_while_others_come_and_go(tmp_path):
    """A process that keeps a gallery open (a service identifying all day) and opens it
    again to enrol, while another process reads it and exits: opening never touches the
    file but through SQLite, whose locks a plain open and close of the file would drop,
    letting the other process take itself for the last reader and fold the write-ahead
    log away under the open connection (which then read two of four writers)."""
    files = _line_files(tmp_path / "lines", 4, seed=5)
    hinge = runtime.features_for(None, "hinge")
    runtime.enroll(tmp_path / "g", hinge, "ann", files[:1])
    held = Gallery.open(tmp_path / "g")
    assert [w["writer"] for w in held.writers()] == ["ann"]
    for writer, image in zip(("bob", "cy", "dee"), files[1:]):
        runtime.enroll(tmp_path / "g", hinge, writer, [image])
        assert cli("gallery", "list", tmp_path / "g").returncode == 0
    assert [w["writer"] for w in held.writers()] == ["ann", "bob", "cy", "dee"]
    assert held.check() == [] and held.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_enroll_notes_a_writer_enrolled_from_a_few_lines(tmp_path):
    """The card's rules were set on writers enrolled from a form: `enroll` says when a
    writer it enrolled holds fewer than `FEW_LINES` lines of handwriting, counting a
    page's found lines, and `identify` when such a writer is the closest, until more are
    enrolled."""
    from models.runtime.evidence import FEW_LINES
    from tests.conftest import generated_page

    files = _line_files(tmp_path / "lines", FEW_LINES + 1, seed=6)  # the last one asked
    for name, lines in (("short", FEW_LINES - 1), ("whole", FEW_LINES)):
        cv2.imwrite(str(tmp_path / f"{name}.png"),
                    generated_page(7 if name == "short" else 8, lines=lines)[0])

    def note(writer: str, *images: Path) -> str:
        proc = cli("enroll", tmp_path / "g", "--descriptor", "hinge", "--writer", writer,
                   *images)
        assert proc.returncode == 0, proc.stderr
        return "\n".join(x for x in proc.stderr.splitlines() if "enrolled from fewer" in x)

    def closest() -> tuple[dict | None, str, bool]:
        """(identify's JSON answer's "few_lines", the text answer's note of it, whether
        its report notes it)"""
        asked = ("identify", tmp_path / "g", files[-1], "--descriptor", "hinge")
        [answer] = json.loads(cli(*asked, "--json").stdout)
        proc = cli(*asked, "--report", tmp_path / "report.html")
        told = [x for x in proc.stderr.splitlines() if "came closest" in x]
        reported = "came closest to a writer enrolled from fewer" in (
            tmp_path / "report.html").read_text()
        return answer.get("few_lines"), "\n".join(told), reported

    assert f"note: 1 writer(s) enrolled from fewer than {FEW_LINES} lines of handwriting " \
           "(ann: 1): " in note("ann", files[0])
    few, told, reported = closest()
    assert few == {"writer": "ann", "lines": 1} and reported
    assert told.startswith(f"note: 1 answer(s) came closest to a writer enrolled from fewer "
                           f"than {FEW_LINES} lines of handwriting (ann: 1): ")
    assert "(ann: 5)" in note("ann", *files[1:-2])
    assert note("ann", files[-2]) == ""  # now FEW_LINES lines
    assert closest() == (None, "", False)
    assert f"(bea: {FEW_LINES - 1})" in note("bea", tmp_path / "short.png")
    assert note("cy", tmp_path / "whole.png") == ""


def test_bulk_enrolment_of_a_layout_folder_in_one_process(layout, tmp_path):
    """dummy_data: 12 writers x 3 forms x 1 line, each writer's first form enrolled."""
    proc = cli("enroll", tmp_path / "g", "--layout", layout, "--forms-per-writer", "1")
    assert proc.returncode == 0, proc.stderr
    assert "enrolled 12 image(s) of 12 writer(s)" in proc.stdout
    assert "note: 12 writer(s) enrolled from fewer than 6 lines of handwriting (" in proc.stderr
    g = Gallery.open(tmp_path / "g")
    assert len(g.writers()) == 12 and all(w["images"] == 1 for w in g.writers())
    again = cli("enroll", tmp_path / "g", "--layout", layout, "--forms-per-writer", "1")
    assert "enrolled 0 image(s) of 12 writer(s) from" in again.stdout
    assert "12 already enrolled" in again.stdout
    (tmp_path / "empty").mkdir()
    proc = cli("enroll", tmp_path / "h", "--layout", tmp_path / "empty")  # not a layout
    assert proc.returncode == 2 and "nor the Kaggle layout" in proc.stderr
    assert not gallery_file(tmp_path / "h").exists()


def test_a_folder_of_writers_folders_is_enrolled_writer_by_writer(tmp_path):
    """A case's known writers are kept as a folder for each, named by the writer: `enroll
    --layout` refused it ("neither the Kaggle layout ... nor the official IAM one")."""
    from iam_writers_tfds.kaggle_layout import LayoutError
    from models.runtime.identify import layout_writers

    case = tmp_path / "known"
    ann = _line_files(case / "Ann Lee", 2, 0)
    letter = case / "Ann Lee" / "2019" / "letter.PNG"  # in a folder of its own, capitals
    letter.parent.mkdir()
    ann.append(_line_files(tmp_path / "loose", 2, 1)[0].rename(letter))
    bob = _line_files(case / "bob", 1, 2)
    for junk in ("Ann Lee/notes.txt", "README.md", ".DS_Store", "bob/.hidden/x.png",
                 "__MACOSX/bob/._0-0.png"):  # a zip made on a Mac, extracted
        (case / junk).parent.mkdir(parents=True, exist_ok=True)
        (case / junk).write_text("not handwriting")
    layout = layout_writers(case)
    assert layout.writers == {"Ann Lee": sorted(ann), "bob": bob}
    assert layout.skipped == [case / "Ann Lee" / "notes.txt", case / "README.md"]
    assert layout_writers(case, 1).writers == {"Ann Lee": [sorted(ann)[0]], "bob": bob}

    proc = cli("enroll", tmp_path / "g", "--layout", case)
    assert proc.returncode == 0, proc.stderr
    assert "enrolled 4 image(s) of 2 writer(s)" in proc.stdout
    assert (f"note: not enrolled, not images by their names: {case / 'Ann Lee' / 'notes.txt'}, "
            f"{case / 'README.md'}\n") in proc.stderr
    assert {w["writer"]: w["images"] for w in Gallery.open(tmp_path / "g").writers()} == {
        "Ann Lee": 3, "bob": 1}

    (case / "cy").mkdir()
    (case / "cy" / "scan.txt").write_text("")
    with pytest.raises(LayoutError, match=r"known/cy: no images in this writer's folder \("
                       r"taken by their names: \.bmp, .*\)\. Add cy's handwriting, or move "
                       r"the folder out; nothing was enrolled\."):
        layout_writers(case)
    (case / "cy").rename(case / " cy")
    with pytest.raises(GalleryError, match="the writer name ' cy' has a space at an end"):
        layout_writers(case)
    with pytest.raises(LayoutError, match="neither a folder of writers' folders "
                       r"\(FOLDER/WRITER/images\), nor .* One writer's images are enrolled "
                       "with --writer ID IMAGES"):
        layout_writers(tmp_path / "loose")  # an image, but in no writer's folder


def test_rebuild_enrols_every_writer_again_from_the_files_or_writes_nothing(tmp_path,
                                                                            monkeypatch):
    """A gallery outlives its model: `gallery rebuild` reads the enrolled files again."""
    from models.runtime import identify

    files = {w: _line_files(tmp_path / "lines", 2, seed) for seed, w in enumerate(["ann", "bob"])}
    features = runtime.features_for(None, "hinge")
    for writer, images in files.items():
        runtime.enroll(tmp_path / "old", features, writer, images)
    db = sqlite3.connect(gallery_file(tmp_path / "old"))
    with db:  # enrolled months ago
        db.execute("UPDATE writers SET enrolled = '2026-01-0' || id || 'T09:00:00+00:00', "
                   "updated = '2026-02-01T10:00:00+00:00'")
        db.execute("UPDATE images SET enrolled = '2026-01-0' || writer_id || 'T09:00:0' || id "
                   "|| '+00:00'")
    db.close()
    proc = cli("gallery", "check", tmp_path / "old", "--files")  # can it be rebuilt?
    assert proc.returncode == 0 and proc.stdout.endswith(
        "every one of the 4 enrolled files is at its path as enrolled\n"), proc.stderr
    proc = cli("gallery", "rebuild", tmp_path / "old", tmp_path / "new", "--descriptor", "hinge")
    assert proc.returncode == 0, proc.stderr
    assert "rebuilt 2 writer(s), 4 image(s)" in proc.stdout and "unchanged" in proc.stdout
    old, new = Gallery.open(tmp_path / "old"), Gallery.open(tmp_path / "new")
    assert new.sources() == old.sources() and new.descriptor == old.descriptor
    # the handwriting known, and since when, is the old gallery's
    assert new.dates()[:2] == old.dates()[:2] and len(set(old.dates().images.values())) == 4
    # and its history, then the rebuild
    *kept, rebuilt = new.history()
    assert kept == old.history() and [e.action for e in kept] == ["created"] + ["enrolled"] * 2
    assert rebuilt.action == "rebuilt" and rebuilt.detail == (
        f"from {old.path} (built by descriptor hinge-l10-b16), built by descriptor "
        "hinge-l10-b16")
    assert [(w["enrolled"], w["updated"]) for w in new.writers()] == [
        (f"2026-01-0{i}T09:00:00+00:00", "2026-02-01T10:00:00+00:00") for i in (1, 2)]
    np.testing.assert_allclose(new.snapshot().hinge_sums, old.snapshot().hinge_sums)
    assert not list(tmp_path.glob("*rebuilding*"))  # built under that name, then renamed
    proc = cli("gallery", "rebuild", tmp_path / "old", tmp_path / "new")
    assert proc.returncode == 2 and "new.sqlite: already exists" in proc.stderr
    # a file refused now by a check made since its enrolment (here: a stricter blur bound):
    # its writer is named, and how to go on; nothing is written
    from models.runtime import model

    monkeypatch.setattr(model, "MAX_EDGE_BLUR", 0.1)
    with pytest.raises(runtime.GalleryError, match=r"the ink's edges are spread over .* It is "
                       r"enrolled as ann's in .*old\.sqlite: remove them there \(`iam-writers "
                       r"gallery remove .*old\.sqlite ann`\) .* nothing was written\.$"):
        identify.rebuild(tmp_path / "old", tmp_path / "stricter", features)
    assert not list(tmp_path.glob("*stricter*"))
    monkeypatch.undo()
    # a file changed or gone since its enrolment: nothing is written, the files are named
    (tmp_path / "moved" / "sub").mkdir(parents=True)
    shutil.copy(files["ann"][1], tmp_path / "moved" / "renamed.png")  # as enrolled
    cv2.imwrite(str(files["ann"][1]), synth.render_line(synth.WriterStyle.sample(
        np.random.default_rng(9)), np.random.default_rng(9)))
    files["bob"][0].rename(tmp_path / "moved" / "sub" / files["bob"][0].name)
    (tmp_path / "elsewhere").mkdir()
    proc = cli("gallery", "check", tmp_path / "old", "--files")
    assert proc.returncode == 1 and proc.stdout.splitlines()[1:] == [
        "2 of the 4 enrolled files are not at their path as enrolled: a rebuild needs them "
        "(restore them, or name the folders they were moved to: `iam-writers gallery rebuild "
        f"{gallery_file(tmp_path / 'old')} NEW --look-in DIR`)",
        f"  {files['ann'][1]} (changed since it was enrolled)",
        f"  {files['bob'][0]} (missing)"], proc.stdout
    assert proc.stdout.startswith(f"{gallery_file(tmp_path / 'old')}: sound (2 writers)\n")
    for look_in, said in (((), ""), (("--look-in", tmp_path / "elsewhere"),
                                     f" (not found under {tmp_path / 'elsewhere'} either)")):
        proc = cli("gallery", "rebuild", tmp_path / "old", tmp_path / "other", *look_in)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert (f"2 enrolled image(s) cannot be read as they were enrolled{said}: "
                f"{files['ann'][1]} (changed since it was enrolled), {files['bob'][0]} "
                "(missing). Restore them, or name the folders they were moved to with "
                "--look-in DIR") in proc.stderr
    proc = cli("gallery", "rebuild", tmp_path / "old", tmp_path / "other", "--look-in",
               tmp_path / "nowhere")
    assert proc.returncode == 2 and "nowhere: no such folder to look in" in proc.stderr
    assert not list(tmp_path.glob("*other*"))
    # found by their content under the folders named, whatever their name: their new paths
    # are what the new gallery knows them by
    proc = cli("gallery", "rebuild", tmp_path / "old", tmp_path / "other", "--look-in",
               tmp_path / "elsewhere", "--look-in", tmp_path / "moved")
    assert proc.returncode == 0, proc.stderr
    moved = {files["ann"][1]: tmp_path / "moved" / "renamed.png",
             files["bob"][0]: tmp_path / "moved" / "sub" / files["bob"][0].name}
    assert proc.stdout.splitlines()[:2] == [f"moved: {was} -> {now}" for was, now in moved.items()]
    assert "rebuilt 2 writer(s), 4 image(s)" in proc.stdout
    assert "2 found moved (their new paths kept)" in proc.stdout
    other = Gallery.open(tmp_path / "other")
    assert other.sources() == [(w, [s._replace(path=str(moved.get(Path(s.path), s.path)))
                                    for s in images]) for w, images in old.sources()]
    np.testing.assert_allclose(other.snapshot().hinge_sums, old.snapshot().hinge_sums)
    assert other.dates()[:2] == old.dates()[:2]
    assert other.history()[-1].detail.endswith("; 2 file(s) found moved")
    other.close()
    # stopped half-way (here: the second writer's features fail): no gallery, no part of one
    shutil.rmtree(tmp_path / "lines")
    files = {w: _line_files(tmp_path / "lines", 2, seed) for seed, w in enumerate(["ann", "bob"])}
    for writer, images in files.items():
        runtime.enroll(tmp_path / "again", features, writer, images)
    calls, describe = [], identify.Features.__call__

    def failing(self, images, thumbnails=False):
        calls.append(images)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return describe(self, images, thumbnails)

    monkeypatch.setattr(identify.Features, "__call__", failing)
    with pytest.raises(KeyboardInterrupt):
        identify.rebuild(tmp_path / "again", tmp_path / "half", features)
    assert calls == [list(map(str, files[w])) for w in ("ann", "bob")]
    assert not list(tmp_path.glob("*half*"))
    assert not list(tmp_path.glob("*rebuilding*"))


def _hands(tmp_path: Path) -> Gallery:
    """A hinge gallery of four writers' random hands, and ann's hand again, as from another
    page of hers, under a second name."""
    g = _new(tmp_path, fingerprint=None)
    rng = np.random.default_rng(0)
    hands = rng.integers(0, 50, (4, 136)).astype(np.float64)
    for name, row in zip(("ann", "bob", "cat", "dan"), hands):
        g.add(name, [name], _hashes(name, 1), None, row[None])
    again = hands[0] + rng.integers(0, 3, 136)
    g.add("ann-2", ["ann-2"], _hashes("ann-2", 1), None, again[None])
    return g


def test_alike_names_one_hand_under_two_names_and_no_other_writer(tmp_path):
    identifier = runtime.Identifier(_hands(tmp_path), None)
    pairs = identifier.alike()
    assert {(p["writer"], p["reads_as"]) for p in pairs} == {("ann", "ann-2"), ("ann-2", "ann")}
    assert all(p["score"] >= p["threshold"] for p in pairs)
    # `identify --threshold` is for its queries; the enrolled writers keep the calibrated one
    assert runtime.Identifier(identifier.gallery, None, threshold=1e9).alike() == pairs
    # the others' best matches score well below the threshold: they are not near it
    assert identifier.alike(["bob", "cat", "dan"]) == []
    with pytest.raises(GalleryError, match="no writer eve enrolled"):
        identifier.alike(["eve"])
    alone = Gallery.open(tmp_path / "alone", create=True, descriptor="hinge-l10-b16")
    alone.add("ann", ["a"], _hashes("a", 1), None, np.ones((1, 136)))
    assert runtime.Identifier(alone, None).alike() == []


def test_alike_either_finds_the_writers_whose_hand_reads_as_the_one_asked_about(tmp_path):
    """A pair reads one way only when one writer's best match is a third: on IAM all five
    did, and a check of the writer just enrolled, its own way, missed those reading as it."""
    g = Gallery.open(tmp_path / "g", create=True, descriptor="hinge-l10-b16")
    rng = np.random.default_rng(0)
    hands = rng.integers(0, 50, (4, 136)).astype(np.float64)
    for name, row in zip(("ann", "bob", "cat", "dan"), hands):
        g.add(name, [name], _hashes(name, 1), None, row[None])
    for name, noise in (("fay", 3), ("eve", 2)):  # eve nearer ann than fay is
        g.add(name, [name], _hashes(name, 1), None,
              (hands[0] + rng.integers(0, noise, 136))[None])
    identifier = runtime.Identifier(g, None)
    pairs = {(p["writer"], p["reads_as"]) for p in identifier.alike()}
    assert ("fay", "eve") in pairs and ("eve", "fay") not in pairs  # one way
    assert [(p["writer"], p["reads_as"]) for p in identifier.alike(["eve"])] == [("eve", "ann")]
    either = identifier.alike_either("eve")
    # eve and ann read as each other: one entry, said both ways, where it gave two warnings
    assert ("ann", "eve") in pairs
    assert [(p["writer"], p["reads_as"], p.get("both_ways", False)) for p in either] == [
        ("eve", "ann", True), ("fay", "eve", False)]
    assert "eve's enrolled handwriting reads as ann's (hinge " in runtime.evidence.alike_words(
        either[0], "hinge")
    assert runtime.evidence.alike_words(either[0], "hinge").endswith(", and ann's as its")
    assert "as its" not in runtime.evidence.alike_words(either[1], "hinge")
    # looked for among the writers eve's own hand scores highest against: ann, then fay
    assert ("fay", "eve") not in [(p["writer"], p["reads_as"])
                                  for p in identifier.alike_either("eve", candidates=1)]
    assert [p["reads_as"] for p in identifier.alike_of("fay")] == ["eve"]
    # a writer in two pairs: an answer naming eve says both (the query may be ann's or fay's)
    assert identifier.alike_of("eve") == either
    with pytest.raises(GalleryError, match="no writer zoe enrolled"):
        identifier.alike_either("zoe")


def test_gallery_alike_and_enroll_warn_of_a_hand_under_two_names(tmp_path, layout):
    _hands(tmp_path).close()
    proc = cli("gallery", "alike", tmp_path / "g", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [(p["writer"], p["reads_as"]) for p in json.loads(proc.stdout)] == [
        ("ann", "ann-2"), ("ann-2", "ann")]
    writer_of = dict(line.split()[:2] for line in (layout / "forms_for_parsing.txt").open())
    lines = sorted(layout.rglob("*.png"))
    first = lines[0]
    other = next(p for p in lines if writer_of[p.name[:7]] != writer_of[first.name[:7]])
    image = cv2.imread(str(first), cv2.IMREAD_GRAYSCALE)
    copy = tmp_path / "again.png"  # the same line, a white column wider: another file
    cv2.imwrite(str(copy), cv2.copyMakeBorder(image, 0, 0, 0, 3, cv2.BORDER_CONSTANT,
                                              value=255))
    for writer, image in (("ann", first), ("bob", other)):
        proc = cli("enroll", tmp_path / "h", image, "--writer", writer)
        assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    proc = cli("enroll", tmp_path / "h", copy, "--writer", "ann-again")
    assert proc.returncode == 0, proc.stderr
    assert "warning: ann-again's enrolled handwriting reads as ann's (hinge" in proc.stderr
    # the copy and the line read as each other: one warning, said both ways
    assert proc.stderr.count("warning:") == 1 and ", and ann's as its." in proc.stderr
    assert "enrolled 1 image(s) of ann-again" in proc.stdout  # a warning, not a refusal
    # identify says so where it names one of the two, and only there
    proc = cli("identify", tmp_path / "h", first, other, "--json")
    assert proc.returncode == 0, proc.stderr
    named, bob = json.loads(proc.stdout)
    assert named["writer"] in ("ann", "ann-again") and bob["writer"] == "bob"
    assert "alike" not in bob
    assert [(p["writer"], p["reads_as"], p["both_ways"]) for p in named["alike"]] == [
        (named["writer"], ({"ann", "ann-again"} - {named["writer"]}).pop(), True)]
    proc = cli("identify", tmp_path / "h", first, "--report", tmp_path / "identify.html")
    assert f"; but {named['writer']}'s enrolled handwriting reads as" in proc.stdout
    report = (tmp_path / "identify.html").read_text()
    assert f"But {named['writer']}'s enrolled handwriting reads as" in report
    # a writer whose handwriting reads as the one named: the query may be that writer's
    identifier = runtime.Identifier(Gallery.open(tmp_path / "h"), None)
    drawn: dict[str, bytes] = {}
    result = identifier.rank([first], drawn=drawn)
    # the report shows the query as it was read, not read again
    scan = runtime.Model.read(first, str(first), "auto")
    assert drawn == {str(first): runtime.evidence.thumbnail(scan.pages, scan.lines)}
    result["alike"] = [{"writer": "bob", "reads_as": result["writer"], "score": 1.0,
                        "threshold": 0.98}]
    runtime.evidence.identify_report(tmp_path / "back.html", [result], identifier, drawn)
    assert (f"bob's enrolled handwriting reads as {result['writer']}'s (hinge 1.000, a "
            "document's threshold 0.980): the query may be bob's" in
            (tmp_path / "back.html").read_text())
    proc = cli("gallery", "alike", tmp_path / "h", "--report", tmp_path / "alike.html")
    assert proc.stdout.count("reads as") == 2 and "bob" not in proc.stdout
    # a layout holding writer 000's line again as writer 099's: one warning for the layout
    shutil.copy(copy, first.with_name("s00-099-s00-00.png"))
    with (layout / "forms_for_parsing.txt").open("a") as forms:
        forms.write("s00-099 099 0 syn 0 0 0 0\n")
    proc = cli("enroll", tmp_path / "k", "--layout", layout, "--forms-per-writer", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("warning:") == 1 and "000 as 099" in proc.stderr
    assert "099 as 000" in proc.stderr
    report = (tmp_path / "alike.html").read_text()
    # each pair shows both writers' enrolled lines: four thumbnails, none of bob's
    assert report.count('<section class="query" id="pair-') == 2
    assert report.count("data:image/png;base64,") == 4
    assert report.count("<h2>") == 3 and "<h2>Provenance</h2>" in report  # and what made it
    assert "ann-again reads as ann" in report and "bob" not in report
