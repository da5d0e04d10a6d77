"""Pages in: finding the text lines of a page scan (NumPy and OpenCV, no training).

A page laid askew on the scanner (2 to 15 degrees) is first turned level (`read_page`).
Its lines are then found at the angle within 5 degrees that makes its horizontal ink
profile sharpest; the profile is smoothed at the scale of the page's own line spacing (over
the rows its text spans), and each valley between two text
lines becomes a cut. Ink is assigned whole connected component by component to the line
holding its centre, so an ascender that touches the line above stays with its own word.
Ruled lines are taken out first, and lines of machine print are told by their letters'
twins (type repeats its glyphs). Made for IAM's 300-dpi forms, grey or binarised
(docs/results.md, pages).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import cv2
import numpy as np

from iam_writers_tfds.images import ImageError
from models.config import INPUTS, PAGE_MIN_HEIGHT

MAX_SKEW_DEG = 5.0  # a page's lines are found at its own skew within this of level
# a page askew by STRAIGHTEN_FROM_DEG to MAX_STRAIGHTEN_DEG is turned level first: at 4-15
# degrees the lines found at the page's own skew were misread or refused, and IAM's 349
# scans all lie within 1.5 degrees of level, so they are read as they are
# (docs/results.md, pages askew)
STRAIGHTEN_FROM_DEG = 2.0
MAX_STRAIGHTEN_DEG = 15.0
TEXT_ROW_SHARE = 0.02  # of the fullest row's ink: a row the text spans, not a speck's
MIN_LINE_INK = 0.15  # a band with less ink than this share of the median line's is noise
# a page's row profile is sharper than its column profile: on IAM's pages at least 1.7
# times upright or skewed 6 degrees, at most 0.6 times turned a quarter turn; an upright
# image of one or two lines down to 0.97 (docs/results.md, pages turned)
TURNED_BELOW = 0.7
# turned a quarter turn, an image this many times wider than tall would hold some 30 lines
# across its width; an image of two or three lines of a large upright hand can have a column
# profile as sharp as its rows (1 of IAM's 50 crops 400 px tall or more, at 0.62), so it
# is never taken for turned (docs/results.md, pages turned)
WIDE = 2.0
# a page leans (`lean`) below this when upside down: none of IAM's 349 upright pages, 98% of
# them turned half round (by the ink alone, 88%; docs/results.md, pages turned)
UPSIDE_DOWN_BELOW = -0.3
EDGE_WEIGHT = 0.25  # the edges' share of the lean; more refuses a few short upright pages
EDGE_SLACK = 0.005  # of the page's width, added to both edges' spreads (a few pixels' jitter)
# ink running straight across this share of the page's width is a ruled line, not writing
RULE_LENGTH = 1 / 8
RULE_THICKNESS = 8  # px: how far a stroke touching a rule is followed through it and its band
# type repeats its glyphs, a hand never quite does: a line is machine print when this share
# of its letter-sized shapes have a twin (IAM's 3,089 real lines at most 0.40; typed lines
# of ten letters or more, 8.6 to 14 pt, 99% above 0.5; docs/results.md, printed text)
PRINT_SHARE = 0.45
PRINT_MIN_SHAPES = 10  # fewer letters than this are never judged print
LETTER_MIN_PX = 8  # shorter components (specks, dots, commas at 300 dpi) are not letters
TWIN_NEAR = 0.99  # of each of two shapes' ink within a pixel of the other's: twins
NEIGHBOURS = np.ones((3, 3), np.uint8)
EDGE_MIN = 200  # ink edge pixels below which `edge_blur` does not judge (a speck, a dot)
# `edge_blur` judges the edges facing each of EDGE_WAYS ways (22.5 degrees apart) alone, a
# shaken photo's smear spreading only some (docs/results.md, photos shaken); a way that fewer
# than EDGE_WAY_SHARE of the edge pixels face is not judged (too few to tell)
EDGE_WAYS = 8
EDGE_WAY_SHARE = 0.05
# its ink: darker than the paper round it (the lightest in a square PAPER_REACH px wide, at
# a quarter of the size) by EDGE_INK of the page's contrast; a grey, grainy region (a line
# cut from darker paper) is then its own paper, whose grain made edges that read as blurred
EDGE_INK = 0.4
PAPER_REACH = 28


@dataclasses.dataclass(frozen=True)
class Line:
    """A text line of a page: its image (the page's pixels, other lines' ink whitened), its
    box (x0, y0, x1, y1) in the page's pixels (of the page turned level where it was laid
    askew, `read_page`; before the small deskewing of line finding), and whether it is machine
    print (a form's header, the typed text a writer copied) rather than handwriting."""

    image: np.ndarray
    box: tuple[int, int, int, int]
    printed: bool = False


def ink_mask(page: np.ndarray) -> np.ndarray:
    """Ink pixels (Otsu's threshold) of a grey page, dark ink on light paper."""
    _, ink = cv2.threshold(page, 0, 1, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    return ink


def edge_blur(image: np.ndarray) -> float:
    """How far the ink's edges are spread, in pixels of `image`, the way they are spread
    most: the Gaussian sigma of a step from paper to ink as steep as the steepest tenth of
    the edges facing each of EDGE_WAYS ways, the least steep way's (Sobel, on the paper's
    side of the ink: a stroke one pixel wide has paper on both sides). A photo shaken smears
    the ink one way only, and its other edges stay steep. 0.8 for a scan (a step from one
    pixel to the next), about 1.0 for a phone's photo in focus read at 300 dpi, 2.4 for one
    out of focus by a Gaussian of 2 px, 2.2 for one shaken along 5 px and 3.4 along 9; 0
    where fewer than EDGE_MIN edge pixels cannot tell."""
    contrast = _contrast(image)
    ink = (_paper_round(image).astype(np.int16) - image > EDGE_INK * contrast).astype(np.uint8)
    edge = cv2.dilate(ink, NEIGHBOURS) > ink
    edge[[0, -1]] = edge[:, [0, -1]] = False  # every edge pixel has its eight neighbours
    at = np.flatnonzero(edge)
    if len(at) < EDGE_MIN:
        return 0.0
    flat, w = image.ravel().astype(np.int32), image.shape[1]

    def sobel(a: int, b: int) -> np.ndarray:  # along the steps a, summed across steps b
        return (flat[at + a - b] + 2 * flat[at + a] + flat[at + a + b]
                - flat[at - a - b] - 2 * flat[at - a] - flat[at - a + b])

    gx, gy = sobel(1, w), sobel(w, 1)
    slope = np.hypot(gx, gy) / 8  # Sobel's weights sum to 8 on a steady slope
    way = (np.arctan2(gy, gx) % np.pi / np.pi * EDGE_WAYS + 0.5).astype(int) % EDGE_WAYS
    counts = np.bincount(way, minlength=EDGE_WAYS)
    steep = min(np.percentile(slope[way == k], 90)
                for k in np.flatnonzero(counts >= EDGE_WAY_SHARE * len(at)))
    return contrast / (math.sqrt(2 * math.pi) * max(float(steep), 1e-3))


def _contrast(image: np.ndarray) -> int:
    """Gray levels from the paper (the median of what Otsu's threshold leaves light) to
    the ink (the darkest tenth of what it takes for ink), on every 4th pixel."""
    ink = ink_mask(image[::2, ::2])
    every, inked = (cv2.calcHist([image[::2, ::2]], [0], mask, [256], [0, 256]).ravel().cumsum()
                    for mask in (None, ink))
    paper = every - inked
    return int(np.searchsorted(paper, paper[-1] / 2) - np.searchsorted(inked, inked[-1] / 10))


def _paper_round(image: np.ndarray) -> np.ndarray:
    """Each pixel's paper level: the lightest in a square PAPER_REACH px wide round it,
    taken at a quarter of the size (the paper's grain averaged away) and brought back to
    `image`'s."""
    h, w = image.shape
    small = cv2.resize(image, (max(w // 4, 1), max(h // 4, 1)), interpolation=cv2.INTER_AREA)
    light = cv2.dilate(small, np.ones((PAPER_REACH // 4,) * 2, np.uint8))
    return cv2.resize(light, image.shape[::-1], interpolation=cv2.INTER_LINEAR)


def turned(page: np.ndarray) -> bool:
    """Whether a page's text lines do not run across the image (scanned a quarter turn
    round, or far askew): text lines make the ink's row profile sharper (its squared
    coefficient of variation, at the best angle within MAX_SKEW_DEG) than its column
    profile. Never for an image WIDE times wider than tall. Measured at a quarter of the
    size, in about 15 ms."""
    if page.shape[1] >= WIDE * page.shape[0]:
        return False
    small = cv2.resize(page, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    ink = ink_mask(small).astype(np.float32)
    return _sharpness(ink) < TURNED_BELOW * _sharpness(np.ascontiguousarray(ink.T))


def _sharpness(ink: np.ndarray) -> float:
    """The squared coefficient of variation of the ink's row profile, at the angle within
    MAX_SKEW_DEG that makes it largest."""
    return max(_peaked(profile) for _, profile in _row_profiles(ink, _angles(1.0)))


def _angles(step: float, limit: float = MAX_SKEW_DEG, around: float = 0.0) -> np.ndarray:
    """The angles `step` degrees apart within `limit` of `around`."""
    return around + np.arange(-limit, limit + 1e-9, step)


def _row_profiles(ink: np.ndarray, angles: np.ndarray) -> Iterator[tuple[float, np.ndarray]]:
    """(angle, row profile of the ink rotated by it) for each of `angles`."""
    h, w = ink.shape
    for angle in angles:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        yield float(angle), cv2.warpAffine(ink, m, (w, h)).sum(axis=1)


def _sharpest(ink: np.ndarray, angles: np.ndarray) -> float:
    """Of `angles`, the one whose rotation gives the ink's row profile the most variance."""
    return max(_row_profiles(ink, angles), key=lambda ap: float(np.var(ap[1])))[0]


def ink_lean(lines: list[Line]) -> float:
    """The log of the ink above the text lines' core bands (rows with at least half a line's
    peak ink) over the ink below them: Latin script has more ascenders, capitals and i-dots
    than descenders, so an upright page leans up and one turned half round down."""
    above = below = 0.0
    for line in lines:
        profile = ink_mask(line.image).sum(axis=1, dtype=np.float64)
        core = np.flatnonzero(profile >= 0.5 * profile.max())
        if len(core):
            above += profile[:core[0]].sum()
            below += profile[core[-1] + 1:].sum()
    return float(np.log((above + 1) / (below + 1)))


def edge_lean(lines: list[Line], width: int) -> float:
    """The log of the spread of the lines' right ends over that of their left ends (median
    absolute deviations): handwriting starts each line at the left margin and ends it where
    the words run out, so an upright page leans right-ragged and one turned half round
    left-ragged."""
    def spread(x: list[int]) -> float:
        return float(np.median(np.abs(np.array(x) - np.median(x)))) + EDGE_SLACK * width
    return float(np.log(spread([line.box[2] for line in lines])
                        / spread([line.box[0] for line in lines])))


def lean(lines: list[Line], width: int) -> float:
    """How upright a page's lines look: `ink_lean` plus EDGE_WEIGHT times `edge_lean`;
    negative for a page turned half round, which leans exactly the other way."""
    return ink_lean(lines) + EDGE_WEIGHT * edge_lean(lines, width)


def skew_angle(ink: np.ndarray) -> float:
    """The angle in degrees (within +-MAX_SKEW_DEG) whose rotation gives the ink's row
    profile the most variance: text lines then lie horizontal."""
    small = cv2.resize(ink.astype(np.float32), None, fx=0.25, fy=0.25,
                       interpolation=cv2.INTER_AREA)
    return _sharpest(small, _angles(0.5))


def level_angle(page: np.ndarray) -> float:
    """The angle in degrees (within +-MAX_STRAIGHTEN_DEG, to half a degree) that levels a
    grey page's text lines, as `skew_angle` finds it; where they run down the page (turned
    a quarter turn, and askew), the angle that stands them upright, so that `turned` tells.
    Whole degrees at an eighth of the size, then half degrees around the best at a quarter
    (about 30 ms)."""
    ink = ink_mask(page).astype(np.float32)
    if not ink.any():
        return 0.0
    eighth, quarter = (cv2.resize(ink, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
                       for f in (0.125, 0.25))
    wide = _angles(1.0, MAX_STRAIGHTEN_DEG)

    def fine(around: float) -> np.ndarray:
        angles = _angles(0.5, 1.0, around)
        return angles[np.abs(angles) <= MAX_STRAIGHTEN_DEG]

    rows = max(_row_profiles(eighth, wide), key=lambda ap: _peaked(ap[1]))
    columns = max(_row_profiles(np.ascontiguousarray(eighth.T), wide),
                  key=lambda ap: _peaked(ap[1]))
    if _peaked(columns[1]) > _peaked(rows[1]):  # the transposed page turned by a: turned by -a
        return -_sharpest(np.ascontiguousarray(quarter.T), fine(columns[0]))
    return _sharpest(quarter, fine(rows[0]))


def _peaked(profile: np.ndarray) -> float:
    """The squared coefficient of variation of a profile: its sharpness, whatever its
    length."""
    return float(np.var(profile) / max(profile.mean(), 1e-12) ** 2)


def straightened(page: np.ndarray, angle: float) -> np.ndarray:
    """A grey page turned by `angle` degrees (anticlockwise) on a canvas that holds it whole,
    the paper's grey around it."""
    h, w = page.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    size = (round(h * sin + w * cos), round(h * cos + w * sin))
    m[:, 2] += (size[0] - w) / 2, (size[1] - h) / 2
    return cv2.warpAffine(page, m, size, flags=cv2.INTER_LINEAR,
                          borderValue=int(np.median(page[::4, ::4])))


def line_spacing(profile: np.ndarray) -> float:
    """The distance between text lines: the first peak of the row profile's
    autocorrelation past its central lobe (IAM forms: about 150-250 px), over the rows the
    text spans (from the first to the last with TEXT_ROW_SHARE of the fullest row's ink):
    the blank paper under a short note made it twice the spacing, and its lines were
    merged (docs/results.md, pages askew and short notes)."""
    spanned = np.flatnonzero(profile >= TEXT_ROW_SHARE * profile.max())
    if len(spanned):
        profile = profile[spanned[0]:spanned[-1] + 1]
    p = profile - profile.mean()
    ac = np.correlate(p, p, mode="full")[len(p) - 1:]
    ac /= max(ac[0], 1e-12)
    below = np.flatnonzero(ac < 0)
    if not len(below):
        return float(len(profile))
    rest = ac[below[0]:]
    peaks = np.flatnonzero((rest[1:-1] > 0) & (rest[1:-1] >= rest[:-2]) &
                           (rest[1:-1] >= rest[2:])) + 1
    lag = below[0] + (peaks[0] if len(peaks) else int(np.argmax(rest)))
    return float(max(lag, 20))


def find_lines(page: np.ndarray) -> list[Line]:
    """The text lines of a grey page, top to bottom, lines of machine print flagged
    (`print_share`); ruled lines are left out."""
    ink = ink_mask(page)
    if not ink.any():
        return []
    angle = skew_angle(ink)
    h, w = ink.shape
    rotate = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    straight = cv2.warpAffine(ink, rotate, (w, h), flags=cv2.INTER_NEAREST)
    rules = _rules(straight)
    if rules.any():
        straight &= 1 - rules
        # turned back, dilated a pixel: a turned rule's ragged edges and the pixels a
        # nearest-neighbour turn misses would stay as specks across the page otherwise
        back = cv2.warpAffine(rules, rotate, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
        ink &= 1 - cv2.dilate(back, np.ones((3, 3), np.uint8))
    profile = straight.sum(axis=1).astype(np.float64)
    spacing = line_spacing(profile)
    smooth = cv2.GaussianBlur(profile[:, None], (1, 0), sigmaX=0, sigmaY=spacing / 6)[:, 0]
    cuts = np.union1d(_valleys(smooth, spacing), _gaps(profile, spacing))
    # each component goes to the band holding its centre (in the deskewed frame)
    n, labels, stats, centres = cv2.connectedComponentsWithStats(ink, connectivity=8)
    stats, xy = stats[1:], np.c_[centres[1:], np.ones(n - 1)] @ rotate.T
    band = np.searchsorted(cuts, xy[:, 1])
    masses = np.bincount(band, weights=stats[:, cv2.CC_STAT_AREA], minlength=len(cuts) + 1)
    if not masses.any():
        return []  # its ink was all ruled lines
    kept = np.flatnonzero(masses >= MIN_LINE_INK * np.median(masses[masses > 0]))
    owner = np.concatenate([[-1], np.where(np.isin(band, kept), band, -1)])[labels]
    paper = int(np.median(page[::4, ::4]))
    lines = []
    for b in kept:
        members = np.flatnonzero(band == b)
        s = stats[members]
        is_print = print_share(labels, members + 1, s) >= PRINT_SHARE
        x0, y0 = s[:, cv2.CC_STAT_LEFT].min(), s[:, cv2.CC_STAT_TOP].min()
        x1 = (s[:, cv2.CC_STAT_LEFT] + s[:, cv2.CC_STAT_WIDTH]).max()
        y1 = (s[:, cv2.CC_STAT_TOP] + s[:, cv2.CC_STAT_HEIGHT]).max()
        crop = page[y0:y1, x0:x1].copy()
        crop[owner[y0:y1, x0:x1] != b] = paper
        lines.append(Line(crop, (int(x0), int(y0), int(x1), int(y1)), bool(is_print)))
    return lines


def handwritten(lines: list[Line]) -> list[Line]:
    """The lines that are not machine print."""
    return [line for line in lines if not line.printed]


def printed(lines: list[Line] | None) -> int:
    """How many of a page's lines are machine print, left out (0 for an image read as a
    line)."""
    return sum(line.printed for line in lines or [])


def _gaps(profile: np.ndarray, spacing: float) -> np.ndarray:
    """The middle rows of the runs of blank rows at least half a line spacing long: what
    lies above and below one is never the same text line, even where the smoothed profile
    shows no valley between them (a short last line, a field under a ruled line)."""
    blank = np.r_[False, profile == 0, False]
    edges = np.flatnonzero(np.diff(blank.astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]
    long = ends - starts >= spacing / 2
    return ((starts[long] + ends[long]) / 2).astype(np.float64)


def _rules(straight: np.ndarray) -> np.ndarray:
    """The ink (0/1, in the deskewed frame) of ruled lines: runs along one row across
    RULE_LENGTH of the page, less where a stroke touches or crosses them (ink just above or
    below), so that letters written on a rule keep their strokes whole."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (int(straight.shape[1] * RULE_LENGTH), 1))
    rules = cv2.morphologyEx(straight, cv2.MORPH_OPEN, kernel)
    if not rules.any():
        return rules
    # with the ragged edges a turned or scanned rule has, two pixels above and below
    rules = cv2.dilate(rules, np.ones((5, 1), np.uint8)) & straight
    rest = straight & (1 - rules)
    touched = np.zeros_like(rules)
    touched[1:] |= rest[:-1]  # ink right above
    touched[:-1] |= rest[1:]  # ink right below
    touched &= rules
    for _ in range(RULE_THICKNESS):  # through the rule's thickness, column by column
        touched = cv2.dilate(touched, np.ones((3, 1), np.uint8)) & rules
    return rules & (1 - touched)


def print_share(labels: np.ndarray, ids: np.ndarray, stats: np.ndarray) -> float:
    """The share of a line's letter-sized components (`ids` in `labels`, their `stats`; at
    least LETTER_MIN_PX tall and half the median of those) that have a twin (`_twins`)
    of the same size to a pixel. 0 for fewer than PRINT_MIN_SHAPES letters."""
    x, y, w, h = (stats[:, k] for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP,
                                        cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
    sized = h >= LETTER_MIN_PX
    if not sized.any():
        return 0.0
    letters = np.flatnonzero(sized & (h >= 0.5 * np.median(h[sized])))
    if len(letters) < PRINT_MIN_SHAPES:
        return 0.0
    shape = {k: (labels[y[k]:y[k] + h[k], x[k]:x[k] + w[k]] == ids[k]).view(np.uint8)
             for k in letters}
    twinned = np.zeros(len(stats), bool)
    for n, i in enumerate(letters):
        for j in letters[n + 1:]:
            if abs(int(w[i]) - int(w[j])) > 1 or abs(int(h[i]) - int(h[j])) > 1:
                continue
            if twinned[i] and twinned[j]:
                continue
            if _twins(shape[i], shape[j]):
                twinned[[i, j]] = True
    return float(twinned[letters].mean())


def _twins(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether TWIN_NEAR of each shape's ink lies within a pixel of the other's, with `b`
    shifted by up to a pixel: a scan's ragged edges move a stroke's edge by a pixel,
    however small the type, where an overlap ratio would ask more of small letters."""
    height, width = max(a.shape[0], b.shape[0]) + 2, max(a.shape[1], b.shape[1]) + 2
    canvas = np.zeros((height, width), np.uint8)
    canvas[1:1 + a.shape[0], 1:1 + a.shape[1]] = a
    near, na, nb = cv2.dilate(canvas, NEIGHBOURS), np.count_nonzero(a), np.count_nonzero(b)
    for dy in range(3):
        for dx in range(3):
            moved = np.zeros_like(canvas)
            moved[dy:dy + b.shape[0], dx:dx + b.shape[1]] = b
            if (np.count_nonzero(moved & near) >= TWIN_NEAR * nb
                    and np.count_nonzero(canvas & cv2.dilate(moved, NEIGHBOURS)) >= TWIN_NEAR * na):
                return True
    return False


def _valleys(smooth: np.ndarray, spacing: float) -> np.ndarray:
    """Rows between text lines: the lowest row between each two neighbouring peaks of the
    smoothed profile, peaks at least half a line spacing apart."""
    peaks = [i for i in range(1, len(smooth) - 1)
             if smooth[i] >= smooth[i - 1] and smooth[i] > smooth[i + 1]
             and smooth[i] > 0.1 * smooth.max()]
    kept: list[int] = []
    for p in peaks:  # of two peaks closer than half a spacing, keep the higher
        if kept and p - kept[-1] < spacing / 2:
            if smooth[p] > smooth[kept[-1]]:
                kept[-1] = p
            continue
        kept.append(p)
    return np.array([a + int(np.argmin(smooth[a:b])) for a, b in zip(kept, kept[1:])],
                    dtype=np.float64)


class NoTextLineError(ImageError):
    """A page on which no text line was found."""


class TurnedPageError(ImageError):
    """A page whose text lines do not run across the image, or that seems upside down."""


def may_be_page(image: np.ndarray, input: str) -> bool:
    """Whether an image read as `input` (`INPUTS`) is read as a page, or may be: `page`, or
    `auto` on an image at least PAGE_MIN_HEIGHT px tall (a line never is). An unknown
    `input` raises."""
    if input not in INPUTS:
        raise ValueError(f"unknown input {input!r}; allowed: {', '.join(INPUTS)}")
    return input == "page" or (input == "auto" and image.shape[0] >= PAGE_MIN_HEIGHT)


def page_lines(image: np.ndarray, input: str = "auto", name: str = "<array>"
               ) -> list[Line] | None:
    """The text lines of an image read as `input` (`INPUTS`), or None when it is read as
    one line: `line` uses it whole; `page` finds its text lines; `auto` reads it as a page
    when it is at least PAGE_MIN_HEIGHT px tall and two or more text lines are found on it.
    Ruled lines are left out and printed ones flagged (`find_lines`). A page without a
    handwritten line, or turned a quarter turn, raises, naming it; so does one that `auto`
    finds upside down by its handwritten lines (`lean`; `page` reads it as it is)."""
    if not may_be_page(image, input):
        return None
    if turned(image):
        raise TurnedPageError(f"{name}: its text lines do not run across the image (the page "
                              "is turned a quarter turn, or skewed by more than "
                              f"{MAX_STRAIGHTEN_DEG:g} degrees). Rotate the scan so that the lines "
                              "run across, or pass --input line to read it as one line.")
    lines = find_lines(image)
    hand = handwritten(lines)
    if input == "auto" and len(lines) < 2:
        return None
    if not hand:
        what = f"only machine print ({len(lines)} lines)" if lines else "no text line"
        raise NoTextLineError(f"{name}: {what} found on the page. Pass a scan of "
                              "handwritten text, dark ink on light paper.")
    if input == "auto" and lean(hand, image.shape[1]) < UPSIDE_DOWN_BELOW:
        raise TurnedPageError(f"{name}: the page seems upside down (more ink hangs below its "
                              "lines than rises above them, or their left ends are ragged). "
                              "Rotate the scan half a turn, or pass --input page to read it "
                              "as it is.")
    return lines


def read_page(image: np.ndarray, input: str = "auto", name: str = "<array>"
              ) -> tuple[np.ndarray, list[Line] | None]:
    """(the image as read, its text lines or None when read as one line) of an image read
    as `input` (`page_lines`); a page askew by STRAIGHTEN_FROM_DEG to MAX_STRAIGHTEN_DEG
    (`level_angle`) is read turned level (`straightened`), and so returned."""
    if not may_be_page(image, input):
        return image, None
    angle = level_angle(image)
    level = straightened(image, angle) if abs(angle) >= STRAIGHTEN_FROM_DEG else image
    lines = page_lines(level, input, name)
    return (image, None) if lines is None else (level, lines)


def parts(image: np.ndarray, input: str = "auto", name: str = "<array>"
          ) -> tuple[list[np.ndarray], int | None]:
    """(the line images to score, the number of lines found or None) of an image read as
    `input`: the image itself for a line, a page's lines for a page (`read_page`)."""
    return split(*read_page(image, input, name))


def split(image: np.ndarray, lines: list[Line] | None) -> tuple[list[np.ndarray], int | None]:
    """(the line images to score, the number of handwritten lines or None) of an image and
    the lines `page_lines` found on it (None: read as one line); printed lines are not
    scored."""
    if lines is None:
        return [image], None
    hand = handwritten(lines)
    return [line.image for line in hand], len(hand)
