"""Shared fixtures: small generated layouts, and the development data when present."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DUMMY = REPO / "iam_writers_tfds" / "dummy_data"
DEV_LINES = REPO.parent / "shared" / "data" / "iam_dev_lines"


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """A writable copy of dummy_data: 12 writers x 3 forms x 1 line, Kaggle layout."""
    dest = tmp_path / "layout"
    shutil.copytree(DUMMY, dest)
    return dest


@pytest.fixture(scope="session")
def synth_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated layout of 10 writers x 4 forms x 5 lines (generated once per session)."""
    from iam_writers_tfds import synth

    out = tmp_path_factory.mktemp("synth") / "layout"
    return synth.generate(out, synth.SynthConfig(writers=10, forms_per_writer=4, lines_per_form=5))


@pytest.fixture
def dev_lines() -> Path:
    if not (DEV_LINES / "forms_for_parsing.txt").is_file():
        pytest.skip(f"development data not present at {DEV_LINES}")
    return DEV_LINES
