"""Atomic writes: build under a temporary sibling name, rename into place when complete.

Every file or folder the project writes for users goes through `replaced`, so a crash or a
SIGKILL leaves at most a hidden `.NAME.*` temporary, never a half-written final path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, a user's quota reached


class NoSpaceError(OSError):
    """The disk filled while a file was written; nothing of it was kept."""


def no_space(final: Path, err: OSError | str) -> NoSpaceError:
    why = err.strerror if isinstance(err, OSError) else err
    return NoSpaceError(f"{final}: the disk of {_written_first(final, False)} is full "
                        f"({why}); nothing was written. Free space there, or choose another "
                        "folder.")


def cannot_write(final: Path, err: OSError, directory: bool = False) -> PermissionError:
    """`err`, met making `final` or its temporary, named by the folder that refused it
    rather than by a temporary's name."""
    return PermissionError(f"{final}: cannot write in {_written_first(final, directory)} "
                           f"({err.strerror}). Choose a folder you may write in.")


def check_can_write(final: Path, directory: bool = False) -> None:
    """Refuse, before any work, a path `final` that this user cannot make (a `directory`:
    write into, where it exists): the folder where writing it begins takes no new file.
    Nothing is left behind."""
    try:
        tempfile.TemporaryFile(dir=_written_first(final, directory)).close()
    except PermissionError as err:
        raise cannot_write(final, err, directory) from None


def _written_first(final: Path, directory: bool) -> Path:
    """Where making `final` first writes: in it, for an existing `directory`; else in the
    deepest folder above it that exists."""
    folder = final if directory and final.is_dir() else final.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


@contextlib.contextmanager
def replaced(final: Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it to `final` when the block succeeds
    (a file replaces an old one; a folder must not exist yet), delete it when it fails."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=final.suffix,
                                        dir=final.parent)
            os.close(fd)
            tmp = Path(name)
    except PermissionError as err:
        raise cannot_write(final, err) from None
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod((0o777 if directory else 0o666) & ~umask)  # mkstemp/mkdtemp make them private
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as err:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            raise no_space(final, err) from None
        raise


def write_text(path: Path, text: str) -> None:
    """Atomically replace `path` with `text`, in UTF-8: a file name that is not (held by
    Python as lone surrogates) is written with its bytes escaped, `\\udcff`."""
    with replaced(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
