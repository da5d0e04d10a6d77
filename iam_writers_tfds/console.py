"""A quiet console: the native libraries' log lines kept off stderr, everything else kept.

TensorFlow, XLA, absl, oneDNN, the TFLite converter and LiteRT write their own log lines
straight to file descriptor 2 from C++ ("I0000 00:00:... port.cc:153] oneDNN custom
operations are on", "failed call to cuInit", "INFO: Created TensorFlow Lite XNNPACK
delegate for CPU."), whatever Python's logging says. `quiet()` routes descriptor 2 through a
pipe and a thread that drops those lines and passes every other byte on as it comes;
Python's own errors, warnings and progress bars go to the terminal as before, by a
`sys.stderr` of their own. `--verbose`, or
the environment variable in `VERBOSE_ENV`, leaves stderr untouched.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable
from typing import TypeVar

VERBOSE_ENV = "IAM_WRITERS_VERBOSE"
T = TypeVar("T")

# Whole lines the native libraries print; each is matched from the start of a line.
NOISE = re.compile(
    rb"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] "  # absl's C++ log format
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] "  # TensorFlow's older format
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|INFO: (Created TensorFlow Lite|Replacing \d+ node|Initialized TensorFlow Lite)"
    rb"|To enable the following instructions: "  # the second line of TF's CPU notice
    rb"|fully_quantize: \d"  # the TFLite converter's quantisation summary
)
# Every NOISE line begins with one of these bytes; a line that does not is passed on at once.
FIRST = frozenset(b"IWEF0123456789Tf")
LONGEST_PREFIX = 64  # bytes of a line after which it is known whether it is noise


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class _Filter(threading.Thread):
    """Reads what is written to descriptor 2 and writes all but NOISE lines to `out_fd`:
    a line that may be noise is held back until it is whole (or long enough to tell)."""

    def __init__(self, read_fd: int, out_fd: int):
        super().__init__(daemon=True, name="stderr-filter")
        self.read_fd, self.out_fd = read_fd, out_fd
        self.held = b""  # the start of a line that may still be noise
        self.passing = False  # the current line is known not to be noise

    def run(self) -> None:
        while chunk := os.read(self.read_fd, 65536):
            # a line a write: a pipe keeps writes of up to PIPE_BUF bytes whole, so stdout's
            # lines, which reach the same pipe or file, come between lines only
            for line in self.feed(chunk):
                os.write(self.out_fd, line)
        if self.held and not NOISE.match(self.held):
            os.write(self.out_fd, self.held)

    def feed(self, chunk: bytes) -> list[bytes]:
        """The parts of `chunk` (and of what was held) to write now, a line (or the start
        of one) each."""
        out = []
        for piece in re.split(rb"(?<=\n)", chunk):
            if self.passing:
                if piece:
                    out.append(piece)
            elif piece:
                self.held += piece
                whole = self.held.endswith(b"\n") or len(self.held) >= LONGEST_PREFIX
                if whole or self.held[0] not in FIRST:
                    if not NOISE.match(self.held):
                        out.append(self.held)
                        self.passing = not self.held.endswith(b"\n")
                    self.held = b""
            if piece.endswith(b"\n"):
                self.passing = False
        return out


_installed: list = []


def progress(items: Iterable[T], desc: str, unit: str, total: int | None = None,
             leave: bool = True) -> Iterable[T]:
    """`items` with a progress bar on stderr where it is a terminal, from the second on
    (quick work shows none), and none for one item."""
    from tqdm import tqdm

    total = len(items) if total is None else total
    return tqdm(items, desc=desc, unit=unit, total=total, leave=leave, delay=1,
                disable=None if total > 1 else True)


def whole_lines() -> None:
    """Write each line of stdout and stderr at once, when it ends. Unbuffered (as
    PYTHONUNBUFFERED=1 has it, often in containers), `print` writes a line's text and its
    newline apart, and where both streams reach one terminal or file, the other stream's
    lines land between the two. What the stream's encoding cannot write (a file name that
    is not UTF-8, which Python holds as lone surrogates; a writer's name outside a Latin-1
    terminal's) is escaped, `\\udcff`, rather than a traceback."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True, write_through=False,
                               errors="backslashreplace" if stream.errors == "strict"
                               else stream.errors)


def _no_config_dir(record: logging.LogRecord) -> bool:
    """Matplotlib's two warnings where the home folder cannot be written (a service account,
    a container run as another user): it makes a temporary one itself, and plots the same."""
    return not str(record.msg).startswith(("mkdir -p failed for path",
                                           "Matplotlib created a temporary cache directory"))


def quiet() -> None:
    """Filter descriptor 2 for the rest of the process (once), and quiet the Python-level
    loggers of TensorFlow, absl and TFDS to warnings, unless verbose. Either way, each line
    that Python prints goes out whole (`whole_lines`). A process started with descriptor 2
    closed (`2>&-`) gets /dev/null there: Python's stderr is None, whose notes `print` would
    put into stdout, and the next file opened (a gallery) would take descriptor 2 and the
    native libraries' log lines."""
    whole_lines()
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # the lowest free descriptor: 2
        return  # nothing shown, nothing to filter
    if verbose() or _installed:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("tensorflow", "absl", "tensorflow_datasets"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("matplotlib").addFilter(_no_config_dir)
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    original = os.dup(2)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = _Filter(read_fd, original)
    thread.start()
    _installed.append(thread)
    if sys.stderr is sys.__stderr__:  # not a stream a caller put in its place (pytest's)
        # Python's own writes go straight to the terminal: progress bars show only where
        # stderr is one (tqdm's disable=None), and descriptor 2 is now the filter's pipe
        sys.stderr = open(os.dup(original), "w", encoding=sys.stderr.encoding,
                          errors=sys.stderr.errors, buffering=1)

    def drain() -> None:  # let the thread pass on the last lines before the process ends
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end
        thread.join(timeout=2)

    atexit.register(drain)
