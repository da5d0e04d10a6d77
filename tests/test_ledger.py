"""The ledger of probed writers: a run learns which of its test writers earlier runs probed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import ledger


def test_a_run_is_told_which_of_its_writers_earlier_runs_probed(tmp_path: Path) -> None:
    path = tmp_path / "docs" / "probed.json"
    assert ledger.probed_before(path, ["001", "002"]).startswith(
        "probed writers: none of these 2 was probed")
    ledger.record(path, "open_set", "lines", 7, ["002", "001"])
    ledger.record(path, "pages_cli", "lines", 9, ["005"])
    line = ledger.probed_before(path, ["002", "003"])
    assert "1 of these 2 were probed by earlier runs (seeds 7;" in line
    assert "development, not a measurement" in line
    runs = json.loads(path.read_text())["runs"]
    assert [(r["benchmark"], r["seed"], r["writers"]) for r in runs] == [
        ("open_set", 7, ["001", "002"]), ("pages_cli", 9, ["005"])]
    assert all(r["commit"] and r["date"].endswith("UTC") for r in runs)
    assert len(path.read_text().splitlines()) == 3 + len(runs)  # a run a line


def test_a_ledger_that_is_not_one_stops_the_run_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "probed.json"
    path.write_text('{"runs": [')
    with pytest.raises(SystemExit, match=r"probed\.json: not a ledger of probed writers"):
        ledger.probed_before(path, ["001"])
    with pytest.raises(SystemExit):
        ledger.record(path, "open_set", "lines", 0, ["001"])
    assert path.read_text() == '{"runs": ['  # left as it was
