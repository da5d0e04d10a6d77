"""Evidence a person can check: how strong it is, and the handwriting behind an answer.

`LikelihoodRatio` turns a score into a calibrated log10 likelihood ratio (the same writer
against a different one) by the table export fitted on writers no model was trained on
(`models.calibration`), and `verbal` says it in words on the scale of `VERBAL_SCALE`.

`identify --report` and `verify --report` write one self-contained HTML file: every image
is embedded as a PNG drawn at one scale (`thumbnail`), each query beside the closest
writer's enrolled handwriting (`side_by_side`), nothing is fetched from a network, and a
page's text lines are outlined where they were found. Galleries keep a thumbnail of every
enrolled image, so a report can show the enrolled handwriting after its files have moved.
Each report ends with its provenance (`provenance`): the version, the model and gallery,
and the SHA-256 of every file weighed.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from iam_writers_tfds import atomic
from iam_writers_tfds.images import SCAN_DPI, declared_dpi, png_with_dpi
from models.runtime import pages
from models.runtime.gallery import utc_now

LEVELS = ("line", "document", "page")  # each kind of query has its own calibration
VERBAL_SCALE = ((1, "weak"), (2, "moderate"), (3, "moderately strong"), (4, "strong"),
                (6, "very strong"), (np.inf, "extremely strong"))  # upper |log10 LR|: support
NO_LR = ("no likelihood ratio: this model card holds no calibrator for one (exported before "
         "they were fitted). A score says which writer is closest, not how strong the "
         "evidence is; export the run again to get them.")
NO_LR_WITHOUT_MODEL = ("no likelihood ratio: they are calibrated when a model is exported, and "
                       "this gallery answers without one. A score says which writer is "
                       "closest, not how strong the evidence is; enrol and identify with "
                       "--model EXPORT to get them.")


def searched(result: dict, writers: int) -> str:
    """What to read beside the closest writer's LR where `identify` answered "unknown
    writer" yet that LR supports the same writer: it weighs one comparison, and the
    closest of many writers is the highest of many scores, which the unknown-writer
    threshold allows for (it rises with the gallery's size) and the LR does not
    (docs/results.md, the likelihood ratios of unknown writers). Empty otherwise."""
    best = result["top"][0] if result["top"] else {}
    if result["writer"] is not None or writers < 2 or "log10_lr" not in best \
            or best["log10_lr"][result["score"]] <= 0:
        return ""
    return (f"; the LR weighs one comparison, and the closest of {writers} writers searched "
            "scores high by chance: the unknown-writer threshold allows for that, the LR "
            "does not")


def alike_words(pair: dict, score: str) -> str:
    """One writer of `Identifier.alike` or `Identifier.in_cohort` in words, as the command
    line and the reports say it."""
    cohort = pair.get("in_cohort")
    other = (f"training writer {pair['reads_as']}'s, of the model's cohort" if cohort
             else f"{pair['reads_as']}'s")
    taken = ("" if not cohort else
             "; enrolled under that label, so taken as that writer" if pair["taken_without"]
             else "; enrolled under another name")
    verb, scored_by = _reading(pair, score)
    return (f"{pair['writer']}'s enrolled handwriting {verb} {other} ({scored_by} "
            f"{pair['score']:.3f}, {'under ' if verb != 'reads as' else ''}a document's "
            f"threshold {pair['threshold']:.3f}"
            + (f"; log10 LR {pair['log10_lr']:+.2f}{lr_lines_words(pair.get('lr_lines'))}"
               if "log10_lr" in pair else "") + ")"
            + (f", and {pair['reads_as']}'s as its" if pair.get("both_ways") else "")
            + taken)


def _reading(pair: dict, score: str) -> tuple[str, str]:
    """(how an `alike` or `in_cohort` entry relates its writer to the other, the score it
    was decided by): the cohort is always asked by the fused score, and a label is taken
    under the threshold where its writer is the closest and the LR supports it
    (`cohort_hands`)."""
    verb = "comes closest to" if pair["score"] < pair["threshold"] else "reads as"
    return verb, "fused" if pair.get("in_cohort") else score


# identify and verify on development writers enrolled from a few lines of a form, not the
# form (docs/results.md, "Writers enrolled from a few lines"): below 6, more than a form's
# share of their genuine queries was answered unknown, or "different writers"
FEW_LINES = 6
SAME_IMAGE = ("a and b are one image (the same content): any handwriting matches itself, "
              "so the answer says nothing of its writer. Compare with other handwriting of "
              "the known writer")


def first_five(names: list[str]) -> str:
    """Up to five names of a list that a note names, and "..." for the rest."""
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def few_b_words(lines: int, lr_fitted: bool = False, rule_fitted: bool = False,
                rates_fitted: bool = False) -> str:
    """That verify's b holds fewer than `FEW_LINES` lines, while its rule's rates (unless
    `rates_fitted`: cards before rates of their own for a b of few lines; and, unless
    `lr_fitted`, its LR: cards before LRs of their own; unless `rule_fitted`, its rule:
    cards before rules of their own) were measured with a form as b, and what that did on
    development writers."""
    if rates_fitted:
        return (f"b holds {lines} line(s) of handwriting: the rule, its stated rates and the "
                "likelihood ratio are the ones fitted for a b of so few lines, but so little "
                "handwriting tells writers apart less often: on development writers never "
                "trained on, b of 1, 2 or 4 lines turned 12%, 5% and 2% of same-writer lines "
                "into \"different writers\" (a form: 0.6%). Give b as a page where there is "
                "one")
    if rule_fitted:
        return (f"b holds {lines} line(s) of handwriting: the rule and the likelihood ratio "
                f"are the ones fitted for a b of so few lines, but the rule's stated rates "
                "were measured with a writer's form (a page's lines) as b: on development "
                "writers never trained on, b of 1, 2 or 4 lines turned 12%, 5% and 2% of "
                "same-writer lines into \"different writers\" (a form: 0.6%), and said \"same "
                "writer\" of 0.9% of different-writer pairs. Give b as a page where there is "
                "one")
    if lr_fitted:
        return (f"b holds {lines} line(s) of handwriting: the likelihood ratio is the one "
                f"calibrated for a b of {lines} line(s), but the rule's rates were measured "
                "with a writer's form (a page's lines) as b: on development writers never "
                "trained on, b of 1, 2 or 4 lines turned 35%, 11% and 3% of same-writer pairs "
                "into \"different writers\" (a form: 0.6%). A \"different writers\" answer "
                "weighs little; give b as a page")
    return (f"b holds {lines} line(s) of handwriting, and the rule's rates and the likelihood "
            "ratio were measured with a writer's form (a page's lines) as b: on development "
            "writers never trained on, b of 1, 2 or 4 lines turned 35%, 11% and 3% of "
            "same-writer pairs into \"different writers\" (a form: 0.6%) and gave 38%, 13% "
            "and 4% of them a likelihood ratio below 1; at one line, 11% below 1/100, a "
            "likelihood ratio that misleads strongly. A \"different writers\" answer or a "
            "low likelihood ratio weighs little; give b as a page (or export the model again: "
            "exports since 2026-12-07 calibrate a b of 1 to 3 lines)")


def b_fitted(result: dict) -> dict[str, bool]:
    """What a verify `result` weighed its b of few lines by (`few_b_words`): an LR, a rule
    and that rule's rates fitted for so few lines."""
    return {"lr_fitted": "lr_lines" in result, "rule_fitted": "rule_lines" in result,
            "rates_fitted": "enrolled_lines" in result.get("rule_rates", {})}


def few_lines_words(few: dict[str, int], gallery: str | Path, closest: int = 0,
                    lr_fitted: bool = False, rule_fitted: bool = False,
                    rates_fitted: bool = False) -> str:
    """That writers ({writer: lines}) are enrolled from fewer than `FEW_LINES` lines of
    handwriting (given `closest`: each the closest writer of so many answers), what that did
    on development writers, and the fix. `lr_fitted`: the card weighs such writers by LRs
    of their own (1 to 3 lines; from 4 the form's weighed them as well: docs/results.md,
    LRs for a b of a few lines); `rule_fitted`: and by an unknown-writer rule of their own
    (1 to 5 lines; docs/results.md, a rule of its own for writers enrolled from 1 to 5
    lines); `rates_fitted`: and states that rule's rates, measured at export with writers
    enrolled from so few (`identify.measured_rates`)."""
    named = first_five([f"{w}: {n}" for w, n in few.items()])
    who = (f"{closest} answer(s) came closest to a writer enrolled" if closest
           else f"{len(few)} writer(s) enrolled")
    if rates_fitted:
        return (f"{who} from fewer than {FEW_LINES} lines of handwriting ({named}): the "
                "unknown-writer rule, the rates it states and the likelihood ratios are the "
                "ones fitted for so few lines, but so little handwriting is named less often: "
                "on development writers enrolled from 1, 2 or 4 lines, identify answered "
                "\"unknown writer\" to 53%, 32% and 15% of their genuine lines (enrolled from "
                "a form: 5%). Over four development folds the rule for 1 to 3 lines accepted "
                "1.1-1.5% of strangers' lines (up to 2.8% on one), within the 95% intervals its "
                "stated rates give but above their point. Enrol a page of each "
                f"(`iam-writers enroll {gallery} --writer WRITER PAGE` adds it)")
    if rule_fitted:
        return (f"{who} from fewer than {FEW_LINES} lines of handwriting ({named}): the "
                "unknown-writer rule and the likelihood ratios are fitted for so few lines, "
                "but the rule's stated rates were measured on writers enrolled from a form. On "
                "development writers enrolled from 1, 2 or 4 lines, identify still answered "
                "\"unknown writer\" to 53%, 32% and 15% of their genuine lines (enrolled from "
                "a form: 5%), accepting 0.6-1.4% of strangers' lines. Enrol a page of each "
                f"(`iam-writers enroll {gallery} --writer WRITER PAGE` adds it)")
    set_on = ("the unknown-writer rule was set on writers enrolled from a form (a page's "
              "lines, 9 on the median development form; the likelihood ratios are calibrated "
              "for so few lines)" if lr_fitted else
              "the unknown-writer rule and the likelihood ratios were set on writers enrolled "
              "from a form (a page's lines, 9 on the median development form)")
    return (f"{who} from fewer than {FEW_LINES} lines of handwriting ({named}): {set_on}. On "
            "development writers enrolled from 1, 2 or 4 lines, strangers were still refused, "
            "but identify answered \"unknown writer\" to 53%, 33% and 15% of their genuine "
            "lines (enrolled from a form: 5%)"
            + (", and their likelihood ratios weigh short" if closest and not lr_fitted
               else "")
            + f". Enrol a page of each (`iam-writers enroll {gallery} --writer WRITER PAGE` "
            "adds it; or export the model again: new exports fit a rule for so few lines)")


def lr_lines_words(lines: int | None) -> str:
    """That a candidate's (or b's) LR was fitted for references of so few lines
    (`lr_lines`), to follow its LR; nothing for the form's."""
    return "" if lines is None else f", LR fitted for {_lines(lines)}"


def lrs_by_lines_words(top: list[dict]) -> str:
    """Where identify's candidates are weighed by different calibrators (some enrolled from
    1-3 lines: `lr_lines`), that their LRs need not fall with the rank; else nothing."""
    if len({t.get("lr_lines") for t in top if "log10_lr" in t}) < 2:
        return ""
    return ("the candidates enrolled from 1-3 lines are weighed by likelihood ratios fitted "
            "for references of so few lines, the others by a form's: a score means more from "
            "a page than from a line, so their LRs need not fall with the rank, which is by "
            "score")


def enrolled_words(enrolled: dict[str, str]) -> str:
    """In words, that a query is an enrolled image (`Identifier.enrolled_as`)."""
    return (f"the same image as {enrolled['writer']}'s enrolled {enrolled['path']}: it names "
            "its own enrolment, which says nothing of its writer; ask about handwriting that "
            "is not enrolled")


def cohort_words(hand: dict, score: str, gallery: str | Path) -> str:
    """One writer of `Identifier.in_cohort` in words (`alike_words`), and what follows."""
    return f"{alike_words(hand, score)}. {cohort_consequence(hand, gallery)}"


def cohort_consequence(hand: dict, gallery: str | Path) -> str:
    """What follows from an enrolled writer's handwriting reading as a cohort writer's."""
    if hand["taken_without"]:
        return ("Its scores leave that writer out of the cohort they are measured against. "
                f"{COHORT_TRAINED}")
    return ("If they are one person, the model was trained on this handwriting, and its "
            "scores are measured against its own hand (a quarter of such writers' lines "
            "answered \"unknown\" on IAM): `iam-writers gallery rename "
            f"{gallery} {hand['writer']} {hand['reads_as']}` takes it as that writer")


# what holds for every writer taken as a training writer of the model's cohort
COHORT_TRAINED = ("The model was trained on that handwriting: its calibrated rates are for "
                  "writers it was not")


def verbal(log10_lr: float) -> str:
    """A log10 LR in words: the support it gives to one writer hypothesis over the other,
    on the scale of ENFSI's guideline for evaluative reporting (LR 1-10 weak, 10-100
    moderate, 100-1,000 moderately strong, 1,000-10,000 strong, up to a million very strong,
    beyond it extremely strong)."""
    if log10_lr == 0:
        return "no support for either hypothesis (LR 1)"
    words = next(w for upper, w in VERBAL_SCALE if abs(log10_lr) < upper)
    side = "the same writer" if log10_lr > 0 else "different writers"
    return f"{words} support for {side}"


def transformed(score, transform: str | None):
    """A score as its likelihood-ratio calibration reads it: as given, or for
    `log_distance`, 1 - score (a distance d) as -log d."""
    if transform is None:
        return score
    if transform == "log_distance":
        return -np.log(np.maximum(1 - np.asarray(score, np.float64), 1e-9))
    raise ValueError(f"unknown score transform {transform!r}: this runtime is older than the "
                     "export. Upgrade iam-writers.")


class LikelihoodRatio:
    """The calibrated log10 LR of one score for one kind of query: a monotone table of
    (score, log10 LR) knots, read by linear interpolation and held at its bounds, which
    are no more extreme than the calibration comparisons support."""

    def __init__(self, table: dict):
        self.table = table
        self.score = np.asarray(table["score"], np.float64)
        self.log10_lr = np.asarray(table["log10_lr"], np.float64)
        if len(self.score) < 2 or np.any(np.diff(self.score) <= 0) or \
                np.any(np.diff(self.log10_lr) < 0):
            raise ValueError("a likelihood-ratio table needs rising scores and log10 LRs")

    def __call__(self, score):
        return np.interp(transformed(score, self.table.get("transform")), self.score,
                         self.log10_lr)

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.log10_lr[0]), float(self.log10_lr[-1])

    def support(self, score: float) -> str:
        """`verbal` of a score's log10 LR, saying so where it is held at a bound: beyond it
        a higher score is weighed no higher, so two writers there share one LR and only
        their scores tell them apart (docs/results.md, the LR's bound)."""
        value = float(self(score))
        low, high = self.bounds
        if value > 0 and value >= high:
            return f"{verbal(value)}, at the bound of its calibration (a higher score is " \
                   "weighed no higher)"
        if value < 0 and value <= low:
            return f"{verbal(value)}, at the bound of its calibration (a lower score is " \
                   "weighed no lower)"
        return verbal(value)

    @classmethod
    def of(cls, card: dict | None, level: str, score: str, lines: int | None = None
           ) -> LikelihoodRatio | None:
        """The card's identification calibrator (`verify` too weighs a pair as the
        identification of a against b enrolled alone) of a kind of query and a score; for a
        reference (b, or an enrolled writer) of `lines` lines, the one fitted with
        references of so many where the card has it (cards before them: the form's, which
        weighs a line's scores wrong: docs/results.md, LRs for a b of a few lines); None
        when the card holds none."""
        lrs = (card or {}).get("likelihood_ratio", {})
        fitted = lrs.get("identification_by_lines", {}).get(str(lines))
        table = (fitted or lrs.get("identification", {})).get(level, {}).get(score)
        return cls(table) if table else None

    @staticmethod
    def fitted_lines(card: dict | None) -> list[int]:
        """The reference sizes in lines the card fitted calibrators of their own for."""
        return sorted(map(int, (card or {}).get("likelihood_ratio", {})
                          .get("identification_by_lines", {})))


# Thumbnails are drawn at one scale, a third of the 300 dpi every image is read at, so that
# a query and the enrolled handwriting show their sizes side by side (size is a trait of
# the writer); the PNG declares it. An x-height of 10-15 px stays legible.
THUMB_DPI = 100
THUMB_MAX_WIDTH = 1200  # px: an image wider than 12 inches is drawn smaller (and says so)
LINE_COLOUR = (0, 90, 230)  # BGR: the outline of a line found on a page
OUTLINE_GAP = 3  # px between a line's ink and its outline, which would hide its first letter
PAGE_GAP = 12  # px between a document's pages drawn one under another, a grey rule across
PAGE_RULE = (160, 160, 160)  # BGR


def thumbnail(images: list[np.ndarray], lines: list[list[pages.Line] | None] | None = None
              ) -> bytes:
    """A PNG of an image's pages (grey, at 300 dpi; a PDF's or a TIFF's one under another)
    drawn at THUMB_DPI (declared in the file), each with the handwritten text `lines` found
    on it outlined just outside their ink (printed ones, left out, are not)."""
    scale = min(THUMB_DPI / SCAN_DPI, THUMB_MAX_WIDTH / max(i.shape[1] for i in images))
    drawn = [_drawn(image, found, scale)
             for image, found in zip(images, lines or [None] * len(images))]
    if len(drawn) > 1:
        width = max(d.shape[1] for d in drawn)
        rule = np.full((PAGE_GAP, width, 3), 255, np.uint8)
        rule[PAGE_GAP // 2] = PAGE_RULE
        widened = [np.pad(d if d.ndim == 3 else cv2.cvtColor(d, cv2.COLOR_GRAY2BGR),
                          [(0, 0), (0, width - d.shape[1]), (0, 0)], constant_values=255)
                   for d in drawn]
        drawn = [part for page in widened for part in (rule, page)][1:]
    ok, png = cv2.imencode(".png", np.vstack(drawn), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return png_with_dpi(png.tobytes(), SCAN_DPI * scale)


def _drawn(image: np.ndarray, lines: list[pages.Line] | None, scale: float) -> np.ndarray:
    """One page of a `thumbnail`: grey, or colour with its handwritten lines outlined."""
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if not lines:
        return small
    small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    for x0, y0, x1, y1 in (line.box for line in pages.handwritten(lines)):
        cv2.rectangle(small, (int(x0 * scale) - OUTLINE_GAP, int(y0 * scale) - OUTLINE_GAP),
                      (int(x1 * scale) + OUTLINE_GAP, int(y1 * scale) + OUTLINE_GAP),
                      LINE_COLOUR, 2)
    return small


def _img(png: bytes, alt: str, css: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img class="{css}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def read_words(read: Callable[[str], int | str | None], which: str = "", drawn: bool = False
               ) -> str:
    """How an image was read, from a result's "lines", "printed", "pages", "blank_pages",
    "paper" and "unmeasured" of it (`read`): ` (page: 9 lines, 2 printed left out)`, ` (a, 3
    pages: 27 lines, 1 blank left out)`, ` (page: 8 lines, a photo, straightened onto A4
    paper)`, ` (line: a photo (Apple iPhone 13) with no sheet found, read as if at 300
    dpi)`; nothing for a line read as a line. `drawn`: beside its thumbnail, which outlines
    the lines found and not the printed ones (` (page: 9 lines, outlined; 2 printed left
    out, not outlined)`)."""
    lines, printed, pages_read, blank, paper, camera = map(
        read, ("lines", "printed", "pages", "blank_pages", "paper", "unmeasured"))
    said = ([f"{lines} lines" + (", outlined" if drawn else "")] if lines is not None else []) + (
        [f"{printed} printed left out" + (", not outlined" if drawn else "")] if printed
        else []) + ([f"{blank} blank left out"] if blank else []) + (
        [f"a photo, straightened onto {paper} paper"] if paper else []) + (
        [f"a photo ({camera}) with no sheet found, read as if at 300 dpi"] if camera else [])
    listed = ("; " if drawn else ", ").join(said)
    if pages_read:
        return f" ({which + ', ' if which else ''}{pages_read} pages{': ' if said else ''}{listed})"
    kind = "page" if lines is not None else "line"
    return f" ({kind}{' ' + which if which else ''}: {listed})" if said else ""


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #bbb; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { border: 1px solid #ccc; display: block; margin: 0.2em 0; max-width: 100%; }
img.enrolled { max-width: 320px; }
.side { display: flex; gap: 1.5em; align-items: flex-start; width: max-content; }
.side > div { display: flex; flex-direction: column; } .side img { max-width: none; }
.answer { font-size: 1.1em; } .unknown { color: #a40; } .note { color: #555; font-size: 0.9em; }
"""


def _page(title: str, body: list[str]) -> str:
    when = utc_now()
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"note\">Written {when} by iam-writers. "
            "Every image is embedded in this file; it opens offline.</p>"
            + "".join(body) + "</body></html>\n")


SCORE_WORDS = {
    "embedding": "cosine similarity of the model's embeddings (1: the same)",
    "hinge": "1 - chi-square distance of contour-hinge histograms (1: the same)",
    "vlad": "cosine similarity of RootSIFT + VLAD vectors of local handwriting features (1: "
            "the same)",
    "fused": "the others standardised and weighted as calibrated at export (0: typical of "
             "different writers)",
}
PLOT_W, PLOT_H = 420, 110  # px of a score plot
SAME_COLOUR, OTHER_COLOUR, MARK_COLOUR = "#2563c9", "#c2410c", "#111"


def scale_words() -> str:
    """The verbal scale, as the report states it."""
    lower = 0
    rows = []
    for upper, words in VERBAL_SCALE:
        span = f"beyond 10^{lower}" if upper == np.inf else f"10^{lower} to 10^{upper}"
        rows.append(f"{span}: {words} support")
        lower = upper
    return ("log10 LR is the calibrated log10 likelihood ratio: how much more probable the "
            "score is if the candidate wrote the query than if someone else did (negative: "
            "the other way round). In words, by the size of the LR (or of 1/LR): "
            + "; ".join(rows) + ".")


def score_plot(histogram: dict, marks: list[tuple[str, float]], score: str,
               threshold: float) -> str:
    """An inline SVG: the calibration's same-writer and different-writer scores as two
    histograms (each scaled to its own peak), where `marks` (label, score) fall, and the
    threshold (dashed)."""
    edges = np.asarray(histogram["edges"], float)
    lo, hi = edges[0], edges[-1]
    x = lambda v: 10 + (min(max(v, lo), hi) - lo) / (hi - lo) * (PLOT_W - 20)  # noqa: E731
    parts = []
    for kind, colour in (("different", OTHER_COLOUR), ("same", SAME_COLOUR)):
        counts = np.asarray(histogram[kind], float)
        height = counts / max(counts.max(), 1) * (PLOT_H - 40)
        parts += [f'<rect x="{x(a):.1f}" y="{PLOT_H - 25 - h:.1f}" width="{x(b) - x(a):.1f}" '
                  f'height="{h:.1f}" fill="{colour}" fill-opacity="0.45"/>'
                  for a, b, h in zip(edges[:-1], edges[1:], height) if h > 0]
    parts.append(f'<line x1="{x(threshold):.1f}" x2="{x(threshold):.1f}" y1="20" '
                 f'y2="{PLOT_H - 25}" stroke="#666" stroke-dasharray="4 3"/>')
    for label, value in marks:
        parts.append(f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="12" '
                     f'y2="{PLOT_H - 25}" stroke="{MARK_COLOUR}" stroke-width="2"/>'
                     f'<text x="{x(value):.1f}" y="10" font-size="10" text-anchor="middle">'
                     f'{html.escape(label)}</text>')
    parts.append(f'<line x1="10" x2="{PLOT_W - 10}" y1="{PLOT_H - 25}" y2="{PLOT_H - 25}" '
                 'stroke="#888"/>'
                 f'<text x="10" y="{PLOT_H - 12}" font-size="10">{lo:.2f}</text>'
                 f'<text x="{PLOT_W - 10}" y="{PLOT_H - 12}" font-size="10" '
                 f'text-anchor="end">{hi:.2f}</text>'
                 f'<text x="{PLOT_W / 2}" y="{PLOT_H - 2}" font-size="10" text-anchor="middle">'
                 f'{html.escape(score)} score: <tspan fill="{SAME_COLOUR}">same writer</tspan>'
                 f' and <tspan fill="{OTHER_COLOUR}">different writers</tspan> at calibration;'
                 ' dashed: the threshold</text>')
    return (f'<svg class="plot" role="img" width="{PLOT_W}" height="{PLOT_H}" '
            f'viewBox="0 0 {PLOT_W} {PLOT_H}"><title>where the query\'s score falls among the '
            f'calibration scores</title>{"".join(parts)}</svg>')


def _calibrated_on(card: dict | None) -> str:
    lr = (card or {}).get("likelihood_ratio")
    if not lr:
        return ""
    return (f"Likelihood ratios were fitted at export on {html.escape(lr['source'])}"
            f"{': ' + ', '.join(map(html.escape, lr['writers'])) if lr['writers'] else ''}; "
            f"{html.escape(lr['method'])}. ")


def _resampled(dpi: float | None, photographed: bool = False) -> str:
    """How an image's resolution was met, for the record: nothing at 300 dpi (None); a
    photographed sheet's is measured on the sheet."""
    if dpi is None:
        return ""
    return f" ({'photographed' if photographed else 'scanned'} at {dpi:.0f} dpi" \
           f"{' on the sheet' if photographed else ''}, resampled to {SCAN_DPI})"


def rule_rates_words(rates: dict, level: str) -> str:
    """What the unknown-writer rule gave at export on the calibration queries of a query's
    kind (`identify.measured_rates`), with the 95% intervals that say how far those few
    queries pin the rates down (cards exported before them have none), and how many forms
    and writers the queries came from where the intervals allow for it (cards exported
    before writers were counted allow for forms)."""
    kind = "lines" if level == "line" else "documents"
    n = rates["n_queries"]
    return (f"At calibration, in a gallery of {rates['gallery']} writers"
            f"{_each_enrolled(rates)}, this rule accepted "
            f"{round(rates['far'] * n)} of {n} strangers' {kind} ({_rate_words(rates, 'far')}) "
            f"and answered {round(rates['frr'] * n)} of {n} genuine {kind} unknown "
            f"({_rate_words(rates, 'frr')}){_came_from(rates, kind, n)}")


def verify_rates_words(rates: dict, level: str) -> str:
    """What `verify`'s rule gave at export on every pair of a calibration query of a
    query's kind and a calibration writer enrolled alone (`identify.measured_rates` with
    `pairs`), with the 95% intervals, and how many forms and writers the queries came from
    (a card's verify rates have always counted them)."""
    kind = "lines" if level == "line" else "documents"
    different, same = rates["different_pairs"], rates["same_pairs"]
    writers = f"{rates['writers']} writers"
    return ("At calibration, with one writer at a time enrolled from "
            + (f"{_lines(lines)} of a form (as b is here)"
               if (lines := rates.get("enrolled_lines")) else
               "a form's lines (as b best is: a page)")
            + f", this rule said \"same writer\" of "
            f"{round(rates['far'] * different)} of {different} pairs of different writers "
            f"({_rate_words(rates, 'far')}) and \"different writers\" of "
            f"{round(rates['frr'] * same)} of {same} pairs of one writer "
            f"({_rate_words(rates, 'frr')}); the {same} {kind} asked came from "
            + (f"{rates['forms']} forms of {writers}" if kind == "lines" else writers)
            + ", and the intervals allow for the pairs of one writer, asked or enrolled, "
            "erring together.")


def _each_enrolled(rates: dict) -> str:
    """How the writers of a rule's calibration gallery were enrolled, where from so few
    lines (`enrolled_lines`); nothing for the form's rule."""
    lines = rates.get("enrolled_lines")
    return f" each enrolled from {_lines(lines)} of a form" if lines else ""


def _lines(n: int) -> str:
    return f"{n} line{'s' * (n > 1)}"


def _rate_words(rates: dict, name: str) -> str:
    bounds = rates.get(f"{name}_95")
    return f"{rates[name]:.1%}" + (f"; 95% interval {bounds[0]:.1%} to {bounds[1]:.1%}"
                                    if bounds else "")


def rate_brief(rates: dict, name: str) -> str:
    """A measured rate (`export`'s `_rate`) with its 95% interval in a table's or the
    console's few characters: "1.2% (0.3%-4.4%)"."""
    low, high = rates[f"{name}_95"]
    return f"{rates[name]:.1%} ({low:.1%}-{high:.1%})"


def _came_from(rates: dict, kind: str, n: int) -> str:
    """How the intervals of rates over `n` queries of a `kind` allow for queries erring
    together: the forms and writers they came from (or forms alone on older cards)."""
    forms, writers = rates.get("forms", n), rates.get("writers")
    if writers is None:  # exported before writers were counted: its intervals allow for forms
        together = forms < n and (f"{forms} forms", "the lines of one form")
    else:
        together = writers < n and (f"{forms} forms of {writers} writers" if kind == "lines"
                                    else f"{writers} writers", f"one writer's {kind}")
    return (f"; the {n} {kind} came from {together[0]}, and the intervals allow for "
            f"{together[1]} erring together." if together else ".")


def _threshold_words(result: dict) -> str:
    """How an identification's best score met its threshold, the lead over the second
    writer counted where it was (`Identifier.thresholds`)."""
    if (rule := result.get("lead_rule")) is None:
        return f"the threshold is {result['threshold']:.3f}"
    best = result["top"][0]["similarity"]
    lead = best - rule["second"]
    return (f"{lead:.3f} ahead of the next writer: {best:.3f} + {rule['weight']:g} &times; "
            f"{lead:.3f} = {best + rule['weight'] * lead:.3f} against the threshold "
            f"{rule['threshold']:.3f}")


SideImage = tuple[bytes, str, str]  # (PNG thumbnail, alt text, caption HTML)


def side_by_side(columns: list[tuple[str, str, list[SideImage]]]) -> str:
    """Columns of thumbnails (each: heading, CSS class, images) next to each other at their
    own size, and whether their sizes compare: they do when two columns or more have one
    and every thumbnail declares the same resolution (galleries enrolled before thumbnails
    were drawn to scale do not; those enrolled before they were kept have none)."""
    scales = {declared_dpi(png) for *_, images in columns for png, _, _ in images}
    scale = next(iter(scales)) if len(scales) == 1 else None
    if sum(bool(images) for *_, images in columns) < 2:
        note = ("One side alone is drawn (the other's images were enrolled before thumbnails "
                "were kept; `gallery rebuild` draws them): the handwriting's size is not "
                "compared.")
    elif scale:
        note = f"Drawn at one scale ({scale:.0f} dpi): the handwriting's size compares."
    else:
        note = ("Not drawn at one scale (thumbnails enrolled by an older version; `gallery "
                "rebuild` draws them again): the handwriting's size does not compare.")
    cells = "".join(
        f"<div><b>{html.escape(heading)}</b>"
        + "".join(_img(png, alt, css) + f"<p class=\"note\">{caption}</p>"
                  for png, alt, caption in images) + "</div>"
        for heading, css, images in columns)
    return f"<div class=\"side\">{cells}</div><p class=\"note\">{note}</p>"


def identify_report(path: str | Path, results: list[dict], identifier,
                    drawn: dict[str, bytes]) -> Path:
    """Write the HTML report of `identify` results: for each query, its image (`drawn`, each
    query image's `thumbnail` by its path, as `Identifier.rank` draws them: a page with its
    lines outlined) beside the closest writer's first enrolled image, the answer, and the
    top writers with each score, the log10 LR and its words, and thumbnails of their
    enrolled handwriting; and a plot of where the top writers' scores fall among those
    measured at calibration. An image not read (`Identifier.rank_each`'s "error", `rank`'s
    "skipped") is named with the reason; at least one query must have been read."""
    gallery = identifier.gallery
    card = identifier.model.card if identifier.model else None
    first = next(r for r in results if "error" not in r)
    calibrated = "log10_lr" in first["top"][0]
    body = [f"<p>Gallery <code>{html.escape(str(gallery.path))}</code>: "
            f"{len(identifier.writers)} writers, built by {html.escape(gallery.built_by)}. "
            f"Answers by the <b>{identifier.score}</b> score.</p><ul>"
            + "".join(f"<li><b>{k}</b>: {html.escape(v)}</li>" for k, v in SCORE_WORDS.items()
                      if k in first["top"][0]["scores"])
            + "</ul>"
            + (f"<p class=\"note\">{_calibrated_on(card)}{html.escape(scale_words())}</p>"
               if calibrated else f"<p class=\"note\">{html.escape(first['note'])}</p>")]
    thumbs: dict[str, list[tuple[str, bytes]]] = {}
    for n, r in enumerate(results, 1):
        if "error" in r:
            body.append(f"<section class=\"query\" id=\"query-{n}\"><h2>Query {n}</h2>"
                        f"<p class=\"unknown\">Not read: {html.escape(r['error'])}</p>"
                        "</section>")
            continue
        best = r["top"][0]
        for t in r["top"]:
            if t["writer"] not in thumbs:
                thumbs[t["writer"]] = gallery.thumbnails(t["writer"])
        query = [(drawn[p], f"query {n}: {p}",
                  html.escape(p + read_words(lambda k, p=p, r=r: r.get(k, {}).get(p), drawn=True))
                  + _resampled(r.get("dpi", {}).get(p), p in r.get("paper", {})))
                 for p in r["images"]]
        enrolled = [(png, f"{best['writer']}: {p}", html.escape(p))
                    for p, png in thumbs[best["writer"]][:1]]
        images = side_by_side(
            [("The query", "query", query)]
            + ([(f"{best['writer']}'s enrolled handwriting"
                 + ("" if r["writer"] else " (the closest writer, not accepted)"),
                 "closest", enrolled)] if enrolled else []))
        answer = (f"<span class=\"answer\">Closest writer: <b>{html.escape(r['writer'])}</b>"
                  if r["writer"] else "<span class=\"answer unknown\">Unknown writer")
        answer += f" ({r['score']} {best['similarity']:.3f}, {_threshold_words(r)})</span>"
        if rates := r.get("rule_rates"):
            answer += f"<br>{html.escape(rule_rates_words(rates, r['level']))}"
        if skipped := r.get("skipped"):
            answer += ("<br>Left out of the query, not read: "
                       + "; ".join(html.escape(why) for why in skipped.values()) + ".")
        if calibrated:
            answer += (f"<br>For {html.escape(best['writer'])}: log10 LR "
                       f"{best['log10_lr'][r['score']]:+.2f}, {html.escape(best['support'])} "
                       f"(a {r['level']}){html.escape(searched(r, len(identifier.writers)))}.")
        for pair in r.get("alike", []):
            # element text, not an attribute: quotes need no escaping
            other = pair["reads_as"] if pair["writer"] == r["writer"] else pair["writer"]
            answer += (f"<br>But {html.escape(alike_words(pair, r['score']), quote=False)}"
                       f": the query may be {html.escape(other)}'s, or the two one writer.")
        if "in_cohort" in r:
            words = cohort_words(r["in_cohort"], r["score"], identifier.gallery.path)
            answer += f"<br>Note: {html.escape(words, quote=False)}."
        if few := r.get("few_lines"):
            words = few_lines_words({few["writer"]: few["lines"]}, identifier.gallery.path, 1,
                                    **identifier.fitted_for_few())
            answer += f"<br>Note: {html.escape(words, quote=False)}."
        for image, enrolled in r.get("enrolled", {}).items():
            answer += (f"<br>Note: {html.escape(image)} is "
                       f"{html.escape(enrolled_words(enrolled), quote=False)}.")
        kinds = list(best["scores"])
        rows = []
        for rank, t in enumerate(r["top"], 1):
            shown = "".join(_img(png, f"{t['writer']}: {p}", "enrolled")
                            for p, png in thumbs[t["writer"]]) or \
                "<span class=\"note\">no thumbnail stored</span>"
            lr = (f"<td class=\"num\">{t['log10_lr'][r['score']]:+.2f}</td>"
                  f"<td>{html.escape(t['support'] + lr_lines_words(t.get('lr_lines')))}</td>"
                  if calibrated else "")
            rows.append(f"<tr><td class=\"num\">{rank}</td><td>{html.escape(t['writer'])}</td>"
                        + "".join(f"<td class=\"num\">{t['scores'][k]:.3f}</td>" for k in kinds)
                        + f"{lr}<td>{shown}</td></tr>")
        lr_table = (identifier.likelihood_of(r["level"], r["score"], best.get("lr_lines"))
                    if calibrated else None)
        plot = (score_plot(lr_table.table["histogram"],
                           [(f"#{i}", t["similarity"]) for i, t in enumerate(r["top"][:3], 1)
                            if t.get("lr_lines") == best.get("lr_lines")],  # its calibrator's
                           r["score"], r["threshold"]) if lr_table else "")
        body.append(f"<section class=\"query\" id=\"query-{n}\"><h2>Query {n}</h2>{images}"
                    f"<p>{answer}</p>{plot}<table><tr><th>rank</th><th>writer</th>"
                    + "".join(f"<th>{k}</th>" for k in kinds)
                    + (f"<th>log10 LR ({r['score']})</th><th>in words</th>" if calibrated
                       else "")
                    + "<th>enrolled handwriting</th></tr>" + "".join(rows)
                    + "</table>" + (f"<p class=\"note\">Note: {words}.</p>"
                                    if (words := lrs_by_lines_words(r["top"])) else "")
                    + "</section>")
    body.append(provenance(identifier.model, gallery, {
        name: digest for r in results for name, digest in r.get("sha256", {}).items()}))
    return _write(path, _page("Whose handwriting is it? identify report", body))


def version() -> str:
    """iam-writers' installed version, or a word that it is run from a source tree."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("iam-writers")
    except PackageNotFoundError:
        return "not installed (run from a source tree)"


def provenance(model, gallery=None, files: dict[str, str] | None = None) -> str:
    """The report's last section: what weighed the handwriting (iam-writers' version, the
    model file and its fingerprint, the gallery and its latest change; absolute paths) and
    every file weighed with its SHA-256, so that a reader can tell that the files they hold
    are the ones weighed, and by what."""
    rows = [("iam-writers", version())]
    rows.append(("model", "none: contour-hinge histograms alone" if model is None else
                 f"{model.path.resolve() if model.path else 'in memory'} (fingerprint "
                 f"{model.card.get('fingerprint', 'none')})"))
    if gallery is not None:
        info = gallery.info()
        rows.append(("gallery", f"{gallery.path.resolve()}: {info['writers']} writers, built "
                                f"by {gallery.built_by}; last change {info['last_change']}"))
    rows += [(f"SHA-256 of {name}", digest) for name, digest in (files or {}).items()]
    return ("<section id=\"provenance\"><h2>Provenance</h2><table>"
            + "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(v)}</code></td>"
                      "</tr>" for k, v in rows) + "</table></section>")


def alike_report(path: str | Path, pairs: list[dict], identifier) -> Path:
    """Write the HTML report of `gallery alike`: for each writer whose enrolled handwriting
    reads as another's (`Identifier.alike`), both writers' enrolled handwriting side by
    side at one scale, with the score, the threshold and the log10 LR in words, so that a
    person can judge whether they are two hands or one; for each that reads as a training
    writer of the model's cohort (`Identifier.in_cohort`, no images of which ship), its
    own."""
    gallery = identifier.gallery
    body = [f"<p>Gallery <code>{html.escape(str(gallery.path))}</code>: "
            f"{len(identifier.writers)} writers, built by {html.escape(gallery.built_by)}. "
            "Each writer's enrolled handwriting was asked about as one document against the "
            f"others by the <b>{identifier.score}</b> score "
            f"({html.escape(SCORE_WORDS[identifier.score])}), "
            "at the document threshold of the gallery without it. Those named as another "
            "writer follow: a query that matches either may be the other's, and the two may "
            "be one person.</p>"]
    if not pairs:
        body.append("<p class=\"answer\">No writer's enrolled handwriting reads as another's."
                    "</p>")
    for n, pair in enumerate(pairs, 1):
        cohort = pair.get("in_cohort", False)
        columns = [(f"{w}'s enrolled handwriting", "query" if w == pair["writer"] else "closest",
                    [(png, f"{w}: {p}", html.escape(p)) for p, png in gallery.thumbnails(w)])
                   for w in (pair["writer"],) + (() if cohort else (pair["reads_as"],))]
        lr = (f"; log10 LR {pair['log10_lr']:+.2f}, {verbal(pair['log10_lr'])}"
              f"{lr_lines_words(pair.get('lr_lines'))}" if "log10_lr" in pair else "")
        other = (f"training writer {pair['reads_as']} of the model's cohort" if cohort
                 else pair["reads_as"])
        if cohort:
            lr += f". {cohort_consequence(pair, gallery.path)}"
        verb, scored_by = _reading(pair, identifier.score)
        body.append(f"<section class=\"query\" id=\"pair-{n}\"><h2>{html.escape(pair['writer'])} "
                    f"{verb} {html.escape(other)}</h2>{side_by_side(columns)}"
                    f"<p class=\"answer\">{scored_by} {pair['score']:.3f} against the "
                    f"threshold {pair['threshold']:.3f}{html.escape(lr)}.</p></section>")
    body.append(provenance(identifier.model, identifier.gallery))
    return _write(path, _page("Writers whose handwriting reads alike: gallery alike report",
                              body))


def _verify_side(result: dict, drawn: dict[str, bytes], k: str, heading: str
                 ) -> tuple[str, str, list[SideImage]]:
    """A column of verify's report: a's or b's thumbnail and how it was read (none for an
    enrolled writer whose images were enrolled before thumbnails were kept)."""
    if k not in drawn:
        return f"{heading}: no thumbnail stored", "query", []
    caption = (html.escape(result[k] + read_words(lambda f: result.get(f"{f}_{k}"), drawn=True))
               + _resampled(result.get(f"dpi_{k}"), bool(result.get(f"paper_{k}"))))
    return heading, "query", [(drawn[k], f"{k}: {result[k]}", caption)]


def verify_report(path: str | Path, result: dict, drawn: dict[str, bytes], model) -> Path:
    """Write the HTML report of `verify`: both images side by side (`drawn`, the `thumbnail`
    of "a" and of "b", as `verify` draws them; an enrolled writer's first stored one), the
    score, the threshold, the decision with
    the rates its rule gave at calibration where the card measured them, and
    the log10 LR in words with a plot of where the score falls among those measured at
    calibration."""
    verdict = "the same writer" if result["same_writer"] else "different writers"
    scored_by = result["scored_by"]
    card = model.card
    body = [side_by_side([_verify_side(result, drawn, "a", "a (questioned)"),
                          _verify_side(result, drawn, "b", "b (known)")]),
            f"<p class=\"answer\">Decision: <b>{verdict}</b>: {scored_by} {result['score']:.3f} "
            f"(threshold {result['threshold']:.3f}; {html.escape(SCORE_WORDS[scored_by])})"
            + (f"<br>{html.escape(verify_rates_words(rates, result['level']))}"
               if (rates := result.get("rule_rates")) else "") + "</p>"]
    if result.get("same_image"):
        body.append(f"<p class=\"answer\">Note: {html.escape(SAME_IMAGE)}.</p>")
    if lines := result.get("b_lines"):
        words = few_b_words(lines, **b_fitted(result))
        body.append(f"<p class=\"answer\">Note: {html.escape(words)}.</p>")
    lr = LikelihoodRatio.of(card, result["level"], scored_by, result.get("lr_lines"))
    if "log10_lr" in result and lr is not None:
        body.append(f"<p class=\"answer\">log10 LR {result['log10_lr']:+.2f}: "
                    f"{html.escape(result['support'])} (a {result['level']} against b).</p>"
                    + score_plot(lr.table["histogram"], [("this pair", result["score"])],
                                 scored_by, result["threshold"])
                    + f"<p class=\"note\">{_calibrated_on(card)}{html.escape(scale_words())}"
                    "</p>")
    else:
        body.append(f"<p class=\"note\">{html.escape(NO_LR)}</p>")
    known = result.get("b_enrolled")
    body.append(provenance(model, files={f"a: {result['a']}": result["sha256_a"]} | (
        {f"b: {known['writer']}'s enrolled {path}": digest
         for path, digest in known["images"].items()} if known
        else {f"b: {result['b']}": result["sha256_b"]})))
    return _write(path, _page("Same writer? verify report", body))


def _write(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, text)
    return path
