"""The Kaggle `iam-handwriting-top50` layout: finding it, parsing it, splitting it.

    <root>/forms_for_parsing.txt                 `<form-id> <writer-id> ...` per line
    <root>/data_subset/data_subset/<form>-sNN-MM.png

Everything here is plain Python + numpy so the CLI, the builder and the tests share it.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from iam_writers_tfds import atomic

KAGGLE_HANDLE = "tejasreddy/iam-handwriting-top50"
FORMS_FILE = "forms_for_parsing.txt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_MEMBER_BYTES = 64 * 1024 * 1024  # one line image is ~100 kB; a 64 MB member is not data
_FORM_RE = re.compile(r"^[A-Za-z0-9]+-[A-Za-z0-9]+$")
_WRITER_RE = re.compile(r"^[A-Za-z0-9_]+$")

SPLIT_RULE = (
    "Form-disjoint and stratified by writer: for each writer (sorted), its forms (sorted) are "
    "shuffled with numpy default_rng([seed, crc32(writer_id)]); writers with >= 3 forms put "
    "max(1, round(n * val_fraction)) forms in validation, max(1, round(n * test_fraction)) in "
    "test and the rest in train; writers with fewer than 3 forms go to train only."
)


class LayoutError(ValueError):
    """The data folder or archive cannot be used; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One image of the layout."""

    path: Path
    image_id: str
    form_id: str
    writer_id: str
    text: str = ""  # the transcription, where the layout has one (IAM's lines.txt)
    segmentation_ok: bool = True


def parse_forms(path: Path) -> dict[str, str]:
    """Map form id -> writer id from `forms_for_parsing.txt`; malformed lines stop with an error."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise LayoutError(
            f"{path}: not valid UTF-8 text (byte {err.start}). Re-download the file."
        ) from None
    except OSError as err:
        raise LayoutError(f"{path}: cannot be read ({err.strerror}).") from None
    forms: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = line.split()
        if len(cols) < 2 or not _FORM_RE.match(cols[0]) or not _WRITER_RE.match(cols[1]):
            raise LayoutError(
                f"{path}:{lineno}: malformed line {line.strip()[:80]!r}; expected "
                "'<form-id> <writer-id> ...' such as 'a01-000u 000 2 prt 7 5 52 36'. "
                "Fix or remove the line."
            )
        if forms.get(cols[0], cols[1]) != cols[1]:
            raise LayoutError(
                f"{path}:{lineno}: form {cols[0]} is listed with two writers "
                f"({forms[cols[0]]} and {cols[1]}). Keep one line per form."
            )
        forms[cols[0]] = cols[1]
    if not forms:
        raise LayoutError(f"{path}: lists no forms. Re-download the file.")
    return forms


def form_of(image_name: str) -> str | None:
    """Form id of an image name: its first two dash-separated parts (`a01-000u-s00-01.png`)."""
    parts = Path(image_name).stem.split("-")
    return f"{parts[0]}-{parts[1]}" if len(parts) >= 2 and parts[0] and parts[1] else None


def find_root(folder: Path) -> Path | None:
    """The folder holding `forms_for_parsing.txt` at `folder` or one level below, if any."""
    folder = Path(folder)
    if (folder / FORMS_FILE).is_file():
        return folder
    for child in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        if (child / FORMS_FILE).is_file():
            return child
    return None


def image_dir(root: Path) -> Path:
    """`data_subset/data_subset` as Kaggle ships it, or a flatter `data_subset`."""
    for candidate in (root / "data_subset" / "data_subset", root / "data_subset"):
        if candidate.is_dir():
            return candidate
    raise LayoutError(
        f"{root}: has {FORMS_FILE} but no data_subset/data_subset/ folder of images. "
        "Extract the whole Kaggle archive there."
    )


def scan(root: Path) -> tuple[list[Record], list[str]]:
    """All images of the layout with their form and writer, plus the names it had to skip."""
    forms = parse_forms(root / FORMS_FILE)
    records, skipped = [], []
    for path in sorted(image_dir(root).iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        form = form_of(path.name)
        if path.suffix.lower() not in IMAGE_SUFFIXES or form is None:
            skipped.append(f"{path.name} (not a '<form>-sNN-MM.png' image)")
        elif form not in forms:
            skipped.append(f"{path.name} (form {form} is not in {FORMS_FILE})")
        else:
            records.append(Record(path, path.stem, form, forms[form]))
    if not records:
        raise LayoutError(f"{root}: no usable images in {image_dir(root)}.")
    return records, skipped


def top_writers(records: list[Record], k: int) -> list[str]:
    """The k writers with the most images, ties broken by writer id (the notebooks' top-10)."""
    counts = collections.Counter(r.writer_id for r in records)
    return sorted(sorted(counts), key=lambda w: (-counts[w], w))[:k]


def split_forms(
    form_to_writer: dict[str, str],
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> tuple[dict[str, str], list[str]]:
    """Assign every form to train/validation/test (see SPLIT_RULE); returns (split by form,
    writers that went to train only)."""
    by_writer: dict[str, list[str]] = collections.defaultdict(list)
    for form, writer in form_to_writer.items():
        by_writer[writer].append(form)
    assignment, train_only = {}, []
    for writer in sorted(by_writer):
        forms = sorted(by_writer[writer])
        order = np.random.default_rng([seed, zlib.crc32(writer.encode())]).permutation(len(forms))
        forms = [forms[i] for i in order]
        n = len(forms)
        if n < 3:
            train_only.append(writer)
            n_val = n_test = 0
        else:
            n_val = max(1, round(n * val_fraction))
            n_test = max(1, round(n * test_fraction))
        for i, form in enumerate(forms):
            split = "validation" if i < n_val else "test" if i < n_val + n_test else "train"
            assignment[form] = split
    return assignment, train_only


def safe_extract(archive: Path, target: Path, max_member_bytes: int = MAX_MEMBER_BYTES) -> Path:
    """Extract a zip into `target`, refusing zip-slip paths, symbolic links and huge members.

    Extraction goes to a temporary sibling folder that is renamed into place at the end,
    so an interrupted run leaves nothing at `target`.
    """
    target = Path(target)
    if target.is_dir():
        return target
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise LayoutError(
            f"{archive}: not a readable zip archive ({err}). Re-download it."
        ) from None
    with zf:
        for info in zf.infolist():
            name = info.filename
            parts = Path(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
                raise LayoutError(
                    f"{archive}: member {name!r} points outside the extraction folder (zip-slip). "
                    "Refusing to extract; get the archive from a trusted source."
                )
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise LayoutError(
                    f"{archive}: member {name!r} is a symbolic link. Refusing to extract."
                )
            if info.file_size > max_member_bytes:
                raise LayoutError(
                    f"{archive}: member {name!r} is {info.file_size:,} bytes, above the "
                    f"{max_member_bytes:,}-byte limit. Refusing to extract."
                )
        with atomic.replaced(target, directory=True) as tmp:
            for info in zf.infolist():
                with zf.open(info) as src:
                    data = src.read(max_member_bytes + 1)
                if len(data) > max_member_bytes:
                    raise LayoutError(f"{archive}: member {info.filename!r} is above the limit.")
                dest = tmp / info.filename
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
    return target


def root_in(folder: Path, extract_to: Path) -> Path | None:
    """The layout root inside `folder`, extracted, or inside a zip archive in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    root = find_root(folder)
    if root is not None:
        return root
    for archive in sorted(folder.glob("*.zip")):
        tag = zlib.crc32(str(archive.resolve()).encode())
        dest = Path(extract_to) / f"{archive.stem}-{tag:08x}"
        root = find_root(safe_extract(archive, dest))
        if root is not None:
            return root
    return None


def roots_in(folder: Path, extract_to: Path) -> list[Path]:
    """Every layout in a manual folder: the one `root_in` finds there, or, for several
    sources, one in each of its subfolders (a layout, a layout one level below, or a zip)."""
    folder = Path(folder)
    if (folder / FORMS_FILE).is_file():
        return [folder]
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    roots = [r for r in (root_in(p, extract_to) for p in subfolders) if r is not None]
    if roots:
        return roots
    single = root_in(folder, extract_to)
    return [single] if single else []


def scan_all(roots: list[Path], scan_one=None) -> tuple[list[Record], list[str]]:
    """`scan_one` (default: `scan`) of several layouts as one: writer ids are IAM's, shared
    across sources; an image in two of them, or a form given two writers, stops with both
    files named."""
    records, skipped, seen, writer_of = [], [], {}, {}
    for root in roots:
        recs, skip = (scan_one or scan)(root)
        for r in recs:
            if r.image_id in seen:
                raise LayoutError(f"{r.path}: the same image as {seen[r.image_id]}. Pass each "
                                  "line once: remove one copy or one of the folders.")
            form = writer_of.setdefault(r.form_id, (r.writer_id, root))
            if form[0] != r.writer_id:
                raise LayoutError(f"{root}: form {r.form_id} is by writer {r.writer_id}, but "
                                  f"by {form[0]} in {form[1]}. Fix one of the two forms "
                                  "files.")
            seen[r.image_id] = r.path
        records += recs
        skipped += skip
    return records, skipped


def kaggle_download(handle: str = KAGGLE_HANDLE) -> Path:
    """Fetch the dataset with kagglehub, preferring the newest version already in its cache
    (kagglehub serves cached data offline only for a pinned version)."""
    import kagglehub  # noqa: PLC0415 - optional path; the import is slow and needs no network

    cache = Path(os.environ.get("KAGGLEHUB_CACHE", Path.home() / ".cache" / "kagglehub"))
    base = cache / "datasets" / handle
    cached = sorted(
        (int(p.stem) for p in base.glob("*.complete") if p.stem.isdigit()), reverse=True
    )
    pinned = f"{handle}/versions/{cached[0]}" if cached else handle
    try:
        return Path(kagglehub.dataset_download(pinned))
    except Exception as err:  # kagglehub raises many types: network, auth, HTTP
        raise LayoutError(
            f"Could not get the Kaggle dataset {handle!r} through kagglehub "
            f"({type(err).__name__}: offline, no credentials, or no cached version).\n"
            "Provide the data in one of two ways:\n"
            f"  1. Download https://www.kaggle.com/datasets/{handle} as a zip, or extract it, "
            "into a folder and pass it with --manual-dir DIR (tfds build: --manual_dir DIR).\n"
            "  2. Configure Kaggle credentials and network access for kagglehub "
            "(KAGGLEHUB_CACHE selects its cache folder).\n"
            "Without the real data, use --config synthetic."
        ) from None
