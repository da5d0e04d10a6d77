"""The quiet console: every line that Python prints reaches the terminal or file whole."""

from __future__ import annotations

import os
import subprocess
import sys

from iam_writers_tfds.console import VERBOSE_ENV

NOTE = "note: " + "x" * 300
# as `identify` writes a note to stderr and a result to stdout, many times over
SCRIPT = f"""
import sys
from iam_writers_tfds import console
console.quiet()
for _ in range(200):
    print({NOTE!r}, file=sys.stderr)
    print("result")
"""


def test_stdout_and_stderr_lines_reach_one_pipe_whole():
    """Unbuffered, as PYTHONUNBUFFERED=1 has it, `print` wrote a line's text and its newline
    apart, and the filter thread passed stderr on in chunks past a pipe's atomic size: most
    notes came out cut by a result line."""
    env = {k: v for k, v in os.environ.items() if k != VERBOSE_ENV} | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=env, check=True, timeout=60)
    lines = proc.stdout.decode().splitlines()
    assert sorted(set(lines)) == [NOTE, "result"]
    assert lines.count(NOTE) == lines.count("result") == 200


def test_a_command_writes_its_result_in_one_write_that_ends_a_line(monkeypatch):
    """Results of many lines (or JSON) go out in one write ending in a newline, so that a
    stdout flushed at each line's end never leaves a last line open for stderr to cut."""
    import io

    from iam_writers import cli

    class Writes(io.StringIO):
        def __init__(self):
            super().__init__()
            self.writes = []

        def write(self, text):
            self.writes.append(text)
            return super().write(text)

    for as_json in (False, True):
        out = Writes()
        monkeypatch.setattr(sys, "stdout", out)
        cli._show([{"writer": "a"}], as_json, "a.png: a\nb.png: b")
        assert len(out.writes) == 1 and out.writes[0].endswith("\n")
        assert out.writes[0].count("\n") == (2 if not as_json else 5)
