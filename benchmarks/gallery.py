"""The gallery database at 1k, 10k and 100k writers: enrolment, open, identify, file size.

    python benchmarks/gallery.py [--writers 1000 10000 100000] [--images 10] [--out DIR]
                                 [--layout DIR]

Synthetic features, `--images` per writer: unit embeddings of 128 dimensions (patch_embed's
size) and contour-hinge counts (136 bins). For each size it prints:
- enrolment throughput, one transaction per writer as `iam-writers enroll` makes them;
- time to open: `Gallery.open` and everything `identify` reads before the first query (the
  writers' aggregates, the hinge references);
- identify latency after open, fused score, for one line and for a page of 10 lines,
  features included (the hinge of real generated lines; the embedding is synthetic);
- bytes on disk per writer.
Up to 10k writers, the same in the format before the database (one .npz + .json rewritten
whole by every enrolment, centroids recomputed at every open) runs beside it as the
baseline, in this process. With `--layout DIR` (a Kaggle- or IAM-layout folder), it also
times bulk enrolment of its writers by the hinge, `iam-writers enroll G --layout DIR` in one
process, against one `iam-writers enroll G --writer W IMAGES` process per writer.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM, BINS = 128, 136
FUSION = {"weight": 0.5, "embedding": {"mean": 0.2, "std": 0.1},
          "hinge": {"mean": 0.9, "std": 0.02}}


def features(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    emb = rng.normal(size=(n, DIM)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), \
        rng.integers(0, 60, (n, BINS)).astype(np.float64)


def enrol(path: Path, writers: int, images: int, seed: int = 0) -> float:
    """Seconds to enrol `writers` writers of `images` synthetic images each."""
    from models.runtime.gallery import Gallery

    rng = np.random.default_rng(seed)
    g = Gallery.open(path, create=True, fingerprint="benchmark", descriptor="hinge-l10-b16")
    start = time.perf_counter()
    for w in range(writers):
        emb, hinge = features(rng, images)
        names = [f"w{w:06d}/{i}.png" for i in range(images)]
        g.add(f"w{w:06d}", names, [hashlib.sha256(n.encode()).hexdigest() for n in names],
              emb, hinge)
    seconds = time.perf_counter() - start
    g.close()
    return seconds


class Query:
    """A line and a page of generated handwriting, their hinge counts computed per query."""

    def __init__(self):
        from iam_writers_tfds import synth
        from models.runtime.descriptors import Hinge

        rng = np.random.default_rng(1)
        style = synth.WriterStyle.sample(rng)
        self.lines = [synth.render_line(style, rng) for _ in range(10)]
        self.hinge = Hinge()
        self.emb = features(rng, 10)[0]

    def line(self, identifier) -> np.ndarray:
        return identifier.score_matrix(self.emb[:1], self.hinge(self.lines[0])[None])

    def page(self, identifier) -> np.ndarray:
        counts = sum(self.hinge(line) for line in self.lines)
        emb = self.emb.mean(0)
        return identifier.score_matrix((emb / np.linalg.norm(emb))[None], counts[None],
                                       document=True)


class _Model:
    """What Identifier reads of a model: its fingerprint and its card's fusion."""

    fingerprint = "benchmark"
    card = {"fusion": {"descriptor": "hinge-l10-b16", "line": FUSION, "document": FUSION}}


def open_identifier(path: Path):
    from models.runtime import Gallery, Identifier

    return Identifier(Gallery.open(path), _Model())


def median_ms(fn, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def legacy(folder: Path, writers: int, images: int) -> dict:
    """The format before the database: enrolling one more writer rewrites the whole npz and
    json; opening loads and checksums them and recomputes every centroid and hinge sum."""
    rng = np.random.default_rng(0)
    emb, hinge = features(rng, writers * images)
    owners = np.repeat(np.arange(writers), images)
    npz = folder / "legacy.npz"

    def save():
        buf = io.BytesIO()
        np.savez(buf, owners=owners, embeddings=emb, hinge=hinge)
        npz.write_bytes(buf.getvalue())
        (folder / "legacy.json").write_text(hashlib.sha256(buf.getvalue()).hexdigest())

    def load():
        data = npz.read_bytes()
        assert hashlib.sha256(data).hexdigest() == (folder / "legacy.json").read_text()
        a = np.load(io.BytesIO(data))
        e, h, o = a["embeddings"], a["hinge"], a["owners"]
        centroids = np.stack([e[o == i].mean(0) for i in range(writers)])
        sums = np.stack([h[o == i].sum(0) for i in range(writers)])
        return centroids, sums

    return {"enrol_one_s": median_ms(save, 3) / 1000, "open_s": median_ms(load, 3) / 1000,
            "bytes_per_writer": npz.stat().st_size / writers}


def bulk(layout: Path, folder: Path) -> None:
    """One process for a layout's writers against one process per writer."""
    import subprocess

    from models.runtime.identify import layout_writers

    writers = layout_writers(layout).writers
    cli = [sys.executable, "-m", "iam_writers", "enroll"]
    start = time.perf_counter()
    subprocess.run([*cli, folder / "bulk", "--layout", layout, "--descriptor", "hinge"],
                   check=True, capture_output=True, cwd=REPO)
    one = time.perf_counter() - start
    start = time.perf_counter()
    for writer, images in writers.items():
        subprocess.run([*cli, folder / "each", "--writer", writer, *images, "--descriptor",
                        "hinge"], check=True, capture_output=True, cwd=REPO)
    each = time.perf_counter() - start
    n = sum(map(len, writers.values()))
    print(f"\nbulk enrolment of {len(writers)} writers ({n} images) of {layout}: one process "
          f"{one:.1f} s, one process per writer {each:.1f} s: {each / one:.1f}x faster")


def main() -> int:
    sys.path.insert(0, str(REPO))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writers", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--out", type=Path, help="keep the galleries here (default: a temp dir)")
    p.add_argument("--layout", type=Path, help="also time bulk enrolment of this folder")
    args = p.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="gallery-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    query = Query()
    print(f"{'writers':>8}{'format':>9}{'enrol img/s':>13}{'open s':>8}{'line ms':>9}"
          f"{'page ms':>9}{'KB/writer':>11}")
    try:
        for n in args.writers:
            path = folder / f"g{n}.sqlite"
            if not path.exists():
                seconds = enrol(path, n, args.images)
                rate = f"{n * args.images / seconds:>13,.0f}"
            else:
                rate = f"{'(reused)':>13}"
            start = time.perf_counter()
            identifier = open_identifier(path)
            opened = time.perf_counter() - start
            line = median_ms(lambda i=identifier: query.line(i))
            page = median_ms(lambda i=identifier: query.page(i))
            size = sum(f.stat().st_size for f in folder.glob(f"g{n}.sqlite*")) / n
            print(f"{n:>8,}{'sqlite':>9}{rate}{opened:>8.2f}{line:>9.1f}{page:>9.1f}"
                  f"{size / 1024:>11.1f}")
            if n <= 10000:
                old = legacy(folder, n, args.images)
                print(f"{n:>8,}{'npz':>9}{args.images / old['enrol_one_s']:>13,.0f}"
                      f"{old['open_s']:>8.2f}{'':>9}{'':>9}{old['bytes_per_writer'] / 1024:>11.1f}"
                      f"   open: sqlite {old['open_s'] / opened:.1f}x faster; one enrolment "
                      f"{old['enrol_one_s'] * 1000:.0f} ms rewriting the file")
        if args.layout:
            bulk(args.layout, folder)
    finally:
        if args.out is None:
            shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
