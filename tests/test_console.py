"""The quiet console: every line that Python prints reaches the terminal or file whole."""

from __future__ import annotations

import os
import subprocess
import sys

from iam_writers_tfds.console import VERBOSE_ENV
from tests.conftest import REPO

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


# a command that Ctrl-C stops where it works: the signal itself, not a raised exception
CTRL_C = """
import os, signal, sys
from pathlib import Path
from iam_writers import cli

def ctrl_c(args):
    if args.command == "train":  # as far as a run gets before its first epoch
        Path(args.out).mkdir()
        (Path(args.out) / "config.json").write_text("{}")
    os.kill(os.getpid(), signal.SIGINT)

signal.signal(signal.SIGINT, signal.default_int_handler)  # as a shell starts it (xdist: ignored)
for command in ("_enroll", "_train", "_identify"):
    setattr(cli, command, ctrl_c)
sys.exit(cli.main(sys.argv[1:]))
"""


def test_ctrl_c_is_one_line_that_says_what_was_kept(tmp_path, dummy_dir):
    """Ctrl-C printed the traceback of the thread pool it stopped. Now one line, exit
    status 130, and how to go on where something was kept."""
    def interrupted(*args):
        return subprocess.run([sys.executable, "-c", CTRL_C, *map(str, args)],
                              capture_output=True, text=True, timeout=120)

    gallery, run = tmp_path / "g", tmp_path / "run"
    said = {}
    for command, *args in (("identify", gallery, "a.png"),
                           ("enroll", gallery, "--writer", "w", "a.png"),
                           ("train", "--config", "top50", "--data-dir", dummy_dir, "--out", run)):
        proc = interrupted(command, *args)
        assert proc.returncode == 130 and not proc.stdout, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        said[command] = proc.stderr.removeprefix(f"iam-writers {command}: interrupted")
    assert said["identify"] == "\n"
    assert said["enroll"].startswith(". Each writer is enrolled whole or not at all "
                                     f"(`iam-writers gallery list {gallery}` tells which)")
    assert said["train"] == f". `iam-writers train --out {run} --resume` goes on from its " \
                            "last epoch\n"


# `enroll --layout`, each writer a quarter of a second slower: a bar shows after a second
SLOW_ENROL = """
import sys, time
from iam_writers import cli
from models.runtime import identify

enroll = identify.enroll
identify.enroll = lambda *args: time.sleep(0.25) or enroll(*args)
sys.exit(cli.main(sys.argv[1:]))
"""


def test_progress_bars_reach_a_terminal_and_stay_out_of_a_pipe(tmp_path, synth_layout):
    """The filter's pipe made descriptor 2 no terminal, so every progress bar (tqdm's
    disable=None) was off in a terminal too; Python's stderr now writes to the terminal."""
    import fcntl
    import pty
    import struct
    import termios

    def enroll(gallery, stderr):
        return subprocess.Popen([sys.executable, "-c", SLOW_ENROL, "enroll", gallery,
                                 "--layout", synth_layout, "--forms-per-writer", "1",
                                 "--descriptor", "hinge"], stdout=subprocess.DEVNULL,
                                stderr=stderr, env=os.environ | {VERBOSE_ENV: ""})

    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = enroll(tmp_path / "a", terminal)
    os.close(terminal)  # read as it comes: a terminal's buffer is small
    shown = b""
    while True:
        try:
            shown += os.read(main, 65536)
        except OSError:  # every writer of the terminal has closed it
            break
    assert proc.wait(timeout=300) == 0
    assert b"enrolling: 100%" in shown and b"10/10" in shown
    piped = enroll(tmp_path / "b", subprocess.PIPE)
    assert piped.wait(timeout=300) == 0 and b"enrolling" not in piped.stderr.read()


def test_a_command_started_with_stderr_closed_answers_on_stdout(tmp_path, synth_layout):
    """Started with descriptor 2 closed (`2>&-`), as some jobs are, a command died at once
    with exit status 1 and no word: Python's stderr is None there. Its notes now go to
    /dev/null, not into stdout, and no file opened later takes descriptor 2."""
    image, other = sorted(synth_layout.rglob("*.png"))[:2]

    def closed_stderr(*args):
        return subprocess.run(["bash", "-c", 'exec "$@" 2>&-', "-", sys.executable, "-m",
                               "iam_writers", *map(str, args)], stdout=subprocess.PIPE,
                              text=True, timeout=300)

    gallery = tmp_path / "g"
    enrolled = closed_stderr("enroll", gallery, "--writer", "w", image)
    assert enrolled.returncode == 0 and enrolled.stdout.startswith("enrolled 1 image(s) of w")
    listed = closed_stderr("gallery", "list", gallery)
    assert listed.returncode == 0 and listed.stdout.startswith("w\t1 image(s)")
    asked = closed_stderr("identify", gallery, other)  # its notes go to stderr
    assert asked.returncode == 0 and asked.stdout.startswith(f"{other}: w (hinge: w ")
    assert asked.stdout.count("\n") == 1 and "note:" not in asked.stdout


def test_matplotlib_without_a_home_it_may_write_says_nothing():
    """A service account, or a container run as another user, has a home folder it cannot
    write: every `train` and `evaluate` began with two lines of Matplotlib's warnings about
    it, though it plots the same from a temporary folder of its own."""
    script = ("import sys\nfrom iam_writers_tfds import console\n"
              "if sys.argv[1] == 'quiet':\n    console.quiet()\n"
              "import matplotlib.pyplot\nprint('plotted')\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    env["HOME"] = os.devnull  # a file: no folder can be made under it, even by root

    def run(mode: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, mode], capture_output=True,
                              text=True, env=env, cwd=REPO, timeout=120)

    loud, quiet = run("loud"), run("quiet")
    assert "Matplotlib created a temporary cache directory" in loud.stderr  # the case arises
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "plotted\n", "")
