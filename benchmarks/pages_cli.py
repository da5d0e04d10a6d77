"""The page protocol through the command line, as a user runs it: one page scan enrolled per
writer, every other page scan of the test writers identified from its scan.

    python benchmarks/pages_cli.py MODEL FORMS_DIR LINES_DIR EXTRA_DIR --seed S
                                   [--folds K --fold I] [--gallery 80] [--out D]

MODEL is the float32 .tflite of `benchmarks/open_set.py --seed S [--folds K --fold I]
--out D` (D/export/), so that the writers split the same way: its test writers (of
LINES_DIR) and its distractors (of EXTRA_DIR) are each enrolled from one page scan of FORMS_DIR
(`iam-writers enroll`, one process a writer), then the test writers' other page scans are
identified in one `iam-writers identify --json` process. It prints top-1, the share named
at the threshold and answered "unknown", seconds a page, and the top candidates' LRs.
With `--as tiff` or `--as pdf`, each test writer's other pages are one query instead: one
multi-page TIFF, or one PDF of JPEG-compressed pages at 300 dpi (as scanners write them).
With `--lines`, the lines cut from those pages (LINES_DIR) are the queries, one each; with
`--jpeg Q`, each query (a page or a line) is first saved as a JPEG of quality Q, as a
camera or a scanner set to JPEG would give it; with `--turn DEG`, each query page is first
turned DEG degrees (anticlockwise) on a canvas that holds it whole, as a page laid askew on
the scanner's glass; with `--photo`, each query page is first photographed
(`synth.photograph`: on an A4 sheet, tilted up to 20 degrees, under uneven light; a JPEG of
quality 85 that declares no resolution), and with `--photo --heic` saved as an iPhone's HEIC
instead (`pages.heic`; pillow-heif of the test extra encodes it). With `--scale F`, each
query page (or its photo) is first shrunk to F of its size, a page scan's PNG declaring
300 F dpi: handwriting at a lower resolution; with `--photo --blur S`, each photo is blurred
by a Gaussian of S px (out of focus), and with `--photo --shake L` smeared along a line of L
px at a seeded angle (the phone moved). Pages the command refuses are counted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "iam_writers"]


def main() -> int:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import ledger
    from open_set import GALLERY, distractor_writers, enrolment, test_writers

    from iam_writers_tfds import kaggle_layout

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("model", "forms", "lines", "extra"):
        p.add_argument(name, type=Path)
    p.add_argument("--seed", type=int, required=True, help="the open_set.py run's seed")
    p.add_argument("--folds", type=int, help="the open_set.py run's --folds")
    p.add_argument("--fold", type=int, default=0, help="the open_set.py run's --fold")
    p.add_argument("--gallery", type=int, default=GALLERY, help="the open_set.py run's --gallery")
    p.add_argument("--as", dest="container", choices=("png", "tiff", "pdf"), default="png",
                   help="each page scan a query (png), or each writer's in one file")
    p.add_argument("--lines", dest="cut_lines", action="store_true",
                   help="ask the cut lines, not the pages")
    p.add_argument("--jpeg", type=int, metavar="Q", help="ask JPEGs of this quality (1-100)")
    p.add_argument("--turn", type=float, metavar="DEG", help="turn each query page this many "
                   "degrees first")
    p.add_argument("--photo", action="store_true", help="photograph each query page first")
    p.add_argument("--heic", action="store_true", help="with --photo: save each photo as HEIC")
    p.add_argument("--scale", type=float, metavar="F", help="shrink each query page, or its "
                   "photo, to F (0-1) of its size first")
    p.add_argument("--blur", type=float, metavar="S", help="with --photo: blur each photo by "
                   "a Gaussian of S px, as out of focus")
    p.add_argument("--shake", type=float, metavar="L", help="with --photo: smear each photo "
                   "along a line of L px at a seeded angle, as shaken")
    p.add_argument("--out", type=Path, help="keep the gallery here (default: a temp folder)")
    p.add_argument("--ledger", type=Path, default=ledger.LEDGER,
                   help="the record of the real writers earlier runs probed (benchmarks/ledger.py)")
    args = p.parse_args()
    if (args.cut_lines or args.jpeg or args.turn or args.photo) and args.container != "png":
        p.error("--lines, --jpeg, --turn and --photo ask each file alone: leave --as at png")
    if (args.turn or args.photo) and args.cut_lines:
        p.error("--turn and --photo take pages: leave out --lines")
    if args.photo and (args.turn or args.jpeg):
        p.error("--photo is a JPEG of a page askew already: leave out --turn and --jpeg")
    if args.heic and not args.photo:
        p.error("--heic saves each photo as HEIC: it needs --photo")
    if (args.blur or args.shake) and not args.photo:
        p.error("--blur and --shake take photos: they need --photo")
    if args.scale is not None and not (0 < args.scale <= 1):
        p.error("--scale takes a share of the size, above 0 and at most 1")
    if args.scale and (args.cut_lines or args.jpeg or args.turn or args.heic
                       or args.container != "png"):
        p.error("--scale shrinks page scans (PNG) or their photos (JPEG): leave out --lines, "
                "--jpeg, --turn, --heic and --as")

    def records(folder: Path):
        return kaggle_layout.scan(kaggle_layout.find_root(folder))[0]

    lines, extra = records(args.lines), records(args.extra)
    writers = sorted({r.writer_id for r in lines})
    _, unseen = test_writers(writers, args.seed, folds=args.folds, fold=args.fold)
    distractors, _ = distractor_writers(sorted({r.writer_id for r in extra}), unseen,
                                        args.gallery, args.seed)
    print(ledger.probed_before(args.ledger, unseen), flush=True)
    subjects = [r for r in lines if r.writer_id in set(unseen)]
    enrolled, probe = enrolment(subjects, args.seed)
    pages = {w: subjects[rows[0]].form_id for w, rows in enrolled.items()}
    pages |= {w: min(r.form_id for r in extra if r.writer_id == w) for w in distractors}
    queries = sorted({(subjects[i].form_id, subjects[i].writer_id) for i in probe})
    with tempfile.TemporaryDirectory() as tmp:
        gallery = (args.out or Path(tmp)) / "pages"
        for writer, form in sorted(pages.items()):
            subprocess.run([*CLI, "enroll", gallery, "--model", args.model, "--writer", writer,
                            args.forms / f"{form}.png"], check=True, capture_output=True)
        files, truth = ([args.forms / f"{f}.png" for f, _ in queries], dict(queries))
        if args.cut_lines:
            files = [subjects[i].path for i in probe]
            truth = {Path(f).stem: subjects[i].writer_id for f, i in zip(files, probe)}
        if args.container != "png":
            files, truth = _documents(queries, args.forms, Path(tmp), args.container)
        if args.turn:
            files = [_turned(f, Path(tmp), args.turn) for f in files]
        if args.jpeg:
            files = [_jpeg(f, Path(tmp), args.jpeg) for f in files]
        if args.photo:
            files = [_photographed(f, Path(tmp), args.seed * 1000 + k, args.heic, args.scale,
                                   args.blur, args.shake) for k, f in enumerate(files)]
        elif args.scale:
            files = [_scaled(f, Path(tmp), args.scale) for f in files]
        start = time.perf_counter()
        proc = subprocess.run([*CLI, "identify", gallery, *files, "--model", args.model,
                               "--json", "--skip-unreadable"], capture_output=True, text=True)
        if proc.returncode not in (0, 1):  # 1: some were refused, and said so
            raise SystemExit(f"identify failed: {proc.stderr.strip()}")
        seconds = (time.perf_counter() - start) / (len(files) if args.cut_lines else len(queries))
    results = json.loads(proc.stdout)
    refused = sum("error" in r for r in results)
    results = [r for r in results if "error" not in r]
    named = [truth[Path(r["images"][0]).stem] for r in results]
    n = max(len(results), 1)
    top1 = sum(r["top"][0]["writer"] == w for r, w in zip(results, named)) / n
    right = sum(r["writer"] == w for r, w in zip(results, named)) / n
    unknown = sum(r["writer"] is None for r in results) / n
    wrong = sum(r["writer"] not in (None, w) for r, w in zip(results, named)) / n
    lrs = sorted(r["top"][0]["log10_lr"]["fused"] for r in results if "log10_lr" in r["top"][0])
    asked = ("lines cut from page scans" if args.cut_lines else "page scans"
             if args.container == "png" else
             f"{args.container.upper()} files of {len(queries)} page scans")
    asked += f", turned {args.turn:g} degrees" if args.turn else ""
    asked += f", as JPEGs of quality {args.jpeg}" if args.jpeg else ""
    asked += ", photographed" + (" (HEIC)" if args.heic else "") if args.photo else ""
    asked += f", shrunk to {args.scale:g} of their size" if args.scale else ""
    asked += f", blurred by {args.blur:g} px" if args.blur else ""
    asked += f", shaken by {args.shake:g} px" if args.shake else ""
    if refused:
        print(f"{refused} of {refused + len(results)} {asked} refused (one line each)"
              + ("; of the others:" if results else ""), flush=True)
    if results:
        print(f"{len(results)} {asked} against {len(pages)} writers, each enrolled from one "
              f"page scan: top-1 {top1:.3f}, named at the threshold {right:.3f}, another writer "
              f"named {wrong:.3f}, answered unknown {unknown:.3f}; {seconds:.2f} "
              f"s a {'line' if args.cut_lines else 'page'} in one identify process (with its "
              "start)")
    if lrs:
        print(f"top candidate's fused log10 LR: lowest {lrs[0]:+.2f}, median "
              f"{lrs[len(lrs) // 2]:+.2f}, highest {lrs[-1]:+.2f}")
    ledger.record(args.ledger, "pages_cli", args.lines.name, args.seed, unseen,
                  f"{args.fold}/{args.folds}" if args.folds else None)
    return 0


def _jpeg(path: Path, folder: Path, quality: int) -> Path:
    """`path` saved as a JPEG of `quality` in `folder`, under the same stem."""
    import cv2

    out = folder / f"{path.stem}.jpg"
    assert cv2.imwrite(str(out), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE),
                       [cv2.IMWRITE_JPEG_QUALITY, quality])
    return out


def _photographed(path: Path, folder: Path, seed: int, heic: bool = False,
                  scale: float | None = None, blur: float | None = None,
                  shake: float | None = None) -> Path:
    """`path` photographed (`synth.photograph`, seeded), shrunk to `scale` of its size,
    blurred by a Gaussian of `blur` px and smeared along a line of `shake` px at a seeded
    angle (a box filter: the phone moved while the shutter was open) where given, saved in
    `folder` under the same stem as a JPEG of a phone's quality (`synth.PHOTO_QUALITY`), or
    as a HEIC (`pages.heic`)."""
    import cv2
    import numpy as np
    from pages import heic as as_heic

    from iam_writers_tfds import synth

    photo, _ = synth.photograph(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE),
                                np.random.default_rng(seed))
    if scale:
        photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if blur:
        photo = cv2.GaussianBlur(photo, (0, 0), blur)
    if shake:
        # a stream of its own: `seed`'s first draw is the sheet's tilt in `synth.photograph`
        turn = np.random.default_rng([seed, 1]).uniform(0, np.pi)
        line = np.zeros((2 * round(shake) + 1,) * 2, np.float32)
        centre, dx, dy = round(shake), np.cos(turn) * shake / 2, np.sin(turn) * shake / 2
        cv2.line(line, (round(centre - dx), round(centre - dy)),
                 (round(centre + dx), round(centre + dy)), 1.0, 1, cv2.LINE_AA)
        photo = cv2.filter2D(photo, -1, line / line.sum(), borderType=cv2.BORDER_REPLICATE)
    if heic:
        out = folder / f"{path.stem}.heic"
        out.write_bytes(as_heic(photo))
        return out
    out = folder / f"{path.stem}.jpg"
    assert cv2.imwrite(str(out), photo, [cv2.IMWRITE_JPEG_QUALITY, synth.PHOTO_QUALITY])
    return out


def _scaled(path: Path, folder: Path, scale: float) -> Path:
    """The page scan `path` (300 dpi) shrunk to `scale` of its size, saved in `folder` as a
    PNG under the same stem that declares its resolution, 300 `scale` dpi."""
    import cv2

    from iam_writers_tfds.images import SCAN_DPI, png_with_dpi

    small = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), None, fx=scale, fy=scale,
                       interpolation=cv2.INTER_AREA)
    out = folder / f"{path.stem}.png"
    out.write_bytes(png_with_dpi(cv2.imencode(".png", small)[1].tobytes(), SCAN_DPI * scale))
    return out


def _turned(path: Path, folder: Path, degrees: float) -> Path:
    """`path` turned `degrees` anticlockwise on a canvas that holds it whole, the paper's
    grey around it (`pages.straightened`), saved in `folder` as a PNG under the same stem."""
    import cv2

    from models.runtime import pages

    out = folder / f"{path.stem}.png"
    assert cv2.imwrite(str(out), pages.straightened(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE),
                                                    degrees))
    return out


def _documents(queries: list[tuple[str, str]], forms: Path, folder: Path, container: str
               ) -> tuple[list[Path], dict[str, str]]:
    """(one file a writer holding its query pages, as a TIFF or a PDF; {file stem: writer})."""
    import cv2
    from PIL import Image

    by_writer: dict[str, list[str]] = {}
    for form, writer in queries:
        by_writer.setdefault(writer, []).append(form)
    files = []
    for writer, writer_forms in sorted(by_writer.items()):
        pages = [cv2.imread(str(forms / f"{f}.png"), cv2.IMREAD_GRAYSCALE) for f in writer_forms]
        path = folder / f"{writer}.{'tif' if container == 'tiff' else 'pdf'}"
        if container == "tiff":
            assert cv2.imwritemulti(str(path), pages)
        else:  # Pillow writes gray pages as JPEG (quality 75), as most scanners do
            first, *rest = [Image.fromarray(p) for p in pages]
            first.save(path, "PDF", resolution=300, save_all=True, append_images=rest)
        files.append(path)
    return files, {w: w for w in by_writer}


if __name__ == "__main__":
    raise SystemExit(main())
