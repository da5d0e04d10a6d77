"""Which real writers each open-set run has probed, kept in `docs/probed_writers.json`.

A figure measures only if no decision looked at its writers. A fold drawn by a new seed is
not new writers: with 16 test writers drawn from 56, six seeds probe nearly all of them.
So `open_set.py` and `pages_cli.py` say, before they spend time, how many of their test
writers earlier runs had probed (then their figures are development), and record their own
test writers once their figures are printed. Writers are matched by id, as IAM's ids name
the same person in every folder. Commit the file: it is the record that docs/results.md's
"which writers each decision saw" rests on.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEDGER = REPO / "docs" / "probed_writers.json"


def _runs(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text())["runs"]
    except (ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"{path}: not a ledger of probed writers ({err}); fix or move it, "
                         "or pass --ledger another path") from None


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def probed_before(path: Path, writers: list[str]) -> str:
    """One line: how many of `writers` the runs recorded in `path` had probed, and so
    whether this run's figures can be a measurement."""
    path = path.resolve()
    earlier = [run for run in _runs(path) if set(run["writers"]) & set(writers)]
    seen = sorted(set(writers) & {w for run in earlier for w in run["writers"]})
    if not seen:
        return (f"probed writers: none of these {len(writers)} was probed by a run recorded "
                f"in {_shown(path)}; a measurement, if no decision is taken on its figures")
    seeds = sorted({run["seed"] for run in earlier})
    return (f"probed writers: {len(seen)} of these {len(writers)} were probed by earlier runs "
            f"(seeds {', '.join(map(str, seeds))}; {_shown(path)}), so these figures are "
            "development, not a measurement")


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                              text=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD") or "unknown"
        return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except OSError:
        return "unknown"


def record(path: Path, benchmark: str, data: str, seed: int, writers: list[str],
           fold: str | None = None) -> None:
    """Append this run's probed writers to the ledger at `path` (written atomically);
    `fold` is "i/K" for a k-fold run."""
    from iam_writers_tfds import atomic

    runs = _runs(path) + [{
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": _commit(), "benchmark": benchmark, "data": data, "seed": seed,
        **({"fold": fold} if fold else {}), "writers": sorted(writers)}]
    # a run a line, so that each run is one line of the file's history
    atomic.write_text(path, '{"about": ' + json.dumps(__doc__.split("\n\n")[0]) + ',\n"runs": [\n'
                      + ",\n".join(json.dumps(run) for run in runs) + "\n]}\n")
