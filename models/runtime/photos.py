"""A page photographed: its sheet of paper found, straightened and measured.

A camera's image says nothing of the handwriting's size (its JPEG declares 72 dpi, or
nothing), and shows the sheet in perspective, under uneven light. Where a sheet of paper
lies whole against a darker ground, its four corners give both: the sheet is mapped onto
A4, US Letter or US Legal paper at 300 dpi (whichever its shape is nearer, judged with the
camera's perspective undone, Zhang & He 2007; or the paper its user names), and its light
is evened. docs/results.md, photos.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import cv2
import numpy as np

from iam_writers_tfds.images import SCAN_DPI

# (short side, long side) in inches: the sheets a page photographed may be (`--paper`)
PAPERS = {"A4": (8.27, 11.69), "Letter": (8.5, 11.0), "A5": (5.83, 8.27),
          "Legal": (8.5, 14.0)}
# those told apart by shape where no paper is named (A5 has A4's shape): docs/results.md,
# photos, US Legal by its shape
SHAPED = ("A4", "Letter", "Legal")
FIND_SIDE = 800  # px: the photo's long side where the sheet is looked for
REFINE_SAMPLES = 48  # points along each side where its edge is found at full resolution
PAPER_SHARE = (0.2, 0.95)  # of the photo the sheet covers: less is not a page, more no ground
PAPER_CONTRAST = 40  # gray levels between the sheet and the ground around it
RUN_SLACK = 0.005  # of the sheet's outline: how far a straight run of it may stray from it
SIDE_TURN = 12  # degrees: a turn of the sheet's outline sharper than this ends a side
CUT_SHARE = 0.6  # of its shortest side: how much outline a hidden corner may cut off
CORNER_OUT = 8  # px at FIND_SIDE: how far off the photo a sheet's corner may be found
SHADE_STEP = 8  # gray levels: how much lower each next threshold the sheet is looked for at
SHEET_STEADY = 3  # px at FIND_SIDE: a sheet's corners move no more from one threshold to the next
GROUND_MARGIN = 7  # px at FIND_SIDE: the paper's shaded edge, painted with the ground (`cleared`)
# a side is the line most of the outline's points near it lie on, within SIDE_FIT px of the
# reduced photo: its candidates run through pairs of SIDE_PICKS points spread along it,
# from those within SIDE_BAND of its length of the run first found (a light thumb over a
# corner bends that run off the side: docs/results.md, a light thumb)
SIDE_BAND = 0.15
SIDE_FIT = 1.5
SIDE_PICKS = 48
PAPER_SLACK = 0.08  # of long side over short: how far a sheet's may be from its paper's
INSET = 0.01  # of the sheet's width, cut from each edge: no ground left at the border
# the camera's focal length, as a multiple of the photo's diagonal, that the perspective is
# believed to show; outside it (a sheet photographed nearly square on) its outline says more
FOCAL = (0.4, 3.0)
EVEN_CELL = 8  # px: the light is measured on the sheet reduced by this
EVEN_REACH = 5  # cells: the paper's level is the page closed within this reach (no ink there)


class Sheet(NamedTuple):
    """A sheet of paper found on a photo: its corners (top-left, top-right, bottom-right,
    bottom-left, in the photo's pixels), the paper it is taken for (`PAPERS`), and the
    photo's resolution on it (dpi: its width in pixels over the paper's in inches)."""

    corners: np.ndarray
    paper: str
    dpi: float


def _ordered(quad: np.ndarray) -> np.ndarray:
    """Four points as top-left, top-right, bottom-right, bottom-left: in turn round their
    centre, clockwise as shown, from the least x + y (by x + y and y - x alone, a quad
    turned far, as the lit part of a shadowed sheet's outline can be, had a corner twice)."""
    centre = quad.mean(axis=0)
    quad = quad[np.argsort(np.arctan2(quad[:, 1] - centre[1], quad[:, 0] - centre[0]))]
    return np.float32(np.roll(quad, -int(np.argmin(quad.sum(axis=1))), axis=0))


def _sides(corners: np.ndarray) -> tuple[float, float]:
    """(width, height) of a quadrilateral: the means of its opposite sides."""
    tl, tr, br, bl = corners
    return ((np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2,
            (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2)


def aspect(corners: np.ndarray, shape: tuple[int, int]) -> float:
    """Width over height of the rectangle a photo of `shape` shows at `corners`: with the
    perspective undone for a camera centred on the photo (Zhang & He, "Whiteboard scanning
    and image enhancement", 2007), else (the focal length out of `FOCAL`) of the outline."""
    width, height = _sides(corners)
    centre = np.array([shape[1] / 2, shape[0] / 2])
    m1, m2, m4, m3 = (np.append(p - centre, 1.0) for p in corners)  # tl, tr, br, bl
    k2 = np.dot(np.cross(m1, m4), m3) / np.dot(np.cross(m2, m4), m3)
    k3 = np.dot(np.cross(m1, m4), m2) / np.dot(np.cross(m3, m4), m2)
    n2, n3 = k2 * m2 - m1, k3 * m3 - m1
    depth = n2[2] * n3[2]
    focal2 = -(n2[0] * n3[0] + n2[1] * n3[1]) / depth if abs(depth) > 1e-12 else -1.0
    diagonal = float(np.hypot(*shape))
    if not (FOCAL[0] * diagonal) ** 2 <= focal2 <= (FOCAL[1] * diagonal) ** 2:
        return width / height
    return float(np.sqrt((n2[0] ** 2 + n2[1] ** 2) / focal2 + n2[2] ** 2)
                 / np.sqrt((n3[0] ** 2 + n3[1] ** 2) / focal2 + n3[2] ** 2))


def find_sheet(photo: np.ndarray, papers: tuple[str, ...] = SHAPED) -> Sheet | None:
    """The sheet of paper lying whole on a photo (2-D uint8): a light region four-sided (a
    corner hidden under a thumb is where its sides meet, `_four_sides`), covering
    `PAPER_SHARE` of it and `PAPER_CONTRAST` lighter than what lies around it, clear of the
    photo's edges (`_whole_sheet`), shaped as one of `papers` (of `PAPERS`) is: the light
    region at Otsu's threshold, or where that is none, the largest below it (a shadow over
    part of the sheet leaves its lit part alone above Otsu's: `_light_regions`,
    `_candidates`); its corners found on the photo reduced (`FIND_SIDE`), then at full
    resolution. None where there is none (a scan, whose paper fills it; a sheet cut by the
    photo's edge, or on a ground as light as itself; a strip or a card, whose size its
    shape does not tell)."""
    small, scale = _reduced(photo)
    for outline, quad in _candidates(small):
        inside = np.zeros_like(small)
        cv2.fillConvexPoly(inside, np.int32(np.round(quad)), 255)
        if not _stands_out(small, inside):
            continue
        corners = _ordered(_edges_met(quad, outline.reshape(-1, 2).astype(np.float32)))
        corners = _refined(photo, corners / scale, 2.5 / scale)
        if not _in_frame(corners, photo.shape, CORNER_OUT / scale):
            continue  # the sides fitted meet off the photo (a shadowed sheet's lit part)
        if sheet := _measured(photo, corners, papers):
            return sheet
    return None


def _in_frame(corners: np.ndarray, shape: tuple[int, int], margin: float) -> bool:
    """Whether four corners lie on a photo of `shape`, or within `margin` px off it."""
    return bool((corners >= -margin).all() and (corners <= np.array(shape[::-1]) + margin).all())


def _candidates(small: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (outline, corners) of the light regions of a reduced photo that may be whole
    sheets (`_whole_sheet`), in the order they are tried: Otsu's, as it always was (a sheet
    on a board lighter than the desk: the board joins below it, and has a paper's shape);
    then, looked for only where that is not taken, the largest (the lowest threshold's),
    those whose corners lie within `SHEET_STEADY` of the threshold above's first, as a
    lower one may join a speck of the ground to the sheet. docs/results.md, a phone's
    shadow."""
    found = []
    for outline in _light_regions(small):
        found.append((outline, _whole_sheet(small, outline)))
        if len(found) == 1 and found[0][1] is not None:
            yield found[0]
    sheets = [k for k, (_, quad) in enumerate(found) if quad is not None]
    steady = [k for k in sheets if k - 1 in sheets and
              np.abs(found[k][1] - found[k - 1][1]).max() <= SHEET_STEADY]
    yield from (found[k] for k in dict.fromkeys(steady[::-1] + sheets[::-1]) if k > 0)


def _reduced(photo: np.ndarray) -> tuple[np.ndarray, float]:
    """The photo reduced to `FIND_SIDE` (a pixel each way at least), and by what scale."""
    scale = FIND_SIDE / max(photo.shape)
    size = (max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale)))
    return cv2.resize(photo, size, interpolation=cv2.INTER_AREA), scale


def _light_regions(small: np.ndarray) -> Iterator[np.ndarray]:
    """The outline of the largest light region of a reduced photo at Otsu's threshold,
    then at thresholds `SHADE_STEP` lower in turn, as long as it lies clear of the photo's
    edges: a shadow over part of the sheet puts that part below Otsu's threshold, not below
    the ground (docs/results.md, a phone's shadow)."""
    smooth = cv2.GaussianBlur(small, (5, 5), 0)
    otsu, _ = cv2.threshold(smooth, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    for level in np.arange(otsu, 0, -SHADE_STEP):
        light = np.uint8(smooth > level) * 255
        contours = cv2.findContours(light, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0]
        if not contours:
            return
        outline = max(contours, key=cv2.contourArea)
        yield outline
        if _at_edge(outline, small.shape):
            return  # a lower threshold only joins more ground


def _at_edge(outline: np.ndarray, shape: tuple[int, int]) -> bool:
    """Whether an outline on the reduced photo reaches within a pixel of its edge."""
    x, y, w, h = cv2.boundingRect(outline)
    return min(x, y) <= 1 or x + w >= shape[1] - 1 or y + h >= shape[0] - 1


def _whole_sheet(small: np.ndarray, outline: np.ndarray) -> np.ndarray | None:
    """The four corners (ordered, on the reduced photo `small`) where the sides of
    `outline`'s hull meet, where it may be a whole sheet's (`find_sheet`; whether it
    stands out of the ground is asked of the one taken), else None."""
    if _at_edge(outline, small.shape):
        return None  # cut by the photo's edge: that edge is not the sheet's
    hull = cv2.convexHull(outline)  # ink at the edge: not a dent
    share = cv2.contourArea(hull) / small.size
    quad = _four_sides(hull)
    if quad is None or not PAPER_SHARE[0] <= share <= PAPER_SHARE[1]:
        return None
    if not _in_frame(quad, small.shape, CORNER_OUT):
        return None  # a corner off the photo: the outline is not a whole sheet's (a shadow's)
    return _ordered(quad)


def _measured(photo: np.ndarray, corners: np.ndarray, papers: tuple[str, ...]) -> Sheet | None:
    """The sheet at `corners` of the photo, taken for the one of `papers` whose shape it
    has (with the perspective undone, `aspect`), or None where it has none's."""
    ratio = aspect(corners, photo.shape)
    long_over_short = max(ratio, 1 / ratio)
    paper = min(papers, key=lambda k: abs(PAPERS[k][1] / PAPERS[k][0] - long_over_short))
    if abs(PAPERS[paper][1] / PAPERS[paper][0] - long_over_short) > PAPER_SLACK:
        return None  # another paper (a strip, a card, a square note): its size is not known
    width, height = _sides(corners)
    short, long = PAPERS[paper]
    return Sheet(corners, paper, float(width) / (short if ratio <= 1 else long))


def _lightest(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(the photo reduced to `FIND_SIDE`, the outline of its largest light region at
    Otsu's threshold), or None where nothing is light."""
    small, _ = _reduced(photo)
    outline = next(_light_regions(small), None)
    return None if outline is None else (small, outline)


def _stands_out(small: np.ndarray, inside: np.ndarray) -> bool:
    """Whether the region `inside` (a mask of `small`) is `PAPER_CONTRAST` lighter than the
    rest, as paper on a desk is."""
    return float(np.median(small[inside > 0])) - float(np.median(small[inside == 0])) \
        >= PAPER_CONTRAST


def cleared(photo: np.ndarray) -> np.ndarray:
    """A photo on which no sheet was found (cut by the photo's edge), with the ground round
    its paper painted white, `GROUND_MARGIN` into the paper's shaded edge, and its light
    evened: else the desk reads as ink, and the page is refused as turned. The paper is its
    largest light region; where it covers more than `PAPER_SHARE` of it (a scan) or less,
    or the rest is not `PAPER_CONTRAST` darker, the photo is returned as it is."""
    if (found := _lightest(photo)) is None:
        return photo
    small, outline = found
    paper = np.zeros_like(small)
    cv2.drawContours(paper, [outline], -1, 255, cv2.FILLED)
    if not PAPER_SHARE[0] <= np.count_nonzero(paper) / paper.size <= PAPER_SHARE[1] or \
            not _stands_out(small, paper):
        return photo
    paper = cv2.erode(paper, np.ones((2 * GROUND_MARGIN + 1,) * 2, np.uint8))
    ground = cv2.resize(paper, photo.shape[::-1], interpolation=cv2.INTER_NEAREST) == 0
    return np.where(ground, np.uint8(255), evened(photo))  # evened first: the ground no light


def _four_sides(hull: np.ndarray) -> np.ndarray | None:
    """The four corners of a sheet's outline (its convex hull): where its four longest
    straight runs meet, so that a corner hidden (a thumb on it cuts it off) is where its
    sides would meet; None unless the rest of the outline is short (not four-sided)."""
    poly = cv2.approxPolyDP(hull, RUN_SLACK * cv2.arcLength(hull, True), True)
    poly = poly.reshape(-1, 2).astype(np.float32)
    if len(poly) < 4:
        return None
    edges = np.roll(poly, -1, axis=0) - poly
    angle = np.arctan2(edges[:, 1], edges[:, 0])
    turn = np.abs((np.diff(angle, append=angle[:1]) + np.pi) % (2 * np.pi) - np.pi)
    breaks = np.flatnonzero(turn > np.radians(SIDE_TURN))  # a run ends after edge k
    if len(breaks) < 4:
        return None
    runs = [(poly[(b0 + 1) % len(poly)], poly[(b1 + 1) % len(poly)])
            for b0, b1 in zip(breaks, np.roll(breaks, -1))]  # (start, end) of each run
    lengths = np.array([np.linalg.norm(b - a) for a, b in runs])
    kept = np.sort(np.argsort(-lengths)[:4])
    if np.delete(lengths, kept).sum() > CUT_SHARE * lengths[kept].min():
        return None
    lines = [np.cross([*runs[k][0], 1.0], [*runs[k][1], 1.0]) for k in kept]
    return _met(lines, None)


def _edges_met(quad: np.ndarray, outline: np.ndarray) -> np.ndarray:
    """The corners where the four sides of the sheet's outline meet, each side a line
    fitted to the outline's points that lie straight along it (`_straightest`, between its
    corners' ends, a tenth of its length from each): a corner itself is rounded by the
    blur, a side is straight, and a thumb's curve beside it is not."""
    lines = []
    for a, b in zip(quad, np.roll(quad, -1, axis=0)):
        along = b - a
        length = float(np.linalg.norm(along))
        rel = outline - a
        t = rel @ along / length ** 2
        off = np.abs(along[0] * rel[:, 1] - along[1] * rel[:, 0]) / length
        near = outline[(t > 0.1) & (t < 0.9) & (off < SIDE_BAND * length)]
        if len(near) < 2:
            return quad
        lines.append(_fitted(_straightest(near, along)))
    return _met(lines, quad)


def _straightest(points: np.ndarray, along: np.ndarray) -> np.ndarray:
    """Of outline points near a side running `along`, those within SIDE_FIT px of the line
    most of them lie on, of the lines through two of SIDE_PICKS points spread along it and
    a fifth of its length apart (all pairs: no random draw)."""
    length = float(np.linalg.norm(along))
    order = np.argsort(points @ along)
    picks = points[order[np.linspace(0, len(points) - 1, min(SIDE_PICKS, len(points)))
                         .astype(int)]]
    i, j = np.triu_indices(len(picks), 1)
    start, step = picks[i], picks[j] - picks[i]
    apart = np.hypot(step[:, 0], step[:, 1])
    keep = apart > 0.2 * length
    if not keep.any():
        return points
    start, step, apart = start[keep], step[keep], apart[keep]
    off = np.abs(step[:, None, 0] * (points[None, :, 1] - start[:, None, 1])
                 - step[:, None, 1] * (points[None, :, 0] - start[:, None, 0])) / apart[:, None]
    on = off < SIDE_FIT
    return points[on[np.argmax(on.sum(axis=1))]]


def _fitted(points: np.ndarray) -> np.ndarray:
    """The line (homogeneous) fitted to points [N, 2], robust to a few far off."""
    vx, vy, x, y = cv2.fitLine(points.astype(np.float32), cv2.DIST_HUBER, 0, 0.01,
                               0.01).ravel()
    return np.cross([x, y, 1.0], [x + vx, y + vy, 1.0])


def _met(lines: list[np.ndarray], otherwise: np.ndarray | None) -> np.ndarray | None:
    """Where each of four sides' lines meets the one before it (corner k: sides k-1 and k);
    `otherwise` where two are parallel."""
    met = [np.cross(lines[k - 1], lines[k]) for k in range(4)]
    if any(abs(m[2]) < 1e-9 for m in met):
        return otherwise
    return np.float32([m[:2] / m[2] for m in met])


def _refined(photo: np.ndarray, corners: np.ndarray, reach: float) -> np.ndarray:
    """`corners` where the sheet's four sides meet at the photo's own resolution: each side
    a line fitted to where the light changes most steeply across it, within `reach` px of
    the side found on the photo reduced (`FIND_SIDE`: a pixel there is several here, and the
    paper's shape, A4, Letter or Legal, is judged from the corners to a few thousandths)."""
    across = np.arange(-reach, reach + 0.5, 0.5, dtype=np.float32)
    lines = []
    for a, b in zip(corners, np.roll(corners, -1, axis=0)):
        along = (b - a) / np.linalg.norm(b - a)
        normal = np.float32([-along[1], along[0]])
        base = a + np.outer(np.linspace(0.1, 0.9, REFINE_SAMPLES), b - a)  # [S, 2]
        points = (base[:, None, :] + across[None, :, None] * normal).astype(np.float32)
        profile = cv2.remap(photo, points[..., 0].copy(), points[..., 1].copy(),
                            cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        profile = cv2.GaussianBlur(profile.astype(np.float32), (0, 0), sigmaX=3, sigmaY=0.1)
        steep = np.abs(np.diff(profile, axis=1))
        k = np.clip(steep.argmax(axis=1), 1, steep.shape[1] - 2)
        rows = np.arange(len(k))
        left, mid, right = steep[rows, k - 1], steep[rows, k], steep[rows, k + 1]
        bend = left - 2 * mid + right  # the parabola through the three: its vertex
        shift = np.where(bend < -1e-6, 0.5 * (left - right) / np.minimum(bend, -1e-6), 0.0)
        offset = across[k] + 0.25 + 0.5 * np.clip(shift, -0.5, 0.5)  # between two samples
        lines.append(_fitted(base + offset[:, None] * normal))
    return _met(lines, corners)


def straightened(photo: np.ndarray, sheet: Sheet) -> np.ndarray:
    """The sheet of a photo mapped onto its paper at SCAN_DPI, less `INSET` of its width
    at each edge (the page's pixel (x, y) is the paper's (x + m, y + m)), its light evened
    (`evened`): read as a scan of it is."""
    short, long = PAPERS[sheet.paper]
    width, height = _sides(sheet.corners)
    inches = (short, long) if height >= width else (long, short)
    w, h = (round(side * SCAN_DPI) for side in inches)
    corners = sheet.corners
    if (shrink := w / width) < 1:  # reduced by area first: a warp samples, it does not average
        photo = cv2.resize(photo, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        corners = corners * shrink
    m = round(INSET * w)
    target = np.float32([[-m, -m], [w - m, -m], [w - m, h - m], [-m, h - m]])
    page = cv2.warpPerspective(photo, cv2.getPerspectiveTransform(corners, target),
                               (w - 2 * m, h - 2 * m), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
    return evened(page)


def evened(page: np.ndarray) -> np.ndarray:
    """`page` with its paper brought to white: each pixel over the paper's level around it,
    so that a shadow across a photo is not taken for ink. The level is the page reduced by
    `EVEN_CELL`, closed within `EVEN_REACH` cells (the brightest around each cell: the ink
    gone; then the darkest of those around it: a shadow's hard edge kept where it lies, not
    spread `EVEN_REACH` into the shadow as a grey band that reads as a stroke)."""
    h, w = page.shape
    small = cv2.resize(page, (max(1, w // EVEN_CELL), max(1, h // EVEN_CELL)),
                       interpolation=cv2.INTER_AREA)
    reach = np.ones((2 * EVEN_REACH + 1,) * 2, np.uint8)
    paper = cv2.GaussianBlur(cv2.morphologyEx(small, cv2.MORPH_CLOSE, reach), (3, 3), 0)
    paper = cv2.resize(paper, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return np.clip(page * (255 / np.maximum(paper, 1)), 0, 255).astype(np.uint8)
