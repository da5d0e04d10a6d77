"""Line finding on real page scans, against the lines cut from the same pages.

    python benchmarks/pages.py FORMS_DIR LINES_DIR [LINES_DIR ...] [--every 1] [--identify]
        [--orientation] [--photos [--heic N]]

FORMS_DIR holds page scans `<form-id>.png` (e.g. ../shared/data/iam_dev_forms); each
LINES_DIR is a Kaggle-layout folder of lines cut from those pages (iam_dev_lines,
iam_extra_writers). The cut lines give no coordinates, so each is located in its page by
template matching (at a quarter of the resolution, then refined); a cut line counts as found
when a line of `models.runtime.pages.find_lines` overlaps its box with IoU >= 0.5. The cut
folders hold only some lines of some pages, so this measures recall and box quality, and
the number of lines found beside the number cut; plus milliseconds per page, against
decoding the page's PNG in the same process.

With `--identify`, pages are also identified by the contour-hinge alone (no model, no
training): one page of every writer with two or more is enrolled (seeded), every writer with
one page is enrolled as a distractor, and each other page is identified twice, as a page
scan (its lines found by the runtime) and as the lines cut from it taken as one document.

With `--orientation`, each page is also laid askew (10 and -14 degrees, on a canvas that
holds it whole), turned a quarter turn both ways (and 12 degrees more) and half round (and
8 degrees more), and `auto` reads each as the runtime does (`pages.read_page`): how many it
refuses, reads as one line, or reads as a page with as many lines as upright; and the
upside-down rule by the ink alone (`ink_lean`) beside the rule (`lean`).

With `--photos`, each page is also photographed (`synth.photograph`, seeded by its place: on
an A4 sheet, as a phone's JPEG of quality 85 that declares no resolution), near (75% of the
frame's width, tilted up to 20 degrees, light falling off by 35%) and far (55%, 30 degrees,
50%), and near under a phone's shadow (`synth.shadowed`: 40% darker over a corner of the
sheet, its edge hard), and read as the runtime reads it (`Model.read`, `auto`): how many
sheets are found and taken for A4, and how many are read with the upright page's lines (as
many, each of the upright's boxes, moved onto the sheet, overlapping one with IoU >= 0.5);
and how many of the scans themselves are taken for a photo (none should be); and the near
photo with its bottom 30% cut off (the sheet cut by the photo's edge, no sheet found, read
as it is): how many are read, with as many handwritten lines as upright, or refused. With
`--heic N`, the first N pages' near photos are also read as an iPhone's HEIC (`heic`;
pillow-heif of the test extra encodes them): how many are read as their JPEG is (taken for
the same paper, with as many lines, each overlapping one of the JPEG's with IoU >= 0.5), and
the seconds to decode one, against decoding its JPEG in the same process (both in colour, as
a phone's are).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCALE = 4  # template matching at a quarter of the resolution, then refined at full size


def locate(page_ink: np.ndarray, line_ink: np.ndarray) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1) of a cut line in its page, both as ink masks (float32)."""
    import cv2

    def match(page, tmpl):
        score = cv2.matchTemplate(page, tmpl, cv2.TM_CCORR_NORMED)
        return np.unravel_index(int(np.argmax(score)), score.shape)

    small = lambda a: cv2.resize(a, None, fx=1 / SCALE, fy=1 / SCALE,  # noqa: E731
                                 interpolation=cv2.INTER_AREA)
    y, x = match(small(page_ink), small(line_ink))
    h, w = line_ink.shape
    y0, x0 = max(0, y * SCALE - 2 * SCALE), max(0, x * SCALE - 2 * SCALE)
    window = page_ink[y0:y0 + h + 4 * SCALE, x0:x0 + w + 4 * SCALE]
    dy, dx = match(window, line_ink) if window.shape[0] >= h and window.shape[1] >= w else (0, 0)
    return x0 + dx, y0 + dy, x0 + dx + w, y0 + dy + h


def box_iou(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1); the tests judge line finding
    by it too."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / max(area(a) + area(b) - inter, 1)


def heic(image: np.ndarray, exif: bytes | None = None) -> bytes:
    """A gray image as an iPhone's HEIC: in colour, HEVC at quality 80, a grid of 512-px
    tiles where it is larger, with `exif` (an EXIF's TIFF body) if given; the tests make
    theirs by it too. Encoded by pillow-heif's x265 (the test extra): the runtime's pi-heif
    only decodes."""
    import io

    import pillow_heif

    out = io.BytesIO()
    rgb = np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    pillow_heif.from_bytes("RGB", image.shape[::-1], rgb.tobytes()).save(
        out, quality=80, tile_size=512, exif=b"Exif\x00\x00" + exif if exif else None)
    return out.getvalue()


def main() -> int:
    sys.path.insert(0, str(REPO))
    from iam_writers_tfds import kaggle_layout
    from iam_writers_tfds.images import read_gray
    from models.runtime import pages

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("forms", type=Path)
    p.add_argument("lines", type=Path, nargs="+")
    p.add_argument("--every", type=int, default=1, help="every n-th page only (faster)")
    p.add_argument("--identify", action="store_true",
                   help="also identify pages by the hinge: page scans against cut lines")
    p.add_argument("--orientation", action="store_true",
                   help="also read every page turned a quarter and half a turn")
    p.add_argument("--photos", action="store_true", help="also read every page photographed")
    p.add_argument("--heic", type=int, default=0, metavar="N",
                   help="with --photos: the first N pages' near photos also as HEIC")
    args = p.parse_args()
    if args.heic and not args.photos:
        p.error("--heic needs --photos")
    cut: dict[str, list[Path]] = defaultdict(list)
    for folder in args.lines:
        for r in kaggle_layout.scan(kaggle_layout.find_root(folder) or folder)[0]:
            cut[r.form_id].append(r.path)
    forms = [f for f in sorted(cut) if (args.forms / f"{f}.png").is_file()][:: args.every]
    found, ious, n_found, n_printed, n_cut, seg_s, read_s = 0, [], 0, 0, 0, 0.0, 0.0
    for form in forms:
        start = time.perf_counter()
        page = read_gray(args.forms / f"{form}.png")
        read_s += time.perf_counter() - start
        start = time.perf_counter()
        found_lines = pages.find_lines(page)
        seg_s += time.perf_counter() - start
        lines = pages.handwritten(found_lines)
        page_ink = pages.ink_mask(page).astype(np.float32)
        n_found += len(lines)
        n_printed += pages.printed(found_lines)
        for path in cut[form]:
            truth = locate(page_ink, pages.ink_mask(read_gray(path)).astype(np.float32))
            best = max((box_iou(truth, line.box) for line in lines), default=0.0)
            ious.append(best)
            found += best >= 0.5
        n_cut += len(cut[form])
    print(f"{len(forms)} pages of {args.forms}, {n_cut} cut lines: {found / n_cut:.3f} found "
          f"(IoU >= 0.5), median IoU {np.median(ious):.3f}; {n_found} handwritten lines found "
          f"in all ({n_found / len(forms):.1f} a page), {n_printed} of machine print left out")
    print(f"line finding {seg_s / len(forms) * 1000:.0f} ms a page, "
          f"{seg_s / read_s:.1f}x decoding the page's PNG")
    if args.identify:
        identify_pages(args.forms, cut)
    if args.orientation:
        orientation([args.forms / f"{form}.png" for form in forms])
    if args.photos:
        photographed([args.forms / f"{form}.png" for form in forms], args.heic)
    return 0


def photographed(paths: list[Path], heics: int = 0) -> None:
    """How the runtime reads pages photographed, the first `heics` near ones as HEIC too
    (module doc)."""
    import cv2

    from iam_writers_tfds import synth
    from iam_writers_tfds.images import decode_gray, read_gray
    from models.runtime import Model, photos
    from models.runtime.pages import handwritten

    shots = {"near": {}, "far": {"fill": 0.55, "tilt_deg": 30.0, "light": 0.5}, "shade": {}}
    counts = {name: defaultdict(int) for name in (*shots, "cut")}
    seconds, scans = defaultdict(float), 0
    as_jpeg, decoding = 0, defaultdict(float)  # HEICs read as their JPEG; seconds decoding
    m = round(photos.INSET * photos.PAPERS["A4"][0] * 300)  # the A4 sheet's edge cut off
    for k, path in enumerate(paths):
        page = read_gray(path)
        scans += photos.find_sheet(page) is not None
        upright = Model.read(page, path.name, "auto").lines[0] or []
        for name, shot in shots.items():
            rng = np.random.default_rng(k)
            photo, (x0, y0) = synth.photograph(page, rng, **shot)
            if name == "shade":  # the near photo under a phone's shadow
                photo = synth.shadowed(photo, rng)
            jpeg = decode_gray(cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY,
                                                            synth.PHOTO_QUALITY])[1].tobytes())
            start = time.perf_counter()
            try:
                read = Model.read(jpeg, path.name, "auto")
            except ValueError:  # the runtime's refusals (an ImageError)
                counts[name]["refused"] += 1
                continue
            finally:
                seconds[name] += time.perf_counter() - start
            if name == "near" and k < heics:
                as_jpeg += _read_alike(read, photo, decoding)
            counts[name]["A4"] += read.paper == "A4"
            counts[name]["other paper"] += read.paper not in ("A4", None)
            found = read.lines[0] or []
            moved = [np.add(line.box, [x0 - m, y0 - m] * 2) for line in upright]
            kept = sum(max((box_iou(b, f.box) for f in found), default=0.0) >= 0.5 for b in moved)
            counts[name]["as upright"] += len(found) == len(upright) == kept
            if name == "near":
                _cut(jpeg, path.name, len(handwritten(upright)), counts["cut"])
    print(f"\nphotos of {len(paths)} pages (as a phone's JPEG); scans taken for a photo: {scans}")
    for name in shots:
        c = counts[name]
        print(f"  {name:<5} read with the upright's lines {c['as upright']:>4}, sheet taken "
              f"for A4 {c['A4']:>4}, for another paper {c['other paper']:>3}, refused "
              f"{c['refused']:>3}; {seconds[name] / len(paths):.2f} s a photo read")
    c = counts["cut"]
    print(f"  cut   (near, its bottom 30% cut off: no sheet found) read {c['read']:>4}, with as "
          f"many lines as upright {c['as upright']:>4}, refused {c['refused']:>3}")
    if heics:
        n = min(heics, len(paths))
        print(f"  as HEIC, the first {n} near: read as their JPEG {as_jpeg} / {n}; decoding "
              f"{decoding['HEIC'] / n:.2f} s a photo, against {decoding['JPEG'] / n:.2f} s "
              f"its JPEG in colour ({decoding['HEIC'] / decoding['JPEG']:.1f}x)")


def _cut(photo: np.ndarray, name: str, lines: int, counts: dict[str, int]) -> None:
    """Count how `photo` is read with its bottom 30% cut off, the sheet cut by the photo's
    edge as when taken too close: no sheet is found, and it is read as it is (`read`, and
    with as many handwritten lines as the upright page, `lines`) or refused."""
    from models.runtime import Model
    from models.runtime.pages import handwritten

    cut = np.ascontiguousarray(photo[: int(0.7 * photo.shape[0])])
    try:
        found = Model.read(cut, name, "auto").lines[0] or []
    except ValueError:
        counts["refused"] += 1
        return
    counts["read"] += 1
    counts["as upright"] += len(handwritten(found)) == lines


def _read_alike(read, photo: np.ndarray, decoding: dict[str, float]) -> bool:
    """Whether `photo` as a HEIC is read as its JPEG was (`read`): the same paper, as many
    lines, each of the JPEG's overlapping one with IoU >= 0.5. Its decoding is timed, and a
    JPEG's in colour, as a phone's are both (`heic` encodes the gray photo in colour)."""
    import cv2

    from iam_writers_tfds import synth
    from iam_writers_tfds.images import decode_gray
    from models.runtime import Model

    colour = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR),
                          [cv2.IMWRITE_JPEG_QUALITY, synth.PHOTO_QUALITY])[1].tobytes()
    data = heic(photo)
    for name, encoded in (("JPEG", colour), ("HEIC", data)):
        start = time.perf_counter()
        image = decode_gray(encoded)
        decoding[name] += time.perf_counter() - start
    again = Model.read(image, "heic", "auto")
    found, lines = again.lines[0] or [], read.lines[0] or []
    return again.paper == read.paper and len(found) == len(lines) and all(
        max((box_iou(line.box, f.box) for f in found), default=0.0) >= 0.5 for line in lines)


def orientation(paths: list[Path]) -> None:
    """How `auto` reads pages upright and turned (module doc)."""
    import cv2

    from iam_writers_tfds.images import read_gray
    from models.runtime import pages

    def read(image: np.ndarray) -> int | str:
        """The handwritten lines `auto` finds, "line" or "refused"."""
        try:
            lines = pages.read_page(image, "auto")[1]
        except pages.TurnedPageError:
            return "refused"
        return "line" if lines is None else len(pages.handwritten(lines))

    def turned(turn: int | None, degrees: float = 0.0):
        def it(page: np.ndarray) -> np.ndarray:
            image = page if turn is None else cv2.rotate(page, turn)
            return pages.straightened(image, degrees) if degrees else image
        return it

    quarter, half = cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180
    turns = {"upright": turned(None), "askew 10 degrees": turned(None, 10),
             "askew -14 degrees": turned(None, -14), "quarter turn clockwise": turned(quarter),
             "quarter turn anticlockwise": turned(cv2.ROTATE_90_COUNTERCLOCKWISE),
             "quarter turn and 12 degrees": turned(quarter, 12), "half round": turned(half),
             "half round and 8 degrees": turned(half, 8)}
    counts = {name: defaultdict(int) for name in turns}
    leans: dict[str, list[tuple[float, float]]] = {"upright": [], "half round": []}
    for path in paths:
        page = read_gray(path)
        upright = read(page)
        for name, turn in turns.items():
            image = turn(page)
            got = upright if name == "upright" else read(image)
            counts[name][got if isinstance(got, str) else
                         "page, as upright" if got == upright else "page, other lines"] += 1
            if name in leans:
                lines = pages.handwritten(pages.find_lines(image))
                leans[name].append((pages.ink_lean(lines), pages.lean(lines, image.shape[1])))
    kinds = ("refused", "line", "page, as upright", "page, other lines")
    print(f"\norientation, {len(paths)} pages read by `auto`: " + ", ".join(kinds))
    for name in turns:
        print(f"  {name:<28} " + "  ".join(f"{counts[name][k]:>4}" for k in kinds))
    for k, rule in enumerate(("ink alone (ink_lean)", "ink and line ends (lean)")):
        up, down = (np.array([v[k] for v in leans[n]]) < pages.UPSIDE_DOWN_BELOW
                    for n in ("upright", "half round"))
        least = min(v[k] for v in leans["upright"])
        print(f"  upside down by {rule:<25} upright refused {up.mean():.3f}, "
              f"half round refused {down.mean():.3f}; least upright lean {least:.2f}")


def identify_pages(forms_dir: Path, cut: dict[str, list[Path]], seed: int = 0) -> None:
    """Hinge identification of page scans against cut lines as documents (module doc)."""
    from iam_writers_tfds.images import read_gray
    from iam_writers_tfds.kaggle_layout import parse_forms
    from models.evaluate import topk_accuracy
    from models.runtime import descriptors, pages

    writer_of = {f: w for f, w in parse_forms(forms_dir / "forms.txt").items()
                 if f in cut and (forms_dir / f"{f}.png").is_file()}
    by_writer: dict[str, list[str]] = defaultdict(list)
    for form, writer in sorted(writer_of.items()):
        by_writer[writer].append(form)
    rng = np.random.default_rng(seed)
    enrolled = {w: f[rng.integers(len(f))] for w, f in sorted(by_writer.items())}
    probes = [f for w, fs in sorted(by_writer.items()) for f in fs if f != enrolled[w]]
    hinge, writers = descriptors.Hinge(), sorted(by_writer)

    def page_counts(form):
        parts, _ = pages.parts(read_gray(forms_dir / f"{form}.png"), "page")
        return np.sum([hinge(p) for p in parts], axis=0)

    def cut_counts(form):
        return np.sum([hinge(read_gray(p)) for p in cut[form]], axis=0)

    labels = np.array([writers.index(writer_of[f]) for f in probes])
    print(f"\n{len(probes)} pages of {len(set(labels))} writers identified against "
          f"{len(writers)} enrolled from one page each ({len(writers) - len(set(labels))} "
          "with one page only: distractors); contour-hinge, no model")
    for name, counts in (("page scan", page_counts), ("cut lines", cut_counts)):
        refs = descriptors.References(np.stack([counts(enrolled[w]) for w in writers]))
        sims = refs.similarity(np.stack([counts(f) for f in probes]))
        rejected = (sims.max(1) < descriptors.HINGE_DOCUMENT_THRESHOLD).mean()
        print(f"{name:<10} top-1 {topk_accuracy(sims, labels, 1):.3f}  top-5 "
              f"{topk_accuracy(sims, labels, 5):.3f}  genuine answered unknown {rejected:.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
