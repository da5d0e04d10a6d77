"""The README's offline walkthrough, run exactly as written, so the README cannot drift from
the code; and the console it shows holds the user's work, not the libraries' log lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from iam_writers_tfds.console import NOISE, VERBOSE_ENV
from tests.conftest import REPO

HEADING = "### Try it offline"


def walkthrough() -> str:
    """The first bash block after the walkthrough's heading in README.md."""
    text = (REPO / "README.md").read_text()
    assert HEADING in text, f"README.md has no {HEADING!r} section"
    block = re.search(r"```bash\n(.*?)```", text[text.index(HEADING):], re.S)
    return block[1]


def test_the_walkthrough_uses_every_task():
    commands = {line.split()[1] for line in walkthrough().splitlines() if line.strip()}
    assert commands >= {"build", "train", "evaluate", "export", "predict", "verify", "enroll",
                        "identify", "tune"}


def test_help_states_the_defaults_and_both_layouts():
    from iam_writers.cli import parser

    commands = parser()._subparsers._group_actions[0].choices
    train = commands["train"].format_help()
    assert "(default: 36)" in train and "(default: synthetic)" in train
    seed = " ".join(train[train.index("\n  --seed SEED"):].split())
    assert seed.startswith("--seed SEED the seed of every random choice") \
        and "calibration (default: 0)" in seed  # a zero is a default to state
    # every option and argument of every command says what it is, not only its default
    gallery = next(a for a in commands["gallery"]._actions if a.dest == "action").choices
    unexplained = [f"{name} {a.option_strings[0] if a.option_strings else a.dest}"
                   for name, command in [*commands.items(), *gallery.items()]
                   for a in command._actions
                   if not (a.help or "").replace("(default: %(default)s)", "").strip()]
    assert not unexplained, unexplained
    assert "(default: auto)" in commands["identify"].format_help()
    build = " ".join(commands["build"].format_help().split())
    assert "Kaggle layout" in build and "official IAM one" in build


@pytest.mark.slow
def test_the_offline_walkthrough_runs_as_written_with_a_quiet_console(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in (VERBOSE_ENV, "TF_CPP_MIN_LOG_LEVEL")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["bash", "-eu", "-o", "pipefail", "-c", walkthrough()], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    noise = [line for line in console.splitlines() if NOISE.match(line.encode())]
    assert not noise, noise[:5]
    assert "Traceback" not in console and "\x1b[A" not in console  # no tqdm cursor-ups in logs
    assert "Unknown size" not in console  # TFDS's download size, meaningless offline
    assert (tmp_path / "exports" / "syn" / "model_float32.tflite").is_file()
    # each identify printed one answer per line of the three writers' second forms
    answers = [line for line in proc.stdout.splitlines() if line.startswith("new/")]
    assert len(answers) == 2 * 3 * 4
    assert (tmp_path / "galleries" / "hinge.sqlite").is_file()
    assert "best trial 0" in proc.stdout
