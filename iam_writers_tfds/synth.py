"""Synthetic handwriting in the Kaggle layout (or the official IAM one): the offline data.

Writers differ the way real writers do, not by a trivial cue: each has its own letter
shapes (a Hershey face whose every glyph gets a writer-specific affine warp), slant,
stroke width, letter size, spacing and baseline drift. Image size, paper brightness and
ink darkness are drawn per image, so they say nothing about the writer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from iam_writers_tfds import atomic
from iam_writers_tfds.configs import check_seed
from iam_writers_tfds.kaggle_layout import FORMS_FILE

_FACES = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
)
_WORDS = (
    "the of and to in is was he for it with as his on be at by had are but from or have an "
    "they which one you were her all she there would their we him been has when who will more "
    "no if out so said what up its about into than them can only other new some could time "
    "these two may then do first any my now such like our over man me even most made after "
    "also did many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men work "
    "long get here between both life being under never day same another know while last might "
    "us great old year off come since against go came right used take three house"
).split()


# each letter drawn is bent by up to about this much, on a grid of 7 x 7 points over its
# canvas (a few across the letter itself): less leaves letters that type-like twins
# (`models.runtime.pages.PRINT_SHARE`; docs/results.md, printed text)
WOBBLE_PX = 2.0
WOBBLE_GRID = 7


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """Size of a generated dataset; `iam-writers synth` and the `synthetic` config fill it."""

    writers: int = 10
    forms_per_writer: int = 6
    lines_per_form: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed)


@dataclasses.dataclass
class WriterStyle:
    """Everything that makes one synthetic writer recognisable."""

    face: int
    scale: float
    thickness: int
    slant: float
    spacing: float
    word_gap: float
    drift_amp: float
    drift_period: float
    glyph_warp: dict[str, np.ndarray]

    @classmethod
    def sample(cls, rng: np.random.Generator) -> WriterStyle:
        return cls(
            face=int(rng.choice(_FACES)) | (cv2.FONT_ITALIC if rng.random() < 0.3 else 0),
            scale=float(rng.uniform(1.9, 2.8)),
            thickness=int(rng.integers(2, 6)),
            slant=float(rng.uniform(-0.35, 0.35)),
            spacing=float(rng.uniform(0.8, 1.2)),
            word_gap=float(rng.uniform(0.4, 1.2)),
            drift_amp=float(rng.uniform(0.0, 6.0)),
            drift_period=float(rng.uniform(300, 1200)),
            glyph_warp={},
        )

    def warp_for(self, char: str, rng: np.random.Generator) -> np.ndarray:
        """A fixed per-writer 2x2 distortion of one letter: this writer's way of forming it."""
        if char not in self.glyph_warp:
            angle = rng.normal(0, 0.12)
            sx, sy = rng.uniform(0.8, 1.25, size=2)
            shear = rng.normal(0, 0.15)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            self.glyph_warp[char] = rot @ np.array([[sx, shear], [0.0, sy]])
        return self.glyph_warp[char]


def _glyph(char: str, style: WriterStyle, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Ink mask (float32, 0..1) of one letter, plus its baseline row inside the mask."""
    (w, h), base = cv2.getTextSize(char, style.face, style.scale, style.thickness)
    pad = 2 * style.thickness + int(0.6 * (h + base)) + 2
    canvas = np.zeros((h + base + 2 * pad, w + 2 * pad), np.uint8)
    cv2.putText(canvas, char, (pad, pad + h), style.face, style.scale, 255, style.thickness,
                cv2.LINE_AA)
    jitter = np.eye(2) + rng.normal(0, 0.03, size=(2, 2))  # the hand never repeats exactly
    m = style.warp_for(char, rng) @ jitter
    centre = np.array([pad + w / 2, pad + h])
    affine = np.hstack([m, (centre - m @ centre)[:, None]])
    warped = cv2.warpAffine(canvas, affine, (canvas.shape[1], canvas.shape[0]))
    return _wobble(warped.astype(np.float32) / 255.0, rng), pad + h


def _wobble(glyph: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A glyph bent by a smooth random displacement (WOBBLE_PX at WOBBLE_GRID squared
    points): a pen never traces a letter twice along the same path; type does."""
    h, w = glyph.shape
    knots = rng.normal(0, WOBBLE_PX, size=(WOBBLE_GRID, WOBBLE_GRID, 2)).astype(np.float32)
    shift = cv2.resize(knots, (w, h), interpolation=cv2.INTER_CUBIC)
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(glyph, cols + shift[..., 0], rows + shift[..., 1], cv2.INTER_LINEAR)


def render_line(style: WriterStyle, rng: np.random.Generator) -> np.ndarray:
    """One text line, uint8 grayscale, 100-150 px high and 800-2000 px wide."""
    return render_words(style, rng)[0]


def render_words(style: WriterStyle, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """One text line as `render_line` draws it, and the words on it (those that begin
    within the line's width)."""
    height, width = int(rng.integers(100, 151)), int(rng.integers(800, 2001))
    ink = np.zeros((height, width + 400), np.float32)
    x, baseline0 = 20.0 + rng.uniform(0, 20), height * rng.uniform(0.6, 0.72)
    phase = rng.uniform(0, 2 * np.pi)
    words = []
    while x < width:
        word = _WORDS[rng.integers(len(_WORDS))]
        words.append(word)
        for char in word:
            mask, base_row = _glyph(char, style, rng)
            y = baseline0 + style.drift_amp * np.sin(2 * np.pi * x / style.drift_period + phase)
            top, left = int(round(y)) - base_row, int(round(x))
            y0, y1 = max(top, 0), min(top + mask.shape[0], height)
            x1 = min(left + mask.shape[1], ink.shape[1])
            if y1 > y0 and x1 > left:
                region = ink[y0:y1, left:x1]
                np.maximum(region, mask[y0 - top : y1 - top, : x1 - left], out=region)
            advance = cv2.getTextSize(char, style.face, style.scale, style.thickness)[0][0]
            x += advance * style.spacing * rng.uniform(0.92, 1.08)
        x += style.word_gap * 14 * style.scale * rng.uniform(0.8, 1.2)
    shear = style.slant + rng.normal(0, 0.03)
    affine = np.float32([[1, -shear, shear * baseline0], [0, 1, 0]])
    ink = cv2.warpAffine(ink, affine, (ink.shape[1], height))[:, :width]
    paper = rng.uniform(175, 250)
    darkness = rng.uniform(0.55, 0.95) * paper
    img = paper - darkness * ink + rng.normal(0, rng.uniform(2, 10), size=ink.shape)
    return np.clip(img, 0, 255).astype(np.uint8), words


def render_page(style: WriterStyle, rng: np.random.Generator, lines: int = 6,
                skew_deg: float = 0.0, line_step: int = 120
                ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A page of `lines` of the writer's lines, one every `line_step` px (so that tall
    letters of neighbouring lines can touch), turned by `skew_deg`, on white paper; and
    each line's ink box (x0, y0, x1, y1) in the page."""
    drawn = [render_line(style, rng) for _ in range(lines)]
    height = line_step * (lines - 1) + max(d.shape[0] for d in drawn) + 200
    width = max(d.shape[1] for d in drawn) + 200
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), skew_deg, 1.0)
    page, boxes = np.zeros((height, width), np.float32), []
    for i, line in enumerate(drawn):
        paper, ink = np.median(line), np.percentile(line, 1)
        canvas = np.zeros((height, width), np.float32)
        y = 100 + i * line_step
        canvas[y:y + line.shape[0], 100:100 + line.shape[1]] = np.clip(
            (paper - line.astype(np.float32)) / max(paper - ink, 1), 0, 1)
        canvas = cv2.warpAffine(canvas, turn, (width, height))
        ys, xs = np.nonzero(canvas > 0.5)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
        np.maximum(page, canvas, out=page)
    return (245 - 200 * page).astype(np.uint8), boxes


PHOTO_QUALITY = 85  # the JPEG quality of a phone camera app's photos, roughly


def photograph(page: np.ndarray, rng: np.random.Generator,
               paper: tuple[float, float] = (8.27, 11.69), tilt_deg: float = 20.0,
               fill: float = 0.75, frame: tuple[int, int] = (3024, 4032), light: float = 0.35
               ) -> tuple[np.ndarray, tuple[int, int]]:
    """A phone's photo (`frame` px, focal length 3,100 px at 4,032 tall) of a sheet of
    `paper` (inches, short side first) holding `page` (at 300 dpi, 150 px from its top,
    centred): the sheet tilted up to `tilt_deg` each way and turned up to 8 degrees, its width
    `fill` of the frame's (less where it would not lie whole in the frame), on a dark ground,
    a light falling off by `light` across the frame, and sensor noise. Returns the photo and
    where the page's top-left lies on the sheet (its pixels at 300 dpi)."""
    sheet_w, sheet_h = round(paper[0] * 300), round(paper[1] * 300)
    sheet = np.full((sheet_h, sheet_w), 250, np.uint8)
    x0, y0 = max(0, (sheet_w - page.shape[1]) // 2), 150
    h, w = min(page.shape[0], sheet_h - y0), min(page.shape[1], sheet_w)
    sheet[y0:y0 + h, x0:x0 + w] = page[:h, :w]
    width, height = frame
    focal = 3100 * height / 4032
    ax, ay = np.radians(rng.uniform(-tilt_deg, tilt_deg, 2))
    az = np.radians(rng.uniform(-8, 8))
    turn = (np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
            @ np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
            @ np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]]))
    corners = np.array([[0, 0, 0], [sheet_w, 0, 0], [sheet_w, sheet_h, 0], [0, sheet_h, 0]],
                       float) - [sheet_w / 2, sheet_h / 2, 0]
    distance = focal * sheet_w / (fill * width)
    aside = rng.uniform(-0.03, 0.03, 2) * sheet_w
    while True:  # farther until the whole sheet is in the photo, with ground round it
        seen = corners @ turn.T + [*aside, distance]
        shown = np.float32(focal * seen[:, :2] / seen[:, 2:] + [width / 2, height / 2])
        if (shown.min(axis=0) > 0.03 * width).all() and (
                shown.max(axis=0) < [0.97 * width, height - 0.03 * width]).all():
            break
        distance *= 1.05
    to_photo = cv2.getPerspectiveTransform(np.float32(corners[:, :2] + [sheet_w / 2, sheet_h / 2]),
                                           shown)
    photo = cv2.warpPerspective(sheet, to_photo, frame, flags=cv2.INTER_AREA,
                                borderValue=0).astype(np.float32)
    cover = cv2.warpPerspective(np.ones_like(sheet), to_photo, frame, borderValue=0)
    ground = cv2.GaussianBlur(rng.normal(70, 12, (height, width)).astype(np.float32), (0, 0), 3)
    photo = np.where(cover > 0, photo, ground)
    ys, xs = np.mgrid[0:height, 0:width]
    towards = rng.uniform(0, 2 * np.pi)
    fall = np.cos(towards) * xs / width + np.sin(towards) * ys / height
    photo *= 1 - light * (fall - fall.min()) / (fall.max() - fall.min())
    photo += rng.normal(0, 3, photo.shape)
    return np.clip(photo, 0, 255).astype(np.uint8), (x0, y0)


def shadowed(photo: np.ndarray, rng: np.random.Generator, depth: float = 0.4,
             edge: float = 3.0) -> np.ndarray:
    """`photo` under the shadow of a phone held over it: `depth` darker over a four-sided
    part of the frame from one corner (the rng's), cut off across the sheet, its edge blurred
    by `edge` px (3: hard)."""
    h, w = photo.shape
    part = np.array([[0.35, 0.0], [1.0, 0.0], [1.0, 0.65], [0.6, 0.5]])  # the upper right
    flip = rng.integers(2, size=2)  # mirrored across, down, both or neither
    part = np.abs(flip - part) * [w, h]
    shade = np.zeros((h, w), np.float32)
    cv2.fillPoly(shade, [np.int32(np.round(part))], 1.0)
    shade = cv2.GaussianBlur(shade, (0, 0), edge)
    return np.clip(photo * (1 - depth * shade), 0, 255).astype(np.uint8)


LAYOUTS = ("kaggle", "iam")


def generate(out: Path, config: SynthConfig = SynthConfig(), layout: str = "kaggle") -> Path:
    """Write `config`'s writers under `out` (atomically) and return it: in the Kaggle layout,
    or in the official IAM one (`lines/`, `ascii/forms.txt`, `ascii/lines.txt` whose
    transcriptions are the words drawn)."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists. Choose a new --out folder or delete it.")
    if min(config.writers, config.forms_per_writer, config.lines_per_form) < 1:
        raise ValueError("writers, forms-per-writer and lines-per-form must all be >= 1.")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    rng = np.random.default_rng(config.seed)
    with atomic.replaced(out, directory=True) as tmp:
        form_numbers = rng.permutation(config.writers * config.forms_per_writer)
        forms, lines = [], []
        for w in range(config.writers):
            style = WriterStyle.sample(rng)
            writer_id = f"{w:03d}"
            for f in range(config.forms_per_writer):
                n = int(form_numbers[w * config.forms_per_writer + f])
                form_id = f"s{n // 100:02d}-{n % 100:03d}"
                forms.append(f"{form_id} {writer_id} 0 syn 0 0 0 0")
                for k in range(config.lines_per_form):
                    img, words = render_words(style, rng)
                    if layout == "kaggle":
                        path = tmp / "data_subset" / "data_subset" / f"{form_id}-s00-{k:02d}.png"
                    else:
                        line_id = f"{form_id}-{k:02d}"
                        path = tmp / "lines" / form_id.split("-")[0] / form_id / f"{line_id}.png"
                        gray = int(np.median(img) + img.min()) // 2
                        lines.append(f"{line_id} ok {gray} {len(words)} 0 0 {img.shape[1]} "
                                     f"{img.shape[0]} {'|'.join(words)}")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(path), img)
        if layout == "kaggle":
            (tmp / FORMS_FILE).write_text("\n".join(sorted(forms)) + "\n")
        else:
            (tmp / "ascii").mkdir()
            header = "#--- generated by iam-writers synth in the format of IAM's {} ---\n"
            (tmp / "ascii" / "forms.txt").write_text(
                header.format("forms.txt") + "\n".join(sorted(forms)) + "\n")
            (tmp / "ascii" / "lines.txt").write_text(
                header.format("lines.txt") + "\n".join(lines) + "\n")
    return out
