"""Atomic writes: build under a temporary sibling name, rename into place when complete.

Every file or folder the project writes for users goes through `replaced`, so a crash or a
SIGKILL leaves at most a hidden `.NAME.*` temporary, never a half-written final path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cannot_write(final: Path, err: OSError) -> PermissionError:
    """`err`, met making `final` or its temporary, named by the folder that refused it (the
    deepest that exists) rather than by a temporary's name."""
    return PermissionError(f"{final}: cannot write in {existing_folder(final)} "
                           f"({err.strerror}). Choose a folder you may write in.")


def check_can_write(final: Path) -> None:
    """Refuse, before any work, a path `final` that this user cannot make: the deepest
    folder above it that exists takes no new file. Nothing is left behind."""
    try:
        tempfile.TemporaryFile(dir=existing_folder(final)).close()
    except PermissionError as err:
        raise cannot_write(final, err) from None


def existing_folder(final: Path) -> Path:
    """The deepest folder above `final` that exists: where making it first writes."""
    folder = final.parent
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
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Atomically replace `path` with `text`."""
    with replaced(path) as tmp:
        tmp.write_text(text)
