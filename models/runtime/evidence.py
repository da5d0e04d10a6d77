"""Evidence a person can check: the handwriting behind an answer, side by side.

`identify --report` and `verify --report` write one self-contained HTML file: every image
is embedded as a downscaled PNG (`thumbnail`), nothing is fetched from a network, and a
page's text lines are outlined where they were found. Galleries keep a thumbnail of every
enrolled image, so a report can show the enrolled handwriting after its files have moved.
"""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

import cv2
import numpy as np

from iam_writers_tfds import atomic
from models.runtime import pages

THUMB_WIDTH = 640  # px: a page stays legible, a line stays small (about 10 KB)
LINE_COLOUR = (0, 90, 230)  # BGR: the outline of a line found on a page


def thumbnail(image: np.ndarray, boxes: list[tuple[int, int, int, int]] | None = None,
              width: int = THUMB_WIDTH) -> bytes:
    """A PNG of a grey image scaled down to at most `width` px wide, with `boxes`
    (x0, y0, x1, y1 in the image's pixels) outlined."""
    scale = min(1.0, width / image.shape[1])
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) \
        if scale < 1 else image
    if boxes:
        small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
        for x0, y0, x1, y1 in boxes:
            cv2.rectangle(small, (int(x0 * scale), int(y0 * scale)),
                          (int(x1 * scale), int(y1 * scale)), LINE_COLOUR, 2)
    ok, png = cv2.imencode(".png", small, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return png.tobytes()


def _img(png: bytes, alt: str, css: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img class="{css}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def query_image(image: np.ndarray, input: str) -> bytes:
    """The thumbnail of a query: a page with its text lines outlined."""
    lines = pages.page_lines(image, input)
    return thumbnail(image, None if lines is None else [line.box for line in lines])


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #bbb; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { border: 1px solid #ccc; display: block; margin: 0.2em 0; max-width: 100%; }
img.enrolled { max-width: 320px; }
.answer { font-size: 1.1em; } .unknown { color: #a40; } .note { color: #555; font-size: 0.9em; }
"""


def _page(title: str, body: list[str]) -> str:
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"note\">Written {when} by iam-writers. "
            "Every image is embedded in this file; it opens offline.</p>"
            + "".join(body) + "</body></html>\n")


SCORE_WORDS = {
    "embedding": "cosine similarity of the model's embeddings (1: the same)",
    "hinge": "1 - chi-square distance of contour-hinge histograms (1: the same)",
    "fused": "the two standardised and weighted as calibrated at export (0: typical of "
             "different writers)",
}
NO_LR = ("No likelihood ratio is given: this model card holds no calibrator for one, so a "
         "score says which writer is closest, not how strong the evidence is.")


def identify_report(path: str | Path, results: list[dict], identifier, input: str) -> Path:
    """Write the HTML report of `identify` results: for each query, its image (a page with
    its lines outlined), the answer, and the top writers with each score and thumbnails of
    their enrolled handwriting."""
    from iam_writers_tfds.images import read_gray

    gallery = identifier.gallery
    body = [f"<p>Gallery <code>{html.escape(str(gallery.path))}</code>: "
            f"{len(identifier.writers)} writers, built by {html.escape(gallery.built_by)}. "
            f"Answers by the <b>{identifier.score}</b> score.</p><ul>"
            + "".join(f"<li><b>{k}</b>: {html.escape(v)}</li>" for k, v in SCORE_WORDS.items()
                      if k in results[0]["top"][0]["scores"])
            + f"</ul><p class=\"note\">{NO_LR}</p>"]
    thumbs: dict[str, list[tuple[str, bytes]]] = {}
    for n, r in enumerate(results, 1):
        images = "".join(
            _img(query_image(read_gray(p), input), f"query {n}: {p}", "query")
            + f"<p class=\"note\">{html.escape(p)}"
            + (f" (page: {r['lines'][p]} lines found, outlined)" if p in r.get("lines", {})
               else "") + "</p>"
            for p in r["images"])
        answer = (f"<span class=\"answer\">Closest writer: <b>{html.escape(r['writer'])}</b>"
                  if r["writer"] else "<span class=\"answer unknown\">Unknown writer")
        answer += (f" ({r['score']} {r['top'][0]['similarity']:.3f}; the threshold is "
                   f"{r['threshold']:.3f})</span>")
        kinds = list(r["top"][0]["scores"])
        rows = []
        for rank, t in enumerate(r["top"], 1):
            if t["writer"] not in thumbs:
                thumbs[t["writer"]] = gallery.thumbnails(t["writer"])
            shown = "".join(_img(png, f"{t['writer']}: {p}", "enrolled")
                            for p, png in thumbs[t["writer"]]) or \
                "<span class=\"note\">no thumbnail stored</span>"
            rows.append(f"<tr><td class=\"num\">{rank}</td><td>{html.escape(t['writer'])}</td>"
                        + "".join(f"<td class=\"num\">{t['scores'][k]:.3f}</td>" for k in kinds)
                        + f"<td>{shown}</td></tr>")
        body.append(f"<section class=\"query\" id=\"query-{n}\"><h2>Query {n}</h2>{images}"
                    f"<p>{answer}</p><table><tr><th>rank</th><th>writer</th>"
                    + "".join(f"<th>{k}</th>" for k in kinds)
                    + "<th>enrolled handwriting</th></tr>" + "".join(rows)
                    + "</table></section>")
    return _write(path, _page("Whose handwriting is it? identify report", body))


def verify_report(path: str | Path, result: dict, input: str) -> Path:
    """Write the HTML report of `verify`: both images side by side, the score, the
    threshold and the decision."""
    from iam_writers_tfds.images import read_gray

    cells = "".join(
        f"<td>{_img(query_image(read_gray(result[k]), input), f'{k}: {result[k]}', 'query')}"
        f"<p class=\"note\">{html.escape(result[k])}</p></td>" for k in ("a", "b"))
    verdict = "the same writer" if result["same_writer"] else "different writers"
    body = [f"<table><tr><th>a</th><th>b</th></tr><tr>{cells}</tr></table>",
            f"<p class=\"answer\">Decision: <b>{verdict}</b>: score {result['score']:.3f} "
            f"(threshold {result['threshold']:.3f}; {html.escape(SCORE_WORDS['embedding'])})"
            f"</p><p class=\"note\">{NO_LR}</p>"]
    return _write(path, _page("Same writer? verify report", body))


def _write(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, text)
    return path
