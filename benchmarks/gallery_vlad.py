"""Galleries enrolled with an export's VLAD codebook, by their number of writers: both views
as exported against the first view alone (one view, as exports were before the second).

    python benchmarks/gallery_vlad.py EXPORT [--writers 1000 10000] [--pages DIR]
                                      [--sources 40] [--seed 0]

A gallery enrolled with a model whose export fitted VLAD keeps every image's VLAD residual
sums beside its embedding and hinge counts, and each writer's exemplar SVM against the
export's cohort. Its writers here are mixes of two real enrolments (the features of
`--sources` page scans: the first PNGs of `--pages DIR`, by default pages of generated
lines) with their own noise, each enrolled as `enroll` enrols a writer
(its SVM solved and stored). For each size and variant it prints the enrolment rate, the
time to open the gallery for the fused score (in a new process, as `identify` does), to
identify a line (its features included), to check one new writer both ways
(`alike_either`, as `enroll` does) and every writer (`gallery alike`), and the bytes on
disk per writer; the first view alone, run in this process on the same writers, is the
baseline of the ratios.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import runtime  # noqa: E402
from models.runtime import identify  # noqa: E402
from models.runtime.descriptors import Descriptor, Vlad  # noqa: E402


def first_view(model: runtime.Model) -> runtime.Model:
    """The export as if it had fitted its first view alone: the codebook's first view, the
    cohort's rows cut to it. Its calibration is the two views' (only times are read)."""
    vlad = model.vlad
    one = Vlad(vlad.mean[:1], vlad.projection[:1], vlad.centres[:1], vlad.step, vlad.keypoint,
               (vlad.views[0],))
    local = identify.model_descriptor(model)
    emb, rows = model.cohort
    out = copy.copy(model)
    out.card = copy.deepcopy(model.card)
    out.card["fusion"]["descriptor"] = Descriptor(local.hinge, one).name
    out.__dict__.update(vlad=one, cohort=(emb, rows[:, :local.hinge.size + one.size]))
    return out


def sources(pages: Path | None, n: int, seed: int) -> list:
    """Pages to mix writers from: the first `n` PNGs of `pages`, or the generator's pages
    of eight lines (`synth.render_page`), one style each."""
    if pages is not None:
        found = sorted(pages.glob("*.png"))[:n]
        if len(found) < 2:
            raise SystemExit(f"{pages}: fewer than two PNG page scans; pass a folder of them")
        return found
    from iam_writers_tfds import synth

    rng = np.random.default_rng(seed)
    return [synth.render_page(synth.WriterStyle.sample(rng), rng, lines=8)[0]
            for _ in range(n)]


def build(path: Path, features: identify.Features, emb: np.ndarray, rows: np.ndarray,
          writers: int, seed: int) -> float:
    """Seconds to enrol `writers` writers into a new gallery at `path`, each a mix of two
    sources' features and noise, its exemplar SVM solved as `enroll` solves it."""
    gallery = identify.open_for(path, features)
    solve = identify.exemplar_of(features)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for k in range(writers):
        a, b = rng.choice(len(emb), 2, replace=False)
        w = rng.uniform(0.6, 0.9)
        e = runtime.unit(w * emb[a] + (1 - w) * emb[b] + rng.normal(0, 0.02, emb.shape[1]))
        r = (w * rows[a] + (1 - w) * rows[b]) * rng.uniform(0.9, 1.1, rows.shape[1])
        name = f"w{k:06d}"
        gallery.add(name, [name], [hashlib.sha256(name.encode()).hexdigest()], e[None],
                    r[None].astype(np.float32), exemplar=solve)
    seconds = time.perf_counter() - start
    gallery.close()
    return seconds


def timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


OPENS = 3  # new processes timed per gallery


def open_seconds(path: Path, model: runtime.Model) -> float:
    """Seconds to open the gallery at `path` for the fused score in a new process, as each
    `identify` does: the export's codebook and cohort read, the cohort's own SVMs solved,
    the gallery's rows read and encoded. The median of `OPENS`: on this project's virtual
    machine one process's open of 10,000 writers took 1.5 s, the next 11 s."""
    one = ["--one-view"] if len(model.vlad.views) == 1 else []
    seconds = [float(subprocess.run(
        [sys.executable, __file__, str(model.folder), "--time-open", str(path), *one],
        capture_output=True, text=True, check=True).stdout.split()[-1])
        for _ in range(OPENS)]
    return float(np.median(seconds))


def time_open(export: Path, path: Path, one_view: bool) -> float:
    model = runtime.Model(export)
    model = first_view(model) if one_view else model
    _, seconds = timed(lambda: identify.Identifier(runtime.Gallery.open(path), model,
                                                   input="line"))
    return seconds


def measure(model: runtime.Model, images: list, line: np.ndarray, writers: list[int],
            folder: Path, seed: int) -> list[dict]:
    """One variant's figures at each gallery size."""
    features = identify.features_for(model, None, input="page")
    emb, rows = features(images)
    out = []
    for n in writers:
        path = folder / f"{n}.sqlite"
        enrol = build(path, features, emb, rows, n, seed)
        os.sync()  # opened as a gallery enrolled earlier is: its pages written out
        opened = open_seconds(path, model)
        identifier = identify.Identifier(runtime.Gallery.open(path), model, input="line")
        identifier.rank([line])  # the descriptor's threads and the interpreter warmed
        _, ranked = timed(lambda i=identifier: i.rank([line]))
        _, either = timed(lambda i=identifier: i.alike_either(i.writers[-1]))
        _, every = timed(identifier.alike)
        out.append({"writers": n, "enrol": n / enrol, "open": opened, "line": ranked,
                    "either": either, "alike": every,
                    "kb": sum(f.stat().st_size for f in folder.glob(f"{n}.sqlite*")) / n / 1024})
        identifier.gallery.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export", type=Path, help="an export folder with a VLAD codebook")
    p.add_argument("--writers", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--pages", type=Path, help="mix writers from this folder's page scans "
                                              "(default: pages of generated lines)")
    p.add_argument("--sources", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-open", type=Path, help=argparse.SUPPRESS)  # `open_seconds`' child
    p.add_argument("--one-view", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.time_open:
        print(time_open(args.export, args.time_open, args.one_view))
        return 0
    model = runtime.Model(args.export)
    if model.vlad is None or model.cohort is None:
        print(f"{args.export}: its export fitted no VLAD codebook or cohort; export the run "
              "again", file=sys.stderr)
        return 2
    images = sources(args.pages, args.sources, args.seed)
    from iam_writers_tfds import synth

    rng = np.random.default_rng(args.seed + 1)
    line = synth.render_line(synth.WriterStyle.sample(rng), rng)
    folder = Path(tempfile.mkdtemp(prefix="gallery-vlad-"))
    try:
        results = {}
        for name, variant in (("one view", first_view(model)),
                              (f"{len(model.vlad.views)} views", model)):
            (folder / name).mkdir()
            results[name] = measure(variant, images, line, args.writers, folder / name,
                                    args.seed)
    finally:
        shutil.rmtree(folder)
    base, *_ = results.values()
    print(f"{'writers':>8} {'variant':>9} {'enrol/s':>8} {'open s':>7} {'line s':>7} "
          f"{'either s':>9} {'alike s':>8} {'KB/writer':>10}  ratios to one view")
    for name, rows in results.items():
        for row, one in zip(rows, base):
            ratios = ", ".join(f"{k} {row[k] / one[k]:.2f}x" for k in
                               ("open", "line", "either", "alike", "kb"))
            print(f"{row['writers']:>8,} {name:>9} {row['enrol']:>8.0f} {row['open']:>7.2f} "
                  f"{row['line']:>7.2f} {row['either']:>9.2f} {row['alike']:>8.1f} "
                  f"{row['kb']:>10.0f}  {ratios}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
