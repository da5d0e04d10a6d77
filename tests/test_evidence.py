"""The HTML reports of identify and verify: self-contained, complete, drawn by a browser."""

from __future__ import annotations

import base64
import hashlib
import html
import html.parser
import json
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np
import pytest

from iam_writers_tfds import synth
from iam_writers_tfds.images import declared_dpi
from models import runtime
from models.runtime import Gallery, Identifier, Model, evidence
from tests.conftest import cli


class _Parsed(html.parser.HTMLParser):
    """Images (alt, src) and text of a report, and whether its tags nest."""

    def __init__(self):
        super().__init__()
        self.images, self.text, self.open = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag not in ("meta", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing open"

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A hinge gallery of three generated writers (a page each, and a line), and the
    identify report of one page and one line against it."""
    tmp = tmp_path_factory.mktemp("report")
    queries = []
    for seed, name in ((20, "ann"), (21, "bob"), (22, "cy")):
        rng = np.random.default_rng(seed)
        style = synth.WriterStyle.sample(rng)
        page, _ = synth.render_page(style, rng, lines=4)
        cv2.imwrite(str(tmp / f"{name}-page.png"), page)
        cv2.imwrite(str(tmp / f"{name}-line.png"), synth.render_line(style, rng))
        cv2.imwrite(str(tmp / f"{name}-query.png"), synth.render_page(style, rng, lines=3)[0])
        proc = cli("enroll", tmp / "g", "--writer", name, tmp / f"{name}-page.png",
                   tmp / f"{name}-line.png")
        assert proc.returncode == 0, proc.stderr
        queries.append(tmp / f"{name}-query.png")
    proc = cli("identify", tmp / "g", queries[0], tmp / "bob-line.png", "--top-k", "3",
               "--json", "--report", tmp / "report.html")
    assert proc.returncode == 0, proc.stderr
    return tmp / "report.html", json.loads(proc.stdout)


def test_the_report_parses_and_embeds_every_query_and_candidate(reported):
    path, results = reported
    page = _Parsed()
    page.feed(path.read_text())
    page.close()
    assert not page.open  # every tag closed
    alts = [img["alt"] for img in page.images]
    for n, r in enumerate(results, 1):
        for image in r["images"]:
            assert f"query {n}: {image}" in alts
        for t in r["top"]:
            assert any(a.startswith(f"{t['writer']}: ") for a in alts), t["writer"]
            assert f"{t['scores']['hinge']:.3f}" in "".join(page.text)
    assert "page: 3 lines, outlined" in "".join(page.text)
    # each query beside its closest writer's enrolled handwriting, at one scale
    closest = [img["alt"] for img in page.images if img["class"] == "closest"]
    assert [a.split(": ")[0] for a in closest] == [r["top"][0]["writer"] for r in results]
    assert "".join(page.text).count("Drawn at one scale (100 dpi)") == len(results)
    for img in page.images:  # each image is a PNG inside the file
        assert img["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(img["src"].split(",", 1)[1])
        assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED) is not None


def _provenance(text: str) -> dict[str, str]:
    """{row: value} of a report's provenance table."""
    section = text.split('<section id="provenance">', 1)[1].split("</section>", 1)[0]
    return {html.unescape(k): html.unescape(v) for k, v in re.findall(
        r"<tr><th>(.*?)</th><td><code>(.*?)</code></td></tr>", section)}


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_the_report_ends_with_what_weighed_which_files(reported):
    """An examiner shows the report months later: it names the version, model and gallery
    that weighed the handwriting, and the SHA-256 of every file asked about (in the JSON
    too), so that the files at hand can be told to be the ones weighed."""
    path, results = reported
    rows = _provenance(path.read_text())
    asked = [image for r in results for image in r["images"]]
    assert [r["sha256"] for r in results] == [{i: _sha256(i)} for i in asked]
    gallery = path.parent / "g.sqlite"
    assert list(rows) == ["iam-writers", "model", "gallery"] + [
        f"SHA-256 of {i}" for i in asked]
    assert rows["iam-writers"] == version("iam-writers")
    assert rows["model"] == "none: contour-hinge histograms alone"
    last = Gallery.open(gallery).history()[-1]  # the gallery as it was weighed: cy enrolled
    assert rows["gallery"] == (f"{gallery}: 3 writers, built by descriptor hinge-l10-b16; "
                               f"last change {last.at}, enrolled cy (2 images)")
    assert [rows[f"SHA-256 of {i}"] for i in asked] == [_sha256(i) for i in asked]


def test_the_report_opens_offline(reported):
    text = reported[0].read_text()
    assert not re.search(r"(src|href)=\"(?!data:image/png;base64,)", text)  # nothing linked
    assert "://" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", text)
    assert "@import" not in text and "url(" not in text


def _read_as(page: np.ndarray, input: str) -> tuple[list, list]:
    """(pages, their lines) of an image read as `input`, as a report draws them."""
    scan = Model.read(page, input=input)
    return scan.pages, scan.lines


def test_a_page_thumbnail_outlines_its_lines():
    rng = np.random.default_rng(3)
    page, boxes = synth.render_page(synth.WriterStyle.sample(rng), rng, lines=4)
    png = evidence.thumbnail(*_read_as(page, "auto"))
    outlined = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    # drawn at a third of the 300 dpi, and saying so: sizes compare across thumbnails
    assert outlined.shape[1] == round(page.shape[1] / 3)
    assert declared_dpi(png) == pytest.approx(evidence.THUMB_DPI, abs=0.01)
    b, g, r = (outlined[..., i].astype(int) for i in range(3))
    outline = (r - b) > 100
    assert outline.sum() > 4 * 2 * 100  # the red-orange outlines of 4 lines
    for x0, y0, x1, y1 in (np.array(box) / 3 for box in boxes):  # ... outside the ink
        assert not outline[int(y0) + 3:int(y1) - 3, int(x0):int(x1)].any()
    plain = cv2.imdecode(np.frombuffer(evidence.thumbnail(*_read_as(page, "line")), np.uint8),
                         cv2.IMREAD_UNCHANGED)
    assert plain.ndim == 2  # read as one line: nothing outlined


def test_thumbnails_side_by_side_say_whether_their_sizes_compare():
    rng = np.random.default_rng(4)
    line = synth.render_line(synth.WriterStyle.sample(rng), rng)
    drawn = evidence.thumbnail([line])
    older = cv2.imencode(".png", line[::2, ::2])[1].tobytes()  # stored at another scale
    same = evidence.side_by_side([("q", "query", [(drawn, "q", "q.png")]),
                                  ("w", "closest", [(drawn, "w", "w.png")])])
    assert "Drawn at one scale (100 dpi)" in same and same.count("<img") == 2
    mixed = evidence.side_by_side([("q", "query", [(drawn, "q", "q.png")]),
                                   ("w", "closest", [(older, "w", "w.png")])])
    assert "the handwriting's size does not compare" in mixed
    alone = evidence.side_by_side([("q", "query", [(drawn, "q", "q.png")]),
                                   ("w: no thumbnail stored", "query", [])])
    assert "the handwriting's size is not compared" in alone and "one scale" not in alone


def test_verify_writes_a_report_of_both_images(tmp_path, exported, heldout):
    a, b = heldout[0][0], heldout[1][0]
    proc = cli("verify", exported / "model_float32.tflite", a, b, "--report",
               tmp_path / "v.html")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "v.html").read_text()
    assert f'alt="a: {a}"' in text and f'alt="b: {b}"' in text
    assert ("the same writer" in text) == proc.stdout.startswith("same writer")
    # the calibrated log10 LR of two lines, in words, with where the score falls
    asked = cli("verify", exported / "model_float32.tflite", a, b, "--json")
    result = json.loads(asked.stdout)
    assert result["level"] == "line" and f"log10 LR {result['log10_lr']:+.2f}" in proc.stdout
    # what its rule gave at calibration on pairs of lines, each writer enrolled alone from
    # one line as b is here: in the JSON, once on stderr and in the report
    card = json.loads((exported / "model_card.json").read_text())
    rule = card["fusion"]["line"]["unknown_writer"]
    assert result["rule_rates"] == rule["by_lines_verify_rates"]["1"]["fused"]
    assert result["rule_rates"] != rule["verify_rates"]["fused"]  # not a form's, as before
    said = evidence.verify_rates_words(result["rule_rates"], "line")
    assert proc.stderr.count(f"note: {said}\n") == 1 and html.escape(said) in text
    assert "enrolled from 1 line of a form (as b is here)" in said
    assert "this rule said" not in asked.stderr
    # b is one line: its rule, the rule's rates and its LR are the ones fitted for a b of
    # one line, and it says so
    assert result["b_lines"] == result["lr_lines"] == result["rule_lines"] == 1
    # and its rule the one fitted for a b of one line: its threshold of a gallery of one
    assert result["threshold"] == pytest.approx(runtime.identify.gallery_threshold(
        card["fusion"]["line"]["unknown_writer"]["by_lines"]["1"]["fused"], 1))
    assert result["log10_lr"] == pytest.approx(float(evidence.LikelihoodRatio.of(
        card, "line", "fused", 1)(result["score"])))
    assert proc.stderr.count(f"note: {evidence.few_b_words(1, True, True, True)}\n") == 1
    assert html.escape(evidence.few_b_words(1, True, True, True)) in text
    assert html.escape(result["support"]) in text and text.count("<svg") == 1
    assert "dpi_a" not in result and "dpi_b" not in result  # both read as at 300 dpi
    at600 = json.loads(cli("verify", exported / "model_float32.tflite", a, b, "--json",
                           "--dpi", "600").stdout)
    assert (at600["dpi_a"], at600["dpi_b"]) == (600, 600)
    assert "same_image" not in result
    # what weighed which files: the model file and its fingerprint, each file's SHA-256
    assert (result["sha256_a"], result["sha256_b"]) == (_sha256(a), _sha256(b))
    assert _provenance(text) == {
        "iam-writers": version("iam-writers"),
        "model": f"{exported / 'model_float32.tflite'} (fingerprint {card['fingerprint']})",
        f"SHA-256 of a: {a}": _sha256(a), f"SHA-256 of b: {b}": _sha256(b)}
    # a questioned line compared with itself: a match that says nothing, said so
    itself = cli("verify", exported / "model_float32.tflite", a, a, "--json")
    assert json.loads(itself.stdout)["same_image"] is True
    assert "note: a and b are one image (the same content)" in itself.stderr


def test_verify_against_an_enrolled_writer_weighs_the_features_the_gallery_holds(
        tmp_path, exported, by_writer):
    """The known handwriting may be a writer enrolled months ago: `verify --gallery G
    --writer W` weighs a against W's enrolled features (the files need not be there), as
    verify weighs a against the same image, and the report shows W's enrolled handwriting."""
    model = exported / "model_float32.tflite"
    ann, bob = list(by_writer)[:2]
    known = tmp_path / "known.png"
    shutil.copy(by_writer[ann][0], known)
    proc = cli("enroll", tmp_path / "g", "--model", model, "--writer", ann, known)
    assert proc.returncode == 0, proc.stderr
    # one line enrolled: the export weighs so few lines by likelihood ratios of their own
    assert evidence.few_lines_words({ann: 1}, tmp_path / "g", 0, True, True, True) \
        in proc.stderr
    assert ("the unknown-writer rule, the rates it states and the likelihood ratios are the "
            "ones fitted for so few lines") in proc.stderr
    asked = by_writer[ann][1]
    by_file = json.loads(cli("verify", model, asked, known, "--json").stdout)
    known.unlink()  # gone since its enrolment: its features and thumbnail are kept
    proc = cli("verify", model, asked, "--gallery", tmp_path / "g", "--writer", ann, "--json",
               "--report", tmp_path / "v.html")
    assert proc.returncode == 0, proc.stderr
    against_enrolled = json.loads(proc.stdout)
    for key in ("score", "scores", "threshold", "same_writer", "log10_lr", "rule_rates",
                "b_lines", "lr_lines", "rule_lines", "sha256_a"):
        assert against_enrolled[key] == by_file[key], key
    assert against_enrolled["b_lines"] == 1  # one line as b: the note says what that means
    assert against_enrolled["b"] == f"{ann} (enrolled in {tmp_path / 'g.sqlite'})"
    assert against_enrolled["b_enrolled"] == {"gallery": str(tmp_path / "g.sqlite"), "writer": ann,
                                        "images": {str(known): by_file["sha256_b"]},
                                        "lines": 1}
    assert "sha256_b" not in against_enrolled and "lines_b" not in against_enrolled
    proc = cli("verify", model, asked, "--gallery", tmp_path / "g", "--writer", ann)
    assert proc.stdout.endswith(f" (b: {ann}'s enrolled handwriting, 1 image(s), 1 line(s))\n")
    text = (tmp_path / "v.html").read_text()
    assert f'alt="b: {html.escape(against_enrolled["b"])}"' in text and "no thumbnail" not in text
    assert html.escape(evidence.few_b_words(1, True, True, True)) in text
    assert _provenance(text)[f"SHA-256 of b: {ann}'s enrolled {known}"] == by_file["sha256_b"]
    # another writer's line against the enrolled writer: weighed the same as against the file
    other = json.loads(cli("verify", model, by_writer[bob][0], "--gallery", tmp_path / "g",
                           "--writer", ann, "--json").stdout)
    assert other["score"] < against_enrolled["score"]
    proc = cli("verify", model, asked, "--gallery", tmp_path / "g", "--writer", "zed")
    assert proc.returncode == 2 and f"{tmp_path / 'g.sqlite'}: no writer 'zed'" in proc.stderr
    proc = cli("verify", model, asked, by_writer[ann][2], "--gallery", tmp_path / "g",
               "--writer", ann)
    assert proc.returncode == 2 and "verify takes MODEL A B, or MODEL A --gallery G --writer " \
        "W" in proc.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_a_browser_draws_the_thumbnails(reported, tmp_path):
    """Screenshots of the report, and of a copy whose images are broken: each query's
    thumbnail must be found, pixel for pixel, where the browser drew the report."""
    path = reported[0]
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"base64,[A-Za-z0-9+/=]{40}", "base64,AAAA", path.read_text()))
    page = _Parsed()
    page.feed(path.read_text())
    queries = [cv2.imdecode(np.frombuffer(base64.b64decode(img["src"].split(",", 1)[1]),
                                          np.uint8), cv2.IMREAD_GRAYSCALE)
               for img in page.images if img["class"] == "query"]

    def found(html_file) -> list[float]:
        shot = tmp_path / f"{html_file.stem}.png"
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                        "--window-size=1200,2400", "--force-device-scale-factor=1",
                        html_file.as_uri()], capture_output=True, timeout=120, check=True)
        grey = cv2.imread(str(shot), cv2.IMREAD_GRAYSCALE)
        return [float(cv2.matchTemplate(grey, q, cv2.TM_CCOEFF_NORMED).max()) for q in queries]

    drawn, missing = found(path), found(broken)
    assert len(queries) == 2 and min(drawn) > 0.95, drawn
    assert max(missing) < 0.6, missing


@pytest.fixture(scope="module")
def modelled(exported, by_writer, tmp_path_factory):
    """A gallery of two held-out writers enrolled with the fixture model, the card, and
    the JSON and report of identify for one line of each."""
    tmp = tmp_path_factory.mktemp("modelled")
    model = exported / "model_float32.tflite"
    a, b = list(by_writer)[:2]
    for writer in (a, b):
        proc = cli("enroll", tmp / "g", "--model", model, "--writer", writer,
                   *by_writer[writer][:3])
        assert proc.returncode == 0, proc.stderr[-2000:]
    proc = cli("identify", tmp / "g", by_writer[a][3], by_writer[b][3], "--model", model,
               "--json", "--report", tmp / "report.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = json.loads((exported / "model_card.json").read_text())
    return tmp, card, json.loads(proc.stdout), by_writer


def test_identify_gives_a_log10_lr_monotone_in_each_score(modelled):
    tmp, card, results, _ = modelled
    lrs = card["likelihood_ratio"]
    # the form's calibrators, and those of references of 1, 2 and 3 lines
    assert set(lrs["identification_by_lines"]) == {"1", "2", "3"}
    assert evidence.LikelihoodRatio.fitted_lines(card) == [1, 2, 3]
    for tables in [lrs["identification"], *lrs["identification_by_lines"].values()]:
        _monotone(tables)
    for r in results:
        assert r["level"] == "line" and "note" not in r
        tops = r["top"]
        for t in tops:  # each writer is enrolled from 3 lines: weighed by that calibrator
            assert t["lr_lines"] == 3
            lr = evidence.LikelihoodRatio.of(card, "line", "fused", 3)
            assert t["log10_lr"]["fused"] == pytest.approx(float(lr(t["scores"]["fused"])))
            assert set(t["log10_lr"]) == {"embedding", "hinge", "vlad", "fused"}
            assert t["support"].startswith(evidence.verbal(t["log10_lr"]["fused"]))
            bound = t["log10_lr"]["fused"] in lr.bounds
            assert t["support"].endswith("weighed no higher)") == (
                bound and t["log10_lr"]["fused"] > 0)
        # candidates ranked by the fused score have falling LRs
        assert all(x["log10_lr"]["fused"] >= y["log10_lr"]["fused"]
                   for x, y in zip(tops, tops[1:]))
    # no card held them before: the form's calibrator weighs every writer
    assert evidence.LikelihoodRatio.of({"likelihood_ratio": {
        "identification": lrs["identification"]}}, "line", "fused", 3).table == \
        lrs["identification"]["line"]["fused"]


def test_a_candidate_enrolled_from_a_line_is_weighed_by_its_own_lrs(modelled, exported):
    """Candidates of different enrolment sizes are weighed by different calibrators: each
    LR says which, and the answer says that the LRs need not fall with the rank."""
    tmp, card, _, by_writer = modelled
    model = exported / "model_float32.tflite"
    shutil.copy(tmp / "g.sqlite", tmp / "mixed.sqlite")
    a, b, c = list(by_writer)[:3]
    proc = cli("enroll", tmp / "mixed", "--model", model, "--writer", c, by_writer[c][0])
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = cli("identify", tmp / "mixed", by_writer[a][3], "--model", model, "--top-k", "3",
               "--report", tmp / "mixed.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ranked = proc.stdout.split(" (fused: ", 1)[1]
    ranks = re.findall(r"(\S+) -?[\d.]+ \[log10 LR [-+][\d.]+(, LR fitted for \d lines?)?\]",
                       ranked)
    assert dict(ranks) == {a: ", LR fitted for 3 lines", b: ", LR fitted for 3 lines",
                           c: ", LR fitted for 1 line"}, ranked
    # the plot marks the candidates on the best's calibration scores: those it weighs
    plotted = re.findall(r'text-anchor="middle">(#\d)</text>', (tmp / "mixed.html").read_text())
    assert plotted == [f"#{i}" for i, (_, fitted) in enumerate(ranks, 1)
                       if fitted == ranks[0][1]]
    note = ("the candidates enrolled from 1-3 lines are weighed by likelihood ratios fitted "
            "for references of so few lines")
    assert f"note: {note}" in proc.stderr and note in reported_text(tmp / "mixed.html")
    proc = cli("identify", tmp / "g", by_writer[a][3], "--model", model, "--top-k", "2")
    assert proc.returncode == 0 and note not in proc.stderr  # one calibrator: no note
    # `gallery alike` weighs the writer read as as identify weighs that candidate: here
    # every writer's closest other, whatever its score (the threshold taken away)
    identifier = Identifier(Gallery.open(tmp / "mixed"), Model(model))
    identifier.thresholds = lambda scores, **_: np.full(len(scores), -np.inf)
    pairs = identifier.alike()
    assert {p["writer"] for p in pairs} == {a, b, c} and c in {p["reads_as"] for p in pairs}
    for p in pairs:
        lines = 1 if p["reads_as"] == c else 3
        assert p["lr_lines"] == lines and p["log10_lr"] == pytest.approx(float(
            evidence.LikelihoodRatio.of(card, "document", "fused", lines)(p["score"])))
        assert f"LR fitted for {lines} line" in evidence.alike_words(p, "fused")


def reported_text(path: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))


def _monotone(tables: dict) -> None:
    """Every level's and score's table rises, and was fitted on both kinds of pairs."""
    assert set(tables) == set(evidence.LEVELS)
    for level, scores in tables.items():
        assert set(scores) == {"embedding", "hinge", "vlad", "fused"}, (level, scores)
        for name, table in scores.items():
            lr = evidence.LikelihoodRatio(table)
            edges = table["histogram"]["edges"]
            span = edges[-1] - edges[0]
            top = edges[-1] + span if name != "hinge" else 1 - 1e-9  # hinge: at most 1
            grid = np.linspace(edges[0] - span, top, 2000)
            llrs = lr(grid)
            assert np.all(np.diff(llrs) >= 0) and llrs[-1] > llrs[0], (level, name)
            assert table["n_same"] > 0 and table["n_different"] > 0


def test_the_report_shows_each_candidates_lr_in_words_and_a_score_plot(modelled):
    tmp, card, results, _ = modelled
    text = (tmp / "report.html").read_text()
    page = _Parsed()
    page.feed(text)
    page.close()
    assert not page.open
    words = "".join(page.text)
    for r in results:
        for t in r["top"]:
            assert f"{t['log10_lr']['fused']:+.2f}" in words and t["support"] in words
        # the rule's rates at calibration, with how loosely its queries pin them
        rule = card["fusion"]["line"]["unknown_writer"]  # of the best writer's few lines
        assert r["rule_rates"] == (rule["by_lines_rates"][str(r["rule_lines"])]["fused"]
                                   if "rule_lines" in r else rule["rates"]["fused"])
        said = evidence.rule_rates_words(r["rule_rates"], "line")
        assert said in words and "strangers' lines" in said and "95% interval" in said
        n, forms, writers = (r["rule_rates"][k] for k in ("n_queries", "forms", "writers"))
        assert (f"the {n} lines came from {forms} forms of {writers} writers, and the "
                "intervals allow for one writer's lines erring together.") in said
        best, rule = r["top"][0]["similarity"], r["lead_rule"]  # how the decision was taken
        lead = best - rule["second"]
        assert (f"{lead:.3f} ahead of the next writer: {best:.3f} + 0.5 \u00d7 {lead:.3f} = "
                f"{best + 0.5 * lead:.3f} against the threshold {rule['threshold']:.3f}") in words
    assert text.count("<svg") == len(results)  # one score plot per query
    assert "moderately strong support" in words  # the verbal scale is stated
    assert evidence.NO_LR not in words
    assert "://" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", text)


def test_the_rule_rates_say_which_queries_their_intervals_take_as_erring_together():
    """A writer's queries are taken as erring together; a card from before writers were
    counted took a form's lines so, and is read as it was."""
    rates = {"far": 0.0, "frr": 2 / 21, "gallery": 22, "n_queries": 21, "forms": 21}
    said = evidence.rule_rates_words({**rates, "writers": 8}, "document")
    assert said.endswith("answered 2 of 21 genuine documents unknown (9.5%); the 21 documents "
                         "came from 8 writers, and the intervals allow for one writer's "
                         "documents erring together.")
    assert evidence.rule_rates_words({**rates, "writers": 21}, "document").endswith(
        "unknown (9.5%).")  # every query its own writer's: nothing taken together
    old = evidence.rule_rates_words({**rates, "n_queries": 165, "frr": 0.0}, "line")
    assert old.endswith("the 165 lines came from 21 forms, and the intervals allow for the "
                        "lines of one form erring together.")


def test_a_card_without_a_calibrator_says_so_in_one_line(modelled, exported, tmp_path):
    tmp, card, _, by_writer = modelled
    old = tmp_path / "old_export"
    old.mkdir()
    shutil.copy(exported / "model_float32.tflite", old)
    shutil.copy(exported / card["vlad"]["file"], old)
    (old / "model_card.json").write_text(json.dumps(
        {k: v for k, v in card.items() if k != "likelihood_ratio"}))
    a = next(iter(by_writer))
    proc = cli("identify", tmp / "g", by_writer[a][4], "--model", old / "model_float32.tflite",
               "--json", "--report", tmp_path / "r.html")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"note: {evidence.NO_LR}" in proc.stderr.splitlines()
    [r] = json.loads(proc.stdout)
    assert r["note"] == evidence.NO_LR and "log10_lr" not in r["top"][0]
    assert "<svg" not in (tmp_path / "r.html").read_text()
    proc = cli("verify", old / "model_float32.tflite", *by_writer[a][:2], "--report",
               tmp_path / "v.html")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"note: {evidence.NO_LR}" in proc.stderr.splitlines()
    assert "log10 LR" not in proc.stdout


def test_an_unknown_writers_closest_match_with_a_positive_lr_is_read_as_one_comparison():
    def result(writer, llr):
        return {"writer": writer, "score": "fused",
                "top": [{"writer": "ann", "log10_lr": {"fused": llr}}]}

    said = evidence.searched(result(None, 2.3), 78)
    assert "one comparison" in said and "closest of 78 writers" in said
    # named, no support for the same writer, one writer searched, or no LR: nothing to add
    for r, writers in ((result("ann", 2.3), 78), (result(None, -0.4), 78),
                       (result(None, 2.3), 1), ({**result(None, 2.3), "top": [{}]}, 78)):
        assert evidence.searched(r, writers) == ""


def test_a_pair_is_said_as_it_was_decided():
    """A lookalike reads as another at the threshold, by the score identify uses; a
    training writer's label is taken under it where its writer is the closest and the LR
    supports it, and the cohort is always asked by the fused score."""
    pair = {"writer": "ann", "reads_as": "bob", "score": 3.0, "threshold": 2.5}
    assert evidence.alike_words(pair, "hinge") == (
        "ann's enrolled handwriting reads as bob's (hinge 3.000, a document's threshold 2.500)")
    hand = {"writer": "286", "reads_as": "286", "score": 2.549, "threshold": 2.87,
            "log10_lr": 2.94, "in_cohort": True, "taken_without": True}
    assert evidence.alike_words(hand, "vlad") == (
        "286's enrolled handwriting comes closest to training writer 286's, of the model's "
        "cohort (fused 2.549, under a document's threshold 2.870; log10 LR +2.94); enrolled "
        "under that label, so taken as that writer")


@pytest.mark.parametrize("before", ["rates", "rule"])
def test_a_card_before_the_few_lines_rates_states_the_forms_and_says_so(before, exported,
                                                                        by_writer, tmp_path):
    """An export made before the rule for writers of few lines had rates of its own (or
    before that rule) still decides and states as it did: a b of one line gets the form's
    rates, which the note says were measured with a form as b."""
    card = json.loads((exported / "model_card.json").read_text())
    for level in ("line", "document"):
        rule = card["fusion"][level]["unknown_writer"]
        for key in ("by_lines_rates", "by_lines_verify_rates") + (
                ("by_lines", "by_lines_rule") if before == "rule" else ()):
            del rule[key]
    old = tmp_path / "old"
    shutil.copytree(exported, old, ignore=shutil.ignore_patterns("saved_model", "*int8*",
                                                                 "*float16*", "*dynamic*"))
    (old / "model_card.json").write_text(json.dumps(card))
    ann = list(by_writer)[0]
    result = runtime.verify(Model(old / "model_float32.tflite"), by_writer[ann][1],
                            by_writer[ann][0])
    assert result["b_lines"] == 1
    rule = card["fusion"]["line"]["unknown_writer"]
    assert result["rule_rates"] == rule["verify_rates"]["fused"]  # the form's, as stated
    assert "enrolled_lines" not in result["rule_rates"]
    said = evidence.verify_rates_words(result["rule_rates"], "line")
    assert "enrolled from a form's lines (as b best is: a page)" in said
    words = evidence.few_b_words(1, **evidence.b_fitted(result))
    assert "were measured with a writer's form (a page's lines) as b" in words
    if before == "rates":  # the rule of one line decides; only its rates are the form's
        assert result["rule_lines"] == 1
        assert words.startswith("b holds 1 line(s) of handwriting: the rule and the "
                                "likelihood ratio are the ones fitted for a b of so few")
    else:
        assert "rule_lines" not in result
        assert result["threshold"] == pytest.approx(
            runtime.identify.gallery_threshold(rule["fused"], 1))
