"""The gallery: enrolled writers in one SQLite file, kept for months and shared by processes.

SQLite (the standard library's `sqlite3`) gives what a gallery built up over months needs:
an enrolment is one transaction (all of its images or none, whatever kills the process),
many processes enrol into one file at once (WAL mode, a busy timeout), and readers see a
complete state while others write. Each writer's aggregates (the sum and unit mean of its
image embeddings, the sum of its contour-hinge counts) are updated in the same transaction
as its images, so `identify` reads one row per writer and recomputes nothing.

Tables: `meta` (schema version, the model fingerprint and descriptor that built the
gallery, feature sizes), `writers` (name, dates, image count, aggregates), `images`
(absolute path, sha256 of the file's bytes, enrolment time, features, and how the file was
read: its resolution and whether as a line or a page, which `gallery rebuild` reads it by
again; galleries from before these two columns get them with their next enrolment) and
`exemplars` (each writer's exemplar SVM against a model's cohort, solved at enrolment, as
its dual multipliers, under the cohort's key and the writer's image count it was solved
for: `identify` solves only the writers it lacks; galleries from before it get the table
with their next enrolment) and `history` (every change, dated: made, enrolled, renamed,
removed, rebuilt, backed up; writers' names and counts, never image paths or features;
galleries from before it get it with their next change).
Features are BLOBs of the dtypes that `meta` records (`feature_dtype`, `sum_dtype`): a gallery
keeps the ones it was made with, `FEATURE_DTYPE` and `SUM_DTYPE` for a new one.
Removed writers are overwritten on disk (`secure_delete`, then a checkpoint that empties the
write-ahead log).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import os
import re
import sqlite3
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from iam_writers_tfds.atomic import cannot_write, no_space
from iam_writers_tfds.images import image_bytes
from models.runtime.model import ModelError, unit

SCHEMA_VERSION = 1
SUFFIX = ".sqlite"
BUSY_TIMEOUT_S = 60.0  # how long a writer waits for another's transaction before giving up
MOUNTS = Path("/proc/self/mounts")  # Linux's table of this process's file systems
# network file systems, and WSL's mount of Windows' drives: SQLite's write-ahead log needs
# memory shared on one machine, which they do not give (sqlite.org/wal.html, 8)
SHARED_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "drvfs", "fuse.sshfs",
                      "ceph", "glusterfs", "lustre", "afs")
FEATURE_DTYPE = np.dtype("<f4")  # per-image embeddings and hinge counts (exact below 2**24)
# per-writer sums of a new gallery (float64 in those made before 2026-12-05, which keep it):
# identification computes in float32 (the hinge's counts exact below 2**24, VLAD encoded in
# float32), and at 10,000 writers float64 sums doubled what opening reads from disk
# (docs/results.md, a VLAD gallery opened in float32)
SUM_DTYPE = np.dtype("<f4")
READ_SUM_DTYPE = np.dtype(np.float32)  # the sums as `snapshot` reads them, whatever stored
DUAL_DTYPE = np.dtype("<f8")  # exemplar SVMs' dual multipliers
SUM_TOLERANCE = 1e-5  # `check`: float32's rounding (6e-8) at up to ~100 enrolments

# each writer's exemplar SVM (`runtime.descriptors.exemplar_duals`), added to schema 1
# without a new version
EXEMPLARS = """
CREATE TABLE IF NOT EXISTS exemplars (
    writer_id INTEGER PRIMARY KEY REFERENCES writers(id) ON DELETE CASCADE,
    cohort TEXT NOT NULL,
    n_images INTEGER NOT NULL,
    duals BLOB NOT NULL
)
"""

# every change to the gallery, dated (`Gallery.history`), added to schema 1 without a new
# version; `detail` is a renamed writer's old name, or what made or rebuilt the gallery
HISTORY = """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    writer TEXT,
    images INTEGER,
    detail TEXT
)
"""

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE writers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    enrolled TEXT NOT NULL,
    updated TEXT NOT NULL,
    n_images INTEGER NOT NULL,
    embedding_sum BLOB,
    centroid BLOB,
    hinge_sum BLOB
);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    writer_id INTEGER NOT NULL REFERENCES writers(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    sha256 TEXT UNIQUE,
    enrolled TEXT NOT NULL,
    embedding BLOB,
    hinge BLOB,
    thumbnail BLOB,
    dpi REAL,
    read_as TEXT,
    paper TEXT,
    camera TEXT,
    lines INTEGER
);
CREATE INDEX images_by_writer ON images(writer_id);
""" + EXEMPLARS + ";" + HISTORY


# added to schema 1 without a new version
READ_COLUMNS = {"dpi": "REAL", "read_as": "TEXT", "paper": "TEXT", "camera": "TEXT",
                "lines": "INTEGER"}


class ReadAs(NamedTuple):
    """How an image file was read when enrolled: at what resolution (None: a photo, whose
    sheet sets it), as a line or a page, a photo's paper, the camera that took a photo
    read as if at 300 dpi, no sheet found on it (its handwriting's size not known), and the
    lines of handwriting it gave (1 for a line)."""

    dpi: float | None
    read_as: str
    paper: str | None = None
    camera: str | None = None
    lines: int | None = None


class Event(NamedTuple):
    """One change in a gallery's history (UTC, ISO 8601): `created`, `enrolled` (`images`
    added), `renamed` (`writer` is the new name, `detail` the old), `removed` (`images`
    deleted; `writer` None where the name was erased with them), `rebuilt` (`detail`:
    from what, for what) or `backed up` (a backup's last: `detail`, from which gallery)."""

    at: str
    action: str
    writer: str | None = None
    images: int | None = None
    detail: str | None = None


class Dates(NamedTuple):
    """A gallery's dates (UTC, ISO 8601): {writer: (enrolled, updated)}, {image's SHA-256:
    enrolled} and its history."""

    writers: dict[str, tuple[str, str]]
    images: dict[str, str]
    history: list[Event]


class Enrolment(NamedTuple):
    """A writer's enrolled images as `Gallery.add` takes them: paths, SHA-256s, embeddings
    [N, D] and descriptor rows [N, K] (None where the gallery holds none), thumbnails (None
    for one enrolled before they were kept), and how each was read."""

    paths: list[str]
    hashes: list[str]
    embeddings: np.ndarray | None
    hinge: np.ndarray | None
    thumbnails: list[bytes | None]
    read: list[ReadAs]


class Source(NamedTuple):
    """An enrolled image's file, as `gallery rebuild` reads it again; `dpi` and `read_as`
    are None for images enrolled before the gallery recorded them, `dpi` alone for a photo
    (read again, its sheet sets it); `paper` is a photo's (None for any other image, and
    for a photo enrolled before the gallery recorded it: read again as A4, Letter or Legal by
    its shape); `camera` and `lines` as `ReadAs` says (read again, the file says them again;
    `lines` None where not recorded)."""

    path: str
    sha256: str
    dpi: float | None
    read_as: str | None
    paper: str | None
    camera: str | None
    lines: int | None = None


# solves a writer's exemplar SVM from its summed descriptor row: (the cohort's key, duals)
Exemplar = Callable[[np.ndarray], tuple[str, np.ndarray]]


class GalleryError(ModelError):
    """Not a usable gallery, or a change it refuses; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What identification reads, all from one read transaction: the writers in enrolment
    order, their unit mean embeddings [W, D] and summed descriptor rows [W, K] in float32
    (`READ_SUM_DTYPE`; None where the gallery holds no such feature), and each writer's
    exemplar SVM stored for the cohort asked for (`Gallery.snapshot`), None where none is
    stored for the writer's images as they are now."""

    writers: list[str]
    centroids: np.ndarray | None
    hinge_sums: np.ndarray | None
    duals: list[np.ndarray | None] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Enrolled:
    """What one enrolment did: images added, images skipped as already enrolled, and of
    those added each photo read as if at 300 dpi, with no sheet found on it: the camera its
    EXIF names (its handwriting's size is not known)."""

    writer: str
    added: int
    skipped: list[str]
    unmeasured: dict[str, str] = dataclasses.field(default_factory=dict)


def gallery_file(path: str | Path) -> Path:
    """The SQLite file of a gallery path: as given when it ends in .sqlite or .db, else with
    .sqlite added (`galleries/staff` -> `galleries/staff.sqlite`); the .npz/.json of a
    gallery from before the database map to the same file. A model's path is refused
    (`refuse_model`)."""
    path = refuse_model(path)
    if path.suffix in (SUFFIX, ".db"):
        return path
    if path.suffix in (".npz", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + SUFFIX)


def refuse_model(path: str | Path) -> Path:
    """`path`, unless it is a model's (a .tflite file, an export or SavedModel folder): a
    model passed where the gallery goes would otherwise name a new gallery after it."""
    path = Path(path)
    if path.suffix == ".tflite" or any((path / f).is_file()
                                       for f in ("model_card.json", "saved_model.pb")):
        raise GalleryError(f"{path}: a model, not a gallery. Pass it with --model, and the "
                           "gallery's path (e.g. galleries/staff) in its place.")
    return path


def legacy_files(path: str | Path) -> tuple[Path, Path]:
    """The (NAME.npz, NAME.json) of a gallery written before the database."""
    base = gallery_file(path).with_suffix("")
    return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")


def sha256_of(image: str | Path | np.ndarray) -> str:
    """The content hash an image is enrolled under: of the file's bytes, or of an array's
    shape and bytes."""
    if isinstance(image, np.ndarray):
        return hashlib.sha256(repr(image.shape).encode() + image.tobytes()).hexdigest()
    return hashlib.sha256(image_bytes(image)).hexdigest()


def lost_files(writers: list[tuple[str, list[Source]]]) -> dict[str, str]:
    """{SHA-256: path} of the enrolled files (`Gallery.sources`) not at their path as they
    were enrolled: gone, or their bytes changed. A rebuild needs them."""
    return {s.sha256: s.path for _, images in writers for s in images
            if not Path(s.path).is_file() or sha256_of(s.path) != s.sha256}


def lost_words(path: str) -> str:
    """A lost file (`lost_files`), with why, in words."""
    return f"{path} ({'changed since it was enrolled' if Path(path).is_file() else 'missing'})"


def refuse_other_writer(path: str, writer: str, owner: tuple[str, str] | None) -> None:
    """An image enrolled as one writer's is not enrolled as another's."""
    if owner and owner[0] != writer:
        raise GalleryError(f"{path}: already enrolled as {owner[0]}'s ({owner[1]}); not "
                           f"enrolling it as {writer}'s. Remove it from one of the two "
                           "writers' images.")


def utc_now() -> str:
    """The time now in UTC to the second, ISO 8601: the stamp of gallery records and
    reports."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _db_path(path: str) -> str | bytes:
    """An image's path as the gallery stores it: text, or where its name is not UTF-8 (an
    old archive's Latin-1 name, which Python holds as lone surrogates and SQLite's text
    cannot), the file system's bytes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def _os_path(stored: str | bytes) -> str:
    """A path as `_db_path` stored it, as Python names the file."""
    return os.fsdecode(stored) if isinstance(stored, bytes) else stored


def _blob(x: np.ndarray, dtype: np.dtype) -> bytes:
    return np.ascontiguousarray(x, dtype=dtype).tobytes()


def _array(blob: bytes | None, dtype: np.dtype) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype)


def _matrix(blobs: list[bytes], dtype: np.dtype) -> np.ndarray:
    """Rows of equal-length BLOBs as one [N, K] array, in one copy."""
    return np.frombuffer(b"".join(blobs), dtype).reshape(len(blobs), -1)


def _unopened(file: Path, err: sqlite3.DatabaseError | None = None) -> GalleryError:
    """Why a gallery could not be opened (no `err`: an empty file; else what SQLite said on
    reading it), in one line naming the file and the fix."""
    fix = (f"Pass a gallery written by `iam-writers enroll`, or enroll into a new path "
           f"(move {file.name} away first).")
    if err is None:
        return GalleryError(f"{file}: not a gallery (an empty file). {fix}")
    if _is_locked(err):
        return _locked(file, err)
    code = _code(err)
    if code is not None and code == sqlite3.SQLITE_NOTADB:
        return GalleryError(f"{file}: not a gallery (not an SQLite database). {fix}")
    if code is not None and code == sqlite3.SQLITE_CORRUPT:  # SQLite checks the page count
        return GalleryError(f"{file}: corrupt gallery (truncated or damaged: {err}). Restore "
                            f"it from a backup. {fix}")
    return GalleryError(f"{file}: corrupt gallery ({err}). Restore it from a backup, or "
                        "enroll the writers into a new gallery.")


class Gallery:
    """One gallery file. Open it with `Gallery.open`; every change is one transaction."""

    def __init__(self, file: Path, db: sqlite3.Connection):
        self.path, self.db = file, db
        self.read_only: str | None = None  # why this user cannot write it (`open`)
        if not _has_table(db, "meta"):
            raise GalleryError(f"{file}: not a gallery (an SQLite database without a gallery's "
                               "tables). Pass a gallery written by `iam-writers enroll`.")
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        if int(meta.get("schema", 0)) != SCHEMA_VERSION:
            raise GalleryError(f"{file}: gallery schema {meta.get('schema')} is not the "
                               f"{SCHEMA_VERSION} this version reads. Use the iam-writers "
                               "version that wrote it.")
        self.meta = meta
        self.sum_dtype = np.dtype(meta.get("sum_dtype", "<f8"))

    @classmethod
    def open(cls, path: str | Path, create: bool = False, fingerprint: str | None = None,
             descriptor: str | None = None, journal: str = "WAL") -> Gallery:
        """Open a gallery; with `create`, a missing one is made for that model fingerprint
        and/or descriptor (`journal` DELETE for a file that is only read afterwards, such as
        an export's). A gallery from before the database (NAME.npz + NAME.json) is
        converted on first use, in memory where its folder is read-only."""
        file = gallery_file(path)
        if not file.exists() and legacy_files(path)[1].exists():
            try:
                upgrade(path)
            except PermissionError:
                fingerprint, descriptor, *old = _read_legacy(path)
                gallery = new_in_memory(fingerprint, descriptor)
                _fill(gallery, *old, legacy_files(path)[1])
                return gallery
        if not file.exists():
            if not create:
                raise FileNotFoundError(f"{file}: no such gallery. Enroll writers first: "
                                        f"iam-writers enroll {path} --writer ID IMAGES")
            _new_file(file, fingerprint, descriptor, journal)
        # only SQLite opens the file: closing another descriptor of it would drop the locks
        # of this process's connections to it (SQLite's "How To Corrupt", 2.2)
        if file.stat().st_size == 0:  # SQLite would take it for a new database
            raise _unopened(file)
        real = file.resolve()  # SQLite keeps -wal and -shm beside a link's target
        read_only = _read_only(real)
        try:
            gallery = cls(file, _connect(file, immutable=read_only is not None
                                         and not _has_wal(real)))
        except sqlite3.DatabaseError as err:
            if read_only is not None and _is(err, sqlite3.SQLITE_READONLY,
                                             sqlite3.SQLITE_CANTOPEN):
                raise GalleryError(f"{file}: {read_only}, and {real.name}-wal beside it holds "
                                   "changes not yet in the gallery, which SQLite cannot read "
                                   "without writing there. Run this as a user who can write "
                                   "it, or copy the gallery with its -wal file to a folder you "
                                   "can write.") from None
            raise _unopened(file, err) from None
        gallery.read_only = read_only
        return gallery

    @staticmethod
    def exists(path: str | Path) -> bool:
        """Whether a gallery is at `path`, in a database or from before one."""
        return gallery_file(path).exists() or legacy_files(path)[1].exists()

    @property
    def fingerprint(self) -> str | None:
        return self.meta.get("fingerprint")

    @property
    def descriptor(self) -> str | None:
        return self.meta.get("descriptor")

    @property
    def built_by(self) -> str:
        """What built the gallery, in words, for messages."""
        return _built_by(self.fingerprint, self.descriptor)

    def require(self, fingerprint: str | None, descriptor: str | None,
                exact: bool = False) -> None:
        """Refuse another model or descriptor than those that built the gallery, naming only
        what differs: None asks for nothing, unless `exact` (enrolling adds exactly the
        features the gallery holds)."""
        mine, wanted = [], []
        for kind, have, want in (("model", self.fingerprint, fingerprint),
                                 ("descriptor", self.descriptor, descriptor)):
            if (want or exact) and want != have:
                mine.append(f"{kind} {have}" if have else f"no {kind}")
                wanted.append(f"{kind} {want}" if want else f"no {kind}")
        if wanted:
            raise GalleryError(f"{self.path}: built by {' and '.join(mine)}, not by "
                               f"{' and '.join(wanted)}. Use what it was enrolled with, or "
                               "rebuild it for the other: iam-writers gallery rebuild "
                               f"{self.path} NEW_GALLERY with that --model (or --descriptor).")

    def check_writable(self) -> None:
        """Refuse a gallery this user may only read, before any work that would change it."""
        if self.read_only is not None:
            raise _unwritable(self.path, self.read_only)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so that two enrolments
        queue for the lock rather than fail on upgrading a read."""
        self.check_writable()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            if _is_locked(err):
                raise _locked(self.path, err) from None
            if _is(err, sqlite3.SQLITE_READONLY):
                raise _unwritable(self.path, f"SQLite could not write it ({err})") from None
            raise
        try:
            self.db.execute(HISTORY)  # a gallery from before the table
            yield self.db
            self.db.commit()  # where the disk fills, as often as in the changes
        except BaseException as err:
            self.db.rollback()
            if _is(err, sqlite3.SQLITE_READONLY):
                raise _unwritable(self.path, f"SQLite could not write it ({err})") from None
            if _is(err, sqlite3.SQLITE_FULL):
                raise GalleryError(f"{self.path}: the disk is full ({err}); nothing of this "
                                   "change was written. Free space on its disk and run this "
                                   "again.") from None
            raise

    def add(self, writer: str, paths: list[str], hashes: list[str],
            embeddings: np.ndarray | None, hinge: np.ndarray | None,
            thumbnails: list[bytes] | None = None, read: list[ReadAs] | None = None,
            exemplar: Exemplar | None = None) -> Enrolled:
        """Enrol images of `writer` in one transaction: all of them or none. An image whose
        hash is already this writer's is skipped; one enrolled under another writer stops
        the enrolment, naming both. `thumbnails` (small PNGs) are what reports show of the
        enrolled handwriting, months after its files may have moved; `read`, how each file
        was read, is what `gallery rebuild` reads it by again. `exemplar` solves the
        writer's exemplar SVM from its new summed hinge row, stored with it."""
        self._check_sizes(embeddings, hinge)
        now = utc_now()
        with self._transaction() as db:
            owners = self._owners(db, hashes)
            skipped, rows = [], []
            for i, (path, digest) in enumerate(zip(paths, hashes)):
                refuse_other_writer(path, writer, owners.get(digest))
                (skipped if digest in owners else rows).append(i)
            if rows:
                self._insert(db, writer, now, [paths[i] for i in rows],
                             [hashes[i] for i in rows],
                             None if embeddings is None else embeddings[rows],
                             None if hinge is None else hinge[rows],
                             None if thumbnails is None else [thumbnails[i] for i in rows],
                             None if read is None else [read[i] for i in rows], exemplar)
                _record(db, Event(now, "enrolled", writer, len(rows)))
        return Enrolled(writer, len(rows), [paths[i] for i in skipped])

    @staticmethod
    def _owners(db: sqlite3.Connection, hashes: list[str]) -> dict[str, tuple[str, str]]:
        """{sha256: (writer, enrolled path)} of those hashes already enrolled."""
        owners = {}
        for lo in range(0, len(hashes), 500):  # SQLite's bound on query parameters
            part = hashes[lo:lo + 500]
            owners.update((h, (w, _os_path(p))) for h, w, p in db.execute(
                "SELECT i.sha256, w.name, i.path FROM images i JOIN writers w ON w.id = "
                f"i.writer_id WHERE i.sha256 IN ({','.join('?' * len(part))})", part))
        return owners

    def owners(self, hashes: list[str]) -> dict[str, tuple[str, str]]:
        """{sha256: (writer, enrolled path)} of those of `hashes` already enrolled."""
        with self._reading():
            return self._owners(self.db, hashes)

    def _check_sizes(self, embeddings: np.ndarray | None, hinge: np.ndarray | None) -> None:
        for key, x, built in (("embedding_dim", embeddings, self.fingerprint),
                              ("hinge_dim", hinge, self.descriptor)):
            if (x is None) != (built is None):
                raise GalleryError(f"{self.path}: built by {self.built_by}; these features "
                                   f"{'lack' if x is None else 'add'} {key[:-4]}s")
            if x is not None and key in self.meta and int(self.meta[key]) != x.shape[1]:
                raise GalleryError(f"{self.path}: {key[:-4]}s of size {x.shape[1]}, but the "
                                   f"gallery holds size {self.meta[key]}. Enroll with what "
                                   "built it.")

    def _insert(self, db: sqlite3.Connection, writer: str, now: str, paths: list[str],
                hashes: list[str], embeddings: np.ndarray | None, hinge: np.ndarray | None,
                thumbnails: list[bytes] | None, read: list[ReadAs] | None,
                exemplar: Exemplar | None = None):
        """Insert images and fold them into the writer's aggregates, and solve its exemplar
        SVM from them with `exemplar` (inside a transaction)."""
        for column in READ_COLUMNS.keys() - _columns(db):  # a gallery from before them
            db.execute(f"ALTER TABLE images ADD COLUMN {column} {READ_COLUMNS[column]}")
        for key, x in (("embedding_dim", embeddings), ("hinge_dim", hinge)):
            if x is not None:
                db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, str(x.shape[1])))
                self.meta.setdefault(key, str(x.shape[1]))
        row = db.execute("SELECT id, n_images, embedding_sum, hinge_sum FROM writers "
                         "WHERE name = ?", (writer,)).fetchone()
        if row is None:
            writer_id = db.execute("INSERT INTO writers (name, enrolled, updated, n_images) "
                                   "VALUES (?, ?, ?, 0)", (writer, now, now)).lastrowid
            count, emb_sum, hinge_sum = 0, None, None
        else:
            writer_id, count, emb_sum, hinge_sum = row
        db.executemany(
            "INSERT INTO images (writer_id, path, sha256, enrolled, embedding, hinge, "
            f"thumbnail, {', '.join(READ_COLUMNS)}) VALUES "
            f"({', '.join('?' * (7 + len(READ_COLUMNS)))})",
            [(writer_id, _db_path(p), h, now,
              None if embeddings is None else _blob(embeddings[i], FEATURE_DTYPE),
              None if hinge is None else _blob(hinge[i], FEATURE_DTYPE),
              None if thumbnails is None else thumbnails[i],
              *((None,) * len(READ_COLUMNS) if read is None else read[i]))
             for i, (p, h) in enumerate(zip(paths, hashes))])
        emb_total = _summed(_array(emb_sum, self.sum_dtype), embeddings)
        hinge_total = _summed(_array(hinge_sum, self.sum_dtype), hinge)
        db.execute("UPDATE writers SET updated = ?, n_images = ?, embedding_sum = ?, "
                   "centroid = ?, hinge_sum = ? WHERE id = ?",
                   (now, count + len(paths),
                    None if emb_total is None else _blob(emb_total, self.sum_dtype),
                    None if emb_total is None else _blob(unit(emb_total), FEATURE_DTYPE),
                    None if hinge_total is None else _blob(hinge_total, self.sum_dtype),
                    writer_id))
        if exemplar is not None and hinge_total is not None:
            db.execute(EXEMPLARS)  # a gallery from before the table
            cohort, duals = exemplar(hinge_total)
            db.execute("INSERT OR REPLACE INTO exemplars VALUES (?, ?, ?, ?)",
                       (writer_id, cohort, count + len(paths), _blob(duals, DUAL_DTYPE)))

    def snapshot(self, cohort: str | None = None) -> Snapshot:
        """The writers and their aggregates, read in one transaction; with a `cohort`'s key,
        the exemplar SVMs stored against it for each writer's images as they are now."""
        names, centroids, duals = [], [], []
        sums = None
        with self._reading():
            stored = cohort is not None and _has_table(self.db, "exemplars")
            count = self.db.execute("SELECT COUNT(*) FROM writers").fetchone()[0]
            rows = self.db.execute(
                "SELECT w.name, w.centroid, w.hinge_sum, "
                f"{'e.duals' if stored else 'NULL'} FROM writers w "
                + ("LEFT JOIN exemplars e ON e.writer_id = w.id AND e.cohort = ? AND "
                   "e.n_images = w.n_images " if stored else "")
                + "ORDER BY w.id", (cohort,) if stored else ())
            for i, (name, centroid, hinge_sum, dual) in enumerate(rows):
                names.append(name)
                centroids.append(centroid)
                duals.append(_array(dual, DUAL_DTYPE))
                if self.descriptor and hinge_sum is not None:
                    if sums is None:
                        sums = np.zeros((count, len(hinge_sum) // self.sum_dtype.itemsize),
                                        READ_SUM_DTYPE)
                    sums[i] = np.frombuffer(hinge_sum, self.sum_dtype)
        return Snapshot(
            names, _matrix(centroids, FEATURE_DTYPE) if self.fingerprint and names else None,
            sums, duals)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            with self.db:  # one read transaction: every row from the same commit
                self.db.execute("BEGIN")
                yield
        except sqlite3.DatabaseError as err:
            if _is_locked(err):
                raise _locked(self.path, err) from None
            raise GalleryError(f"{self.path}: corrupt gallery ({err}). Restore it from a "
                               "backup, or enroll the writers into a new gallery.") from None

    def writers(self) -> list[dict]:
        """[{"writer", "images", "lines", "enrolled", "updated"}] in enrolment order;
        "lines" as `lines` counts them."""
        with self._reading():
            rows = self.db.execute(
                f"SELECT w.name, w.n_images, {_lines_of_writer(self.db)}, w.enrolled, "
                "w.updated FROM writers w LEFT JOIN images i ON i.writer_id = w.id GROUP BY "
                "w.id ORDER BY w.id").fetchall()
        return [{"writer": n, "images": k, "lines": lines, "enrolled": e, "updated": u}
                for n, k, lines, e, u in rows]

    def lines(self, writers: list[str]) -> dict[str, int | None]:
        """{writer: the lines of handwriting enrolled} of some enrolled writers (a page's
        found ones, a line image one; None where an image enrolled before the gallery
        recorded them was read as a page), by the index of their images: not every
        writer's, as `writers` reads."""
        counted: dict[str, int | None] = {}
        with self._reading():
            summed = _lines_of_writer(self.db)
            for at in range(0, len(writers), 500):  # SQLite's bound parameters
                part = writers[at:at + 500]
                counted |= dict(self.db.execute(
                    f"SELECT w.name, {summed} FROM writers w JOIN images i ON i.writer_id = "
                    f"w.id WHERE w.name IN ({', '.join('?' * len(part))}) GROUP BY w.id", part))
        return counted

    def images(self, writer: str) -> list[dict]:
        """[{"path", "sha256", "enrolled", "dpi", "read_as", "paper", "camera", "lines"}] of a
        writer's enrolled images, in enrolment order: what the writer is known by (dpi and
        read_as None where the gallery did not yet record them; dpi alone for a photo, whose
        sheet sets it; paper for a photo; camera for a photo with no sheet found: `ReadAs`).
        An unknown writer raises, naming the file."""
        with self._reading():
            writer_id = self._writer_id(self.db, writer)
            rows = self.db.execute(f"SELECT i.path, i.sha256, i.enrolled, {_read(self.db)} "
                                   "FROM images i WHERE i.writer_id = ? ORDER BY i.id",
                                   (writer_id,)).fetchall()
        return [dict(zip(("path", "sha256", "enrolled", *READ_COLUMNS), (_os_path(p), *r)))
                for p, *r in rows]

    def enrolment(self, writer: str) -> Enrolment:
        """A writer's enrolled images with their features, in enrolment order: to weigh
        handwriting against that writer alone (`verify` against an enrolled writer). An
        unknown writer raises, naming the file."""
        with self._reading():
            writer_id = self._writer_id(self.db, writer)
            rows = self.db.execute(f"SELECT i.path, i.sha256, i.embedding, i.hinge, "
                                   f"i.thumbnail, {_read(self.db)} FROM images i WHERE "
                                   "i.writer_id = ? ORDER BY i.id", (writer_id,)).fetchall()
        paths, hashes, emb, hinge, thumbnails, *read = map(list, zip(*rows))
        return Enrolment([_os_path(p) for p in paths], hashes,
                         _matrix(emb, FEATURE_DTYPE) if self.fingerprint else None,
                         _matrix(hinge, FEATURE_DTYPE) if self.descriptor else None,
                         thumbnails, [ReadAs(*r) for r in zip(*read)])

    def sources(self) -> list[tuple[str, list[Source]]]:
        """[(writer, [Source])] of every writer's images, in enrolment order."""
        with self._reading():
            rows = self.db.execute(f"SELECT w.name, i.path, i.sha256, {_read(self.db)} FROM "
                                   "images i JOIN writers w ON w.id = i.writer_id ORDER BY "
                                   "w.id, i.id").fetchall()
        writers: dict[str, list[Source]] = {}
        for name, path, *source in rows:
            writers.setdefault(name, []).append(Source(_os_path(path), *source))
        return list(writers.items())

    def dates(self) -> Dates:
        """When each writer was enrolled and last updated, each image enrolled, and the
        gallery's history."""
        with self._reading():
            writers = {n: (e, u) for n, e, u in self.db.execute(
                "SELECT name, enrolled, updated FROM writers")}
            images = dict(self.db.execute("SELECT sha256, enrolled FROM images"))
            return Dates(writers, images, [e for _, e in _history(self.db)])

    def keep_dates(self, dates: Dates, rebuilt: str) -> None:
        """Give the writers (by name) and images (by SHA-256) the dates of another gallery's
        `dates`, this one rebuilt from it, and its history in place of this one's, then
        the rebuild (`rebuilt`: from what, for what): when handwriting became known is the
        old one's."""
        with self._transaction() as db:
            db.executemany("UPDATE writers SET enrolled = ?, updated = ? WHERE name = ?",
                           [(e, u, n) for n, (e, u) in dates.writers.items()])
            db.executemany("UPDATE images SET enrolled = ? WHERE sha256 = ?",
                           [(e, h) for h, e in dates.images.items()])
            db.execute("DELETE FROM history")
            for event in dates.history:
                _record(db, event)
            _record(db, Event(utc_now(), "rebuilt", detail=rebuilt))

    def history(self, writer: str | None = None) -> list[Event]:
        """Every change to the gallery, oldest first; with `writer`, those of the writer
        last known by that name, under any name they had before (a rename's old one): none
        for a writer enrolled, and not changed since, before the history began (a gallery
        made before it begins it with its first change since)."""
        with self._reading():
            events = [e for _, e in _history(self.db)]
            enrolled = writer is not None and self.db.execute(
                "SELECT 1 FROM writers WHERE name = ?", (writer,)).fetchone()
        if writer is None:
            return events
        mine = _one_writer(events, writer)
        if not mine and not enrolled:
            raise GalleryError(f"{self.path}: no writer {writer!r} in the gallery's history. "
                               f"`iam-writers gallery history {self.path}` shows it all.")
        return [events[i] for i in mine]

    def thumbnails(self, writer: str, limit: int = 3) -> list[tuple[str, bytes]]:
        """(path, PNG) of up to `limit` of a writer's enrolled images that have a thumbnail."""
        with self._reading():
            rows = self.db.execute(
                "SELECT i.path, i.thumbnail FROM images i JOIN writers w ON w.id = "
                "i.writer_id WHERE w.name = ? AND i.thumbnail IS NOT NULL ORDER BY i.id "
                "LIMIT ?", (writer, limit)).fetchall()
        return [(_os_path(path), png) for path, png in rows]

    def info(self) -> dict:
        """What built the gallery, its schema, its size, its latest change, and how many
        writers have an exemplar SVM stored for their images as they are (against any
        model's cohort)."""
        with self._reading():
            n_writers, = self.db.execute("SELECT count(*) FROM writers").fetchone()
            n_images, = self.db.execute("SELECT count(*) FROM images").fetchone()
            n_svms, = self.db.execute(
                "SELECT count(*) FROM exemplars e JOIN writers w ON w.id = e.writer_id AND "
                "e.n_images = w.n_images").fetchone() if _has_table(self.db, "exemplars") else (0,)
            last_change = _last_change(self.db)
        return {"gallery": str(self.path), "schema": SCHEMA_VERSION,
                "model": self.fingerprint, "descriptor": self.descriptor,
                "embedding_dim": _int(self.meta.get("embedding_dim")),
                "feature_dtype": self.meta.get("feature_dtype", FEATURE_DTYPE.str),
                "sum_dtype": self.sum_dtype.str, "hinge_dim": _int(self.meta.get("hinge_dim")),
                "created": self.meta.get("created"), "last_change": last_change,
                "writers": n_writers,
                "images": n_images, "exemplar_svms": n_svms, "bytes": self.path.stat().st_size}

    def check(self) -> list[str]:
        """Problems found: SQLite's integrity check, then every writer's image count and
        sums against their images (all read in one transaction). Empty when sound."""
        with self._reading():
            problems = [r[0] for r in self.db.execute("PRAGMA quick_check") if r[0] != "ok"]
            rows = self.db.execute("SELECT id, name, n_images, embedding_sum, hinge_sum "
                                   "FROM writers").fetchall()
            for writer_id, name, count, emb_sum, hinge_sum in rows:
                images = self.db.execute("SELECT embedding, hinge FROM images WHERE "
                                         "writer_id = ?", (writer_id,)).fetchall()
                for k, (column, total) in enumerate((("embedding", emb_sum),
                                                     ("hinge", hinge_sum))):
                    blobs = [r[k] for r in images if r[k] is not None]
                    if (total is None) != (not blobs) or (blobs and not _agrees(
                            _matrix(blobs, FEATURE_DTYPE), _array(total, self.sum_dtype))):
                        problems.append(f"{name}: the {column} sum disagrees with the images")
                if count != len(images):
                    problems.append(f"{name}: {count} images counted, {len(images)} stored")
        return problems

    def _writer_id(self, db: sqlite3.Connection, writer: str) -> int:
        row = db.execute("SELECT id FROM writers WHERE name = ?", (writer,)).fetchone()
        if row is None:
            raise GalleryError(f"{self.path}: no writer {writer!r}. `iam-writers gallery list "
                               f"{self.path}` lists the enrolled writers.")
        return row[0]

    def remove(self, writer: str, keep_name: bool = False) -> int:
        """Delete a writer and every feature of theirs from the file: deleted content is
        overwritten (secure_delete) and the write-ahead log emptied into the file. The
        history records the removal, dated, and erases the writer's name from it (and the
        names they had before) unless `keep_name`: a person who asks to be erased is. Returns
        the number of images removed."""
        with self._transaction() as db:
            writer_id = self._writer_id(db, writer)
            n = db.execute("DELETE FROM images WHERE writer_id = ?", (writer_id,)).rowcount
            db.execute("DELETE FROM writers WHERE id = ?", (writer_id,))
            if not keep_name:
                history = _history(db)
                erase = [history[i][0] for i in _one_writer([e for _, e in history], writer)]
                db.executemany("UPDATE history SET writer = NULL, detail = CASE WHEN action "
                               "= 'renamed' THEN NULL ELSE detail END WHERE id = ?",
                               [(i,) for i in erase])
            _record(db, Event(utc_now(), "removed", writer if keep_name else None, n))
        busy, _, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise GalleryError(f"{self.path}: {writer} is removed, but another process is "
                               "reading the gallery, so old copies of the features stay in "
                               f"{self.path.name}-wal until it ends. Run the remove again "
                               "when no one uses the gallery.")
        return n

    def rename(self, old: str, new: str) -> None:
        check_name(self.path, new)
        with self._transaction() as db:
            writer_id = self._writer_id(db, old)
            if db.execute("SELECT 1 FROM writers WHERE name = ?", (new,)).fetchone():
                raise GalleryError(f"{self.path}: a writer {new!r} is already enrolled. "
                                   "Choose another name, or remove one of the two.")
            now = utc_now()
            db.execute("UPDATE writers SET name = ?, updated = ? WHERE id = ?",
                       (new, now, writer_id))
            _record(db, Event(now, "renamed", new, detail=old))

    def backup(self, dest: str | Path) -> Path:
        """A copy of the gallery as it is at one moment, in `dest` (SQLite's online backup:
        enrolments may go on meanwhile, and what they have committed is in it, write-ahead
        log included), checked (`PRAGMA quick_check`) and linked into place when whole. An
        existing `dest` is refused. The copy is a gallery like this one (write-ahead log),
        whose history ends with the backup: from which gallery, when."""
        target = gallery_file(dest)
        if target.exists():
            raise GalleryError(f"{target}: already exists. Back up into a new file.")
        if not target.parent.is_dir():
            raise GalleryError(f"{target.parent}: no such folder. Make it, or back up into "
                               "another one.")
        def copy_into(tmp: Path) -> None:
            copy = sqlite3.connect(tmp, isolation_level=None)
            try:
                self.db.backup(copy)
                with copy:  # the copy says what it is a copy of, and since when
                    copy.execute(HISTORY)
                    _record(copy, Event(utc_now(), "backed up",
                                        detail=f"from {self.path.resolve()}"))
                copy.execute(f"PRAGMA journal_mode = {_journal_for(target.parent, 'WAL')}")
                problems = [r[0] for r in copy.execute("PRAGMA quick_check") if r[0] != "ok"]
            finally:
                copy.close()
            if problems:
                raise GalleryError(f"{self.path}: corrupt gallery ({'; '.join(problems)}); "
                                   "no backup was written. Restore it from an older backup.")

        if not _linked_into_place(target, copy_into):
            raise GalleryError(f"{target}: already exists. Back up into a new file.")
        return target

    def close(self) -> None:
        self.db.close()


def check_name(gallery: str | Path, writer: str) -> None:
    """Refuse a writer's name that is not one line of text, as every listing and answer
    shows it: empty, with a line break, tab or other control character, or a space at
    either end."""
    if not writer.strip():
        raise GalleryError(f"{gallery}: empty writer name. Pass --writer ID.")
    if why := not_utf8(writer):
        raise GalleryError(f"{gallery}: {why}")
    if writer != writer.strip() or any(unicodedata.category(c) in ("Cc", "Zl", "Zp")
                                       for c in writer):
        raise GalleryError(f"{gallery}: the writer name {writer!r} has a space at an end, a "
                           "line break or another control character. Pass a name of one line "
                           "of text.")


def not_utf8(writer: str) -> str | None:
    """Why a writer's name that came as bytes in another encoding than UTF-8 (held by Python
    as lone surrogates, such as a Latin-1 terminal's `ü`) is refused, and the fix; None for
    UTF-8 text."""
    if not any(unicodedata.category(c) == "Cs" for c in writer):
        return None
    return (f"the writer name {writer!r} is not UTF-8 text (the terminal or file sent it in "
            "another encoding, such as Latin-1). Set the terminal to UTF-8, or pass the name "
            "in ASCII.")


def event_words(event: Event) -> str:
    """A history's event in words: `enrolled W (3 images)`, `renamed OLD to NEW`, `removed a
    writer whose name was erased (5 images)`."""
    images = "" if event.images is None else f" ({event.images} image" \
        f"{'' if event.images == 1 else 's'})"
    who = "a writer whose name was erased" if event.writer is None else event.writer
    if event.action == "renamed":
        return (f"renamed {event.detail} to {event.writer}" if event.writer is not None
                else "renamed a writer whose names were erased")
    if event.action == "created":
        return f"created, {event.detail}"
    if event.action in ("rebuilt", "backed up"):
        return f"{event.action} {event.detail}"
    return f"{event.action} {who}{images}"


def _history(db: sqlite3.Connection) -> list[tuple[int, Event]]:
    """(row id, event) of the history, oldest first; none in a gallery from before it."""
    if not _has_table(db, "history"):
        return []
    return [(i, Event(*row)) for i, *row in db.execute(
        "SELECT id, at, action, writer, images, detail FROM history ORDER BY id")]


def _last_change(db: sqlite3.Connection) -> str:
    """The latest change in words (`2026-12-07T10:00:00+00:00, enrolled W`), read from the
    history's last row alone (inside a read); in a gallery from before its history, its
    latest enrolment or rename. `Gallery.info`'s `last_change`."""
    if _has_table(db, "history") and (row := db.execute(
            "SELECT at, action, writer, images, detail FROM history ORDER BY id DESC "
            "LIMIT 1").fetchone()):
        return f"{row[0]}, {event_words(Event(*row))}"
    latest, = db.execute("SELECT max(updated) FROM writers").fetchone()
    return f"{latest or 'none'}, its latest enrolment or rename (no history before this " \
           "version)"


def _record(db: sqlite3.Connection, event: Event) -> None:
    db.execute("INSERT INTO history (at, action, writer, images, detail) VALUES "
               "(?, ?, ?, ?, ?)", event)


def _one_writer(events: list[Event], writer: str) -> list[int]:
    """The indices of `events` of the writer last known by the name `writer`: from the
    latest naming it, back through the names they had before (a rename's old one), and not
    past the removal of another writer of one of those names."""
    last = max((i for i, e in enumerate(events) if e.writer == writer), default=-1)
    names, mine = {writer}, []
    for i in range(last, -1, -1):
        event = events[i]
        if event.writer not in names:
            continue
        if event.action == "removed" and i != last:  # another writer of that name, before
            names.discard(event.writer)
            continue
        mine.append(i)
        if event.action == "renamed" and event.detail is not None:
            names.discard(event.writer)
            names.add(event.detail)
    return mine[::-1]


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    """Whether the gallery has table `name` (those added to schema 1 came later)."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() \
        is not None


def _columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(images)")}


def _read(db: sqlite3.Connection) -> str:
    """The READ_COLUMNS of `images i` to select: NULL for those a gallery lacks."""
    have = _columns(db)
    return ", ".join(f"i.{c}" if c in have else "NULL" for c in READ_COLUMNS)


def _lines_of_writer(db: sqlite3.Connection) -> str:
    """The SQL of one writer's lines over its `images i`, grouped: NULL where an image's
    are not known (an image read as a line is one line, whenever it was enrolled)."""
    have = _columns(db)
    each = (f"COALESCE({'i.lines' if 'lines' in have else 'NULL'}, CASE WHEN "
            f"{'i.read_as' if 'read_as' in have else 'NULL'} = 'line' THEN 1 END)")
    return f"CASE WHEN COUNT({each}) = COUNT(i.id) THEN SUM({each}) END"


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


def _agrees(rows: np.ndarray, total: np.ndarray) -> bool:
    """Whether a stored sum is its rows' sum, to the rounding of a float32 sum at each of
    its enrolments: a bound on the rows' magnitudes, not on the total, which may be small."""
    rows = rows.astype(np.float64)
    return bool(np.all(np.abs(rows.sum(axis=0) - total)
                       <= 1e-6 + SUM_TOLERANCE * np.abs(rows).sum(axis=0)))


def _summed(total: np.ndarray | None, rows: np.ndarray | None) -> np.ndarray | None:
    if rows is None:
        return None
    added = rows.astype(np.float64).sum(axis=0)  # stored in the gallery's `sum_dtype`
    return added if total is None else total + added


def _built_by(fingerprint: str | None, descriptor: str | None) -> str:
    parts = ([f"model {fingerprint}"] if fingerprint else []) + \
        ([f"descriptor {descriptor}"] if descriptor else [])
    return " and ".join(parts)


def _is_locked(err: sqlite3.DatabaseError) -> bool:
    """SQLite's "database is locked": another connection's transaction outlasted the wait."""
    code = _code(err)
    return ("is locked" in str(err) if code is None
            else (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED))


def _code(err: BaseException) -> int | None:
    """SQLite's error code, which Python gives (with its constants) from 3.11 only."""
    return getattr(err, "sqlite_errorcode", None)


def _is(err: BaseException, *primary: int) -> bool:
    """Whether `err` is SQLite's error of one of these primary codes (SQLITE_FULL: "database
    or disk is full"; SQLITE_READONLY: "attempt to write a readonly database"), whatever its
    extended code."""
    code = _code(err)
    return code is not None and code & 0xFF in primary


def _locked(path: Path, err: sqlite3.DatabaseError) -> GalleryError:
    """Another process's transaction outlasted the wait (SQLite's "database is locked"),
    in one line rather than SQLite's traceback, or a corrupt file's words."""
    return GalleryError(f"{path}: another process kept the gallery locked for "
                        f"{BUSY_TIMEOUT_S:g} s ({err}): an enrolment, removal or rename still "
                        "running, or a program holding it open mid-write. Run this again "
                        "when that is done.")


def _read_only(file: Path) -> str | None:
    """Why this user cannot write the gallery `file` (None: it can)."""
    if not os.access(file, os.W_OK):
        return "this user cannot write the gallery (a read-only file)"
    if not os.access(file.parent, os.W_OK):
        return "this user cannot write the gallery's folder"
    # SQLite's -wal and -shm take the ownership of whoever made them: another user's reader
    theirs = [f.name for f in (file.parent / f"{file.name}-wal", file.parent / f"{file.name}-shm")
              if f.exists() and not os.access(f, os.W_OK)]
    if theirs:
        return f"this user cannot write {' and '.join(theirs)} beside it (another user's)"
    return None


def _has_wal(file: Path) -> bool:
    """Whether SQLite's write-ahead log beside `file` holds changes not yet in it."""
    try:
        return (file.parent / f"{file.name}-wal").stat().st_size > 0
    except OSError:
        return False


def _unwritable(file: Path, why: str) -> GalleryError:
    return GalleryError(f"{file}: {why}; it can be read, not changed. Run this as a user who "
                        "can write it, or copy it to a folder you can write and pass the copy.")


def _connect(file: Path, immutable: bool = False) -> sqlite3.Connection:
    """A connection that waits for other writers, overwrites what it deletes and leaves
    transactions to the gallery (autocommit off: `isolation_level=None`). `immutable`: for a
    gallery this user may only read, with no write-ahead log beside it; SQLite then creates
    no -shm and -wal files, which a read-only folder refuses and which, left in a shared
    folder by this user, the gallery's owner could not write."""
    if immutable:
        db = sqlite3.connect(f"{file.absolute().as_uri()}?immutable=1", uri=True,
                             isolation_level=None)
    else:
        db = sqlite3.connect(file, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    db.execute("PRAGMA secure_delete = ON")
    db.execute("PRAGMA foreign_keys = ON")
    return db


def _create(db: sqlite3.Connection, fingerprint: str | None, descriptor: str | None,
            journal: str = "WAL") -> None:
    """The schema and metadata of a new gallery; the journal mode is stored in the file."""
    db.execute(f"PRAGMA journal_mode = {journal}")
    db.execute("BEGIN")
    for statement in filter(str.strip, SCHEMA.split(";")):  # executescript would commit
        db.execute(statement)
    meta = {"schema": str(SCHEMA_VERSION), "created": utc_now(),
            "feature_dtype": FEATURE_DTYPE.str, "sum_dtype": SUM_DTYPE.str}
    meta |= {k: v for k, v in (("fingerprint", fingerprint), ("descriptor", descriptor)) if v}
    db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    _record(db, Event(meta["created"], "created",
                      detail=f"built by {_built_by(fingerprint, descriptor)}"))
    db.commit()


def new_in_memory(fingerprint: str | None, descriptor: str | None) -> Gallery:
    """A gallery that lives in memory (benchmarks, and exports on read-only disks)."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    _create(db, fingerprint, descriptor)
    return Gallery(Path(":memory:"), db)


def _read_legacy(path: str | Path):
    """(fingerprint, descriptor, writers, owners, images, embeddings, hinge) of a gallery
    from before the database, its checksum verified."""
    npz, meta = legacy_files(path)
    try:
        info = json.loads(meta.read_text())
        data = npz.read_bytes()
        if hashlib.sha256(data).hexdigest() != info["npz_sha256"]:
            raise ValueError("checksum mismatch")
        arrays = np.load(io.BytesIO(data), allow_pickle=False)
        fingerprint, descriptor = info["fingerprint"], info.get("descriptor")  # older: none
        return (fingerprint, descriptor, info["writers"], arrays["owners"], info["images"],
                arrays["embeddings"] if fingerprint else None,
                arrays["hinge"] if descriptor else None)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise GalleryError(f"{meta}: corrupt gallery from before the database ({err}); "
                           "it cannot be upgraded. Enroll the writers again.") from None


def _fill(gallery: Gallery, writers: list[str], owners: np.ndarray, images: list[str],
          emb: np.ndarray | None, hinge: np.ndarray | None, meta: Path) -> None:
    """Enrol an old gallery's writers into a new one, in their order."""
    for i, writer in enumerate(writers):
        rows = np.flatnonzero(owners == i)
        paths = [images[j] for j in rows]
        gallery.add(writer, paths, [_legacy_hash(Path(p), meta) for p in paths],
                    None if emb is None else emb[rows], None if hinge is None else hinge[rows])


def _journal_for(folder: Path, journal: str) -> str:
    """`journal`, but SQLite's rollback journal (DELETE) in place of its write-ahead log on a
    network file system or WSL's /mnt/c (`shared_filesystem`), where the log's shared
    memory fails ("disk I/O error") or, between machines, corrupts."""
    return "DELETE" if journal == "WAL" and shared_filesystem(folder) else journal


def shared_filesystem(folder: Path) -> str | None:
    """The type of the network file system (or WSL's mount of Windows' drives) that `folder`
    is on, as Linux's mount table names it; None for a local one, or off Linux."""
    try:
        table = MOUNTS.read_text().splitlines()
    except OSError:
        return None
    folder, deepest, kind = folder.resolve(), -1, None
    for line in table:
        fields = line.split()
        if len(fields) < 3:
            continue
        # the table writes a space in a mount point as \040
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1]))
        if (point == folder or point in folder.parents) and len(point.parts) > deepest:
            deepest, kind = len(point.parts), fields[2]
    return kind if kind in SHARED_FILESYSTEMS else None


def _new_file(file: Path, fingerprint: str | None, descriptor: str | None,
              journal: str = "WAL", fill=None) -> None:
    """Make a gallery file, filled by `fill(gallery)` (`_linked_into_place`): of several
    processes making the same gallery at once, the first to finish wins and the others use
    its file."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError as err:
        raise cannot_write(file, err) from None

    journal = _journal_for(file.parent, journal)

    def make(tmp: Path) -> None:
        db = _connect(tmp)
        _create(db, fingerprint, descriptor, journal)
        if fill:
            fill(Gallery(tmp, db))
        db.close()  # the last connection folds the write-ahead log into the file

    _linked_into_place(file, make)


def _linked_into_place(file: Path, write: Callable[[Path], None]) -> bool:
    """Write a SQLite file by `write(path)` under a temporary name beside `file` and link it
    to `file` when whole: no process ever sees it half made. False where `file` appeared
    meanwhile. The temporary file (and its -wal, -shm) is removed either way."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=SUFFIX, dir=file.parent)
    except PermissionError as err:
        raise cannot_write(file, err) from None
    os.close(fd)
    os.unlink(tmp)  # SQLite makes the file
    try:
        try:
            write(Path(tmp))
        except sqlite3.OperationalError as err:
            if _is(err, sqlite3.SQLITE_FULL):
                raise no_space(file, str(err)) from None
            raise
        try:
            os.link(tmp, file)
        except FileExistsError:
            return False
        return True
    finally:
        for leftover in file.parent.glob(Path(tmp).name + "*"):
            leftover.unlink()


def upgrade(path: str | Path) -> Path:
    """Convert a gallery from before the database (NAME.npz + NAME.json, checksummed) into
    NAME.sqlite, then remove the old files."""
    npz, meta = legacy_files(path)
    file = gallery_file(path)
    if file.exists():
        raise FileExistsError(f"{file}: already a database; nothing to upgrade.")
    fingerprint, descriptor, *old = _read_legacy(path)
    _new_file(file, fingerprint, descriptor, fill=lambda g: _fill(g, *old, meta))
    npz.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)
    return file


def _legacy_hash(path: Path, meta: Path) -> str:
    """An upgraded image's hash: of its file where it still exists (relative paths against
    the gallery's folder as well), else of the gallery and path, unique but not content."""
    for candidate in (path, meta.parent / path):
        if candidate.is_file():
            return sha256_of(candidate)
    return hashlib.sha256(f"legacy:{meta.name}:{path}".encode()).hexdigest()
