"""The official IAM Handwriting Database distribution: `lines` images and `ascii` metadata.

    <root>/lines/<a01>/<a01-000u>/<a01-000u-00>.png   (or lines.tgz)
    <root>/ascii/forms.txt                             (or ascii.tgz)
    <root>/ascii/lines.txt

Both text files follow their own documented formats (comment lines start with `#`):
`forms.txt`: form id, writer id, then further columns; `lines.txt`: line id, segmentation
result `ok`/`err`, graylevel, number of components, bounding box x y w h, then the
transcription with `|` between words. Plain Python + numpy, as `kaggle_layout`.
"""

from __future__ import annotations

import dataclasses
import tarfile
import zlib
from pathlib import Path

from iam_writers_tfds import atomic
from iam_writers_tfds.kaggle_layout import MAX_MEMBER_BYTES, LayoutError, Record

LINES_ARCHIVE, ASCII_ARCHIVE = "lines.tgz", "ascii.tgz"
DOWNLOAD = ("register at https://fki.tic.heia-fr.ch/databases/iam-handwriting-database and "
            "download lines.tgz and ascii.tgz into the manual folder (or extract them there)")


@dataclasses.dataclass(frozen=True)
class Line:
    """One row of `lines.txt`."""

    line_id: str
    segmentation_ok: bool
    text: str


def _rows(path: Path):
    """(line number, fields) of the non-comment, non-blank lines of an IAM text file."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise LayoutError(f"{path}: not valid UTF-8 text (byte {err.start}). Re-download "
                          "ascii.tgz.") from None
    except OSError as err:
        raise LayoutError(f"{path}: cannot be read ({err.strerror}). To get it, "
                          f"{DOWNLOAD}.") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.startswith("#"):
            yield lineno, line.split(" ")


def _malformed(path: Path, lineno: int, fields: list[str], expected: str) -> LayoutError:
    return LayoutError(f"{path}:{lineno}: malformed line {' '.join(fields)[:80]!r}; expected "
                       f"{expected}. Fix or remove the line, or re-download ascii.tgz.")


def parse_forms(path: Path) -> dict[str, str]:
    """Map form id -> writer id from IAM's `forms.txt`."""
    forms: dict[str, str] = {}
    for lineno, fields in _rows(path):
        if len(fields) < 2 or fields[0].count("-") != 1 or not fields[1].isalnum():
            raise _malformed(path, lineno, fields, "'<form-id> <writer-id> ...' such as "
                             "'a01-000u 000 2 prt 7 5 52 36'")
        forms[fields[0]] = fields[1]
    if not forms:
        raise LayoutError(f"{path}: lists no forms. Re-download ascii.tgz.")
    return forms


def parse_lines(path: Path) -> dict[str, Line]:
    """Map line id -> Line from IAM's `lines.txt`; the transcription's `|` become spaces."""
    lines: dict[str, Line] = {}
    for lineno, fields in _rows(path):
        if len(fields) < 9 or fields[1] not in ("ok", "err") or fields[0].count("-") != 2:
            raise _malformed(path, lineno, fields, "'<line-id> ok|err <graylevel> <components> "
                             "<x> <y> <w> <h> <word>|<word>...' such as 'a01-000u-00 ok 154 19 "
                             "408 746 1661 89 A|MOVE|to|stop'")
        text = " ".join(fields[8:]).replace("|", " ")
        lines[fields[0]] = Line(fields[0], fields[1] == "ok", text)
    return lines


def safe_extract_tar(archive: Path, target: Path,
                     max_member_bytes: int = MAX_MEMBER_BYTES) -> Path:
    """Extract a .tgz into `target` with the zip rules: no absolute or `..` members, no
    links or devices, no member above the size limit; nothing is left on failure."""
    target = Path(target)
    if target.is_dir():
        return target
    try:
        tf = tarfile.open(archive, "r:*")
        members = tf.getmembers()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise LayoutError(f"{archive}: not a readable tar archive ({err}). Re-download "
                          "it.") from None
    with tf:
        for m in members:
            parts = Path(m.name).parts
            if m.name.startswith("/") or ".." in parts:
                raise LayoutError(f"{archive}: member {m.name!r} points outside the extraction "
                                  "folder. Refusing to extract; get the archive from IAM.")
            if not (m.isfile() or m.isdir()):
                raise LayoutError(f"{archive}: member {m.name!r} is a link or a device. "
                                  "Refusing to extract.")
            if m.size > max_member_bytes:
                raise LayoutError(f"{archive}: member {m.name!r} is {m.size:,} bytes, above the "
                                  f"{max_member_bytes:,}-byte limit. Refusing to extract.")
        with atomic.replaced(target, directory=True) as tmp:
            tf.extractall(tmp, members=members, filter="data")
    return target


def _part(folder: Path, name: str, archive: str, extract_to: Path) -> Path | None:
    """`folder/name`, extracted from `folder/archive` when only the archive is there."""
    if (folder / name).is_dir():
        return folder / name
    if (folder / archive).is_file():
        tag = zlib.crc32(str((folder / archive).resolve()).encode())
        out = safe_extract_tar(folder / archive, Path(extract_to) / f"{archive}-{tag:08x}")
        return out / name if (out / name).is_dir() else out
    return None


def is_root(folder: Path) -> bool:
    """Whether `folder` holds the official layout: `ascii/` or ascii.tgz, and `lines/` or
    lines.tgz."""
    return ((folder / "ascii").is_dir() or (folder / ASCII_ARCHIVE).is_file()) and \
        ((folder / "lines").is_dir() or (folder / LINES_ARCHIVE).is_file())


def roots_in(folder: Path) -> list[Path]:
    """The official layout at `folder`, one level below it, or one in each subfolder."""
    folder = Path(folder)
    if is_root(folder):
        return [folder]
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return [p for p in subfolders if is_root(p)]


def scan(root: Path, extract_to: Path) -> tuple[list[Record], list[str]]:
    """Every line image of the layout with its form, writer, transcription and segmentation
    result, plus the names it had to skip (an image missing from lines.txt or of a form
    missing from forms.txt)."""
    ascii_dir = _part(root, "ascii", ASCII_ARCHIVE, extract_to)
    lines_dir = _part(root, "lines", LINES_ARCHIVE, extract_to)
    for name in ("forms.txt", "lines.txt"):
        if not (ascii_dir / name).is_file():
            raise LayoutError(f"{root}: no ascii/{name}. To get it, {DOWNLOAD}.")
    forms = parse_forms(ascii_dir / "forms.txt")
    meta = parse_lines(ascii_dir / "lines.txt")
    records, skipped = [], []
    for path in sorted(lines_dir.rglob("*.png")):
        line = meta.get(path.stem)
        form = path.stem.rsplit("-", 1)[0]
        if line is None:
            skipped.append(f"{path.name} (not in lines.txt)")
        elif form not in forms:
            skipped.append(f"{path.name} (form {form} is not in forms.txt)")
        else:
            records.append(Record(path, path.stem, form, forms[form], line.text,
                                  line.segmentation_ok))
    if not records:
        raise LayoutError(f"{root}: no line images listed in lines.txt under {lines_dir}. To "
                          f"get them, {DOWNLOAD}.")
    return records, skipped
