"""Pages in: line finding on generated pages, `auto`, and pages through the command line."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from benchmarks.pages import box_iou
from iam_writers_tfds import synth
from iam_writers_tfds.images import declared_dpi
from models.runtime import Gallery, evidence, pages
from tests import fuzzing
from tests.conftest import cli, generated_page


@pytest.mark.parametrize("seed, skew", [(0, 0.0), (1, 2.5), (2, -3.0), (3, 1.0)])
def test_the_lines_of_a_generated_page_are_found(seed, skew):
    """Lines one every 120 px, so tall letters of neighbouring lines nearly touch, and a
    little skew."""
    page, boxes = generated_page(seed, skew=skew)
    found = pages.find_lines(page)
    assert len(found) == len(boxes) and pages.printed(found) == 0  # a hand never repeats
    for truth, line in zip(boxes, found):  # top to bottom, each on its own line
        assert box_iou(truth, line.box) > 0.9, (truth, line.box)
        assert line.image.shape == (line.box[3] - line.box[1], line.box[2] - line.box[0])


@pytest.mark.parametrize("seed, lines", [(4, 2), (4, 3), (3, 4)])
def test_the_lines_of_a_short_note_on_a_whole_sheet_are_found(seed, lines):
    """A few lines at the top of a sheet 3,500 px tall (A4 at 300 dpi): measured over the
    whole sheet, the blank paper doubled the line spacing, and lines were merged (each of
    these pages: one line found of two or three, three of four)."""
    page, boxes = generated_page(seed, lines=lines)
    note = np.pad(page, ((0, 3500 - page.shape[0]), (0, 0)), constant_values=245)
    found = pages.find_lines(note)
    assert len(found) == len(boxes)
    for truth, line in zip(boxes, found):
        assert box_iou(truth, line.box) > 0.9, (truth, line.box)


@pytest.mark.parametrize("seed, skew", [(6, 0.0), (10, 0.7), (8, -1.5)])
def test_ruled_lines_are_not_read_as_text_lines(seed, skew):
    """Handwriting on ruled paper: a dark rule under every line, and one above the first as
    on a form; the page turned a little, so that the rules' ragged edges and the angle left
    after deskewing (at 0.7 degrees) are met. The rules are left out and the lines found as
    on plain paper."""
    page, boxes = generated_page(seed, skew=skew)
    ruled, slope = page.copy(), -np.tan(np.radians(skew))
    heights = [y1 - 0.25 * (y1 - y0) for _, y0, _, y1 in boxes] + [boxes[0][1] - 40]
    for (x0, _, x1, _), y in zip(boxes + boxes[:1], heights):
        ends = [(x, int(y + (x - (x0 + x1) / 2) * slope)) for x in (20, page.shape[1] - 20)]
        cv2.line(ruled, *ends, 60, 3)
    plain, found = pages.find_lines(page), pages.find_lines(ruled)
    assert len(found) == len(plain) == len(boxes)
    for a, b in zip(plain, found):
        assert box_iou(a.box, b.box) > 0.9, (a.box, b.box)


def test_a_ruled_sheet_with_no_writing_has_no_text_line():
    """Ink that is all rules: once they are left out, no line is found, quietly (numpy's
    warnings of an empty median were printed), and a page read as such is refused naming
    it."""
    import warnings

    from models.runtime import Model

    sheet = np.full((1200, 900), 235, np.uint8)
    for y in range(100, 1150, 60):
        sheet[y:y + 2, 40:860] = 120
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pages.find_lines(sheet) == []
        with pytest.raises(pages.NoTextLineError, match=r"ruled\.png: no text line found"):
            Model.read(sheet, "ruled.png", "page")


@pytest.mark.parametrize("shape", [(1, 5000), (5000, 1)])
def test_a_strip_a_pixel_wide_read_as_a_page_is_refused_naming_it(shape):
    """`--input page` on an image one pixel high or wide: refused as too small, not with
    OpenCV's error of a photo reduced to no pixels (looking for a photographed sheet)."""
    from models.runtime import Model, NoInkError

    strip = np.full(shape, 230, np.uint8)
    strip[: max(1, shape[0] // 2), : max(1, shape[1] // 2)] = 20
    with pytest.raises(NoInkError, match=r"strip\.png: .* is too small"):
        Model.read(strip, "strip.png", "page")


TYPED = ("the writer copied this text from the printed form above",
         "and every letter of the typeface is drawn the same way",
         "so that the lines of print are told from the writing")


def _printed_header(width: int) -> np.ndarray:
    """A form's printed header: a title line and TYPED, machine print on paper 245."""
    header = np.full((400, width), 245, np.uint8)
    cv2.putText(header, "Sentence Database  S00-000", (100, 60), cv2.FONT_HERSHEY_DUPLEX, 1.6,
                20, 3, cv2.LINE_AA)
    for i, text in enumerate(TYPED):
        cv2.putText(header, text, (100, 140 + 80 * i), cv2.FONT_HERSHEY_COMPLEX, 1.4, 20, 2,
                    cv2.LINE_AA)
    return header


@pytest.mark.parametrize("seed, skew", [(11, 0.0), (12, 1.2)])
def test_printed_text_is_not_read_as_handwriting(seed, skew):
    """A form as IAM's: a typed paragraph and a printed header above the handwriting, a
    printed field below it. Type repeats its glyphs to the pixel, so its lines are left out
    and the handwritten ones found as on a page of handwriting alone."""
    page, boxes = generated_page(seed)
    h, w = page.shape
    header, footer = _printed_header(w), np.full((150, w), 245, np.uint8)
    cv2.putText(footer, "Name of the writer:", (100, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.4, 20, 2,
                cv2.LINE_AA)
    form = np.vstack([header, page, footer])
    turn = cv2.getRotationMatrix2D((w / 2, form.shape[0] / 2), skew, 1.0)
    form = cv2.warpAffine(form, turn, (w, form.shape[0]), borderValue=245)
    page = cv2.warpAffine(np.vstack([np.full_like(header, 245), page, np.full_like(footer, 245)]),
                          turn, (w, form.shape[0]), borderValue=245)
    plain, found = pages.find_lines(page), pages.find_lines(form)
    assert pages.printed(plain) == 0 and pages.printed(found) == len(TYPED) + 2
    hand = pages.handwritten(found)
    assert len(hand) == len(plain) == len(boxes)
    for a, b in zip(plain, hand):
        assert box_iou(a.box, b.box) > 0.9, (a.box, b.box)
    assert pages.parts(form, "auto")[1] == len(boxes)
    for input in ("page", "auto"):  # print alone: four lines, so a page, but no handwriting
        with pytest.raises(pages.NoTextLineError,
                           match=r"typed.png: only machine print \(4 lines\) found"):
            pages.parts(header, input, "typed.png")


def test_a_binarised_page_reads_like_a_grey_one():
    page, boxes = generated_page(4)
    binary = np.where(page < 128, 0, 255).astype(np.uint8)
    found = pages.find_lines(binary)
    assert len(found) == len(boxes)
    assert all(box_iou(truth, line.box) > 0.9 for truth, line in zip(boxes, found))


def test_auto_tells_a_page_from_a_line():
    page, boxes = generated_page(5)
    rng = np.random.default_rng(5)
    line = synth.render_line(synth.WriterStyle.sample(rng), rng)
    parts, found = pages.parts(page, "auto")
    assert found == len(boxes) == len(parts)
    assert pages.parts(line, "auto") == ([line], None)
    assert pages.parts(page, "line")[1] is None  # asked for a line, read as one
    with pytest.raises(pages.NoTextLineError, match="blank.png: no text line found"):
        pages.parts(np.full((800, 600), 250, np.uint8), "page", "blank.png")


@pytest.mark.parametrize("seed, skew", [(6, 0.0), (7, 4.0), (8, -4.0)])
def test_a_page_turned_a_quarter_turn_is_refused_not_read_as_lines(seed, skew):
    """Read sideways, a page's columns of text were cut into "lines" and identified as a
    stranger's handwriting, without a word."""
    page, boxes = generated_page(seed, skew=skew)
    assert not pages.turned(page) and pages.parts(page, "auto")[1] == len(boxes)
    for sideways in (cv2.rotate(page, cv2.ROTATE_90_CLOCKWISE),
                     cv2.rotate(page, cv2.ROTATE_90_COUNTERCLOCKWISE)):
        assert pages.turned(sideways)
        for input in ("auto", "page"):
            with pytest.raises(pages.TurnedPageError, match="side.png: its text lines do not "
                               "run across the image .* or pass --input line"):
                pages.parts(sideways, input, "side.png")
        assert pages.parts(sideways, "line") == ([sideways], None)  # as asked


def test_two_lines_of_a_large_upright_hand_are_not_taken_for_a_turned_page():
    """A crop of two lines of tall, evenly spaced upright strokes (as IAM's c06-103-s00-02)
    has a column profile sharper than its rows; turned, such an image would be tall and
    narrow, so one twice as wide as tall is read, not refused."""
    rng = np.random.default_rng(0)
    image = np.full((440, 1900), 245, np.uint8)
    for base in (205, 420):  # on a baseline, their tops ragged as ascenders are
        for x in range(40, 1850, 30):
            if (x - 40) // 30 % 6 < 5:  # words of five strokes, hardly two alike (not print)
                lean, height = rng.integers(-12, 13), rng.integers(140, 186)
                cv2.line(image, (x + lean, base - height), (x, base), 40, rng.integers(5, 11))
    narrower = image[:, :800]  # the same strokes, less than twice as wide as tall
    assert pages.turned(narrower) and not pages.turned(image)
    for input in ("auto", "page"):
        assert pages.parts(image, input)[1] == 2
        with pytest.raises(pages.TurnedPageError):
            pages.parts(narrower, input)


@pytest.mark.parametrize("seed", [0, 2, 9])
def test_auto_refuses_a_page_upside_down_and_page_reads_it_as_it_is(seed):
    page, boxes = generated_page(seed)
    assert pages.ink_lean(pages.find_lines(page)) > 0.2  # ascenders outweigh descenders
    assert pages.parts(page, "auto")[1] == len(boxes)
    upside_down = cv2.rotate(page, cv2.ROTATE_180)
    assert pages.ink_lean(pages.find_lines(upside_down)) < pages.UPSIDE_DOWN_BELOW
    with pytest.raises(pages.TurnedPageError, match="down.png: the page seems upside down .* "
                       "or pass --input page to read it as it is"):
        pages.parts(upside_down, "auto", "down.png")
    assert pages.parts(upside_down, "page")[1] == len(boxes)


@pytest.mark.parametrize("seed, skew", [(11, 8.0), (12, -12.0), (13, 15.0)])
def test_a_page_laid_askew_is_turned_level_and_read_as_the_level_page(seed, skew):
    """A page laid 8-15 degrees askew (on the scanner's glass, or photographed): its lines
    are found at the page's own skew only within MAX_SKEW_DEG of level (at 12 degrees half
    of a generated page's lines were found, at 15 none: it was read as one line), so it is
    turned level first. A page within STRAIGHTEN_FROM_DEG, as IAM's scans are, is read as
    it is."""
    flat, boxes = generated_page(seed)
    askew = pages.straightened(flat, skew)  # on a canvas that holds it whole
    level, lines = pages.read_page(askew, "auto", "askew.png")
    assert abs(pages.level_angle(level)) < pages.STRAIGHTEN_FROM_DEG
    expected = [line.box for line in pages.find_lines(flat)]
    assert len(lines) == len(expected) == len(boxes)
    for a, b in zip(expected, (line.box for line in lines)):  # moved on a wider canvas
        assert abs((a[2] - a[0]) - (b[2] - b[0])) <= 2 and abs((a[3] - a[1]) - (b[3] - b[1])) <= 2
    page, _ = generated_page(seed, skew=1.5)
    assert pages.read_page(page, "auto")[0] is page


def test_the_ragged_ends_of_lines_tell_an_upright_page_from_one_turned_half_round():
    """Lines start at the left margin and end where their words run out; turned half round,
    the ragged ends come to the left, and the lean goes exactly the other way."""
    page, _ = generated_page(3, lines=8)
    width = page.shape[1]
    upright = pages.find_lines(page)
    ends = [line.box[2] for line in upright]
    assert max(ends) - min(ends) > 4 * max(line.box[0] for line in upright) - 4 * min(
        line.box[0] for line in upright)  # the generated lines do end raggedly
    turned = pages.find_lines(cv2.rotate(page, cv2.ROTATE_180))
    assert pages.edge_lean(upright, width) > 1.0
    assert pages.edge_lean(turned, width) == pytest.approx(-pages.edge_lean(upright, width),
                                                           abs=0.1)
    assert pages.lean(turned, width) < pages.UPSIDE_DOWN_BELOW < pages.lean(upright, width)


def test_a_page_is_enrolled_and_identified_as_one_document(tmp_path):
    for seed, name in ((10, "ann"), (11, "bob")):
        rng = np.random.default_rng(seed)
        style = synth.WriterStyle.sample(rng)
        for k in range(2):
            page, _ = synth.render_page(style, rng, lines=5)
            if (name, k) == ("bob", 1):  # asked about on a form that also holds print
                page = np.vstack([_printed_header(page.shape[1]), page])
            cv2.imwrite(str(tmp_path / f"{name}{k}.png"), page)
    for name in ("ann", "bob"):
        proc = cli("enroll", tmp_path / "g", "--writer", name, tmp_path / f"{name}0.png")
        assert proc.returncode == 0, proc.stderr
    # ann's second page also laid 11 degrees askew on the scanner's glass
    ann1 = cv2.imread(str(tmp_path / "ann1.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / "askew.png"), pages.straightened(ann1, 11.0))
    asked = [tmp_path / f for f in ("ann1.png", "bob1.png", "askew.png")]
    proc = cli("identify", tmp_path / "g", *asked, "--json", "--report", tmp_path / "report.html")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert "(page: 5 lines, outlined; 4 printed left out, not outlined)" in (
        tmp_path / "report.html").read_text()
    assert [r["top"][0]["writer"] for r in results] == ["ann", "bob", "ann"]
    assert [r["lines"] for r in results] == [{str(f): 5} for f in asked]
    assert "printed" not in results[0] and results[1]["printed"] == {
        str(tmp_path / "bob1.png"): len(TYPED) + 1}
    # the enrolled page is kept as reports show it: at 100 dpi, its 5 lines outlined
    gallery = Gallery.open(tmp_path / "g")
    [(path, png)] = gallery.thumbnails("ann")
    gallery.close()
    drawn = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert path == str(tmp_path / "ann0.png") and declared_dpi(png) == pytest.approx(100, abs=0.01)
    outline = drawn[..., 2].astype(int) - drawn[..., 0] > 100
    assert len(np.flatnonzero(np.diff(outline.any(axis=1).astype(int)) == 1)) == 5
    proc = cli("identify", tmp_path / "g", tmp_path, "--descriptor", "hinge")  # a folder
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert f"{tmp_path}: a folder, not an image file" in proc.stderr and "glob" in proc.stderr
    proc = cli("identify", tmp_path / "g", tmp_path / "ann1.png", "--top-k", "0")
    assert proc.returncode == 2 and "must be at least 1" in proc.stderr
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((900, 700), 250, np.uint8))
    proc = cli("identify", tmp_path / "g", blank, "--input", "page", "--descriptor", "hinge")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"iam-writers identify: error: {blank}: the image is blank")


def test_a_tiff_or_a_pdf_of_several_pages_is_one_document(tmp_path):
    """A scanner's multi-page TIFF is asked about as the document its pages make, a blank
    page (a duplex scan's back) left out and counted: it scores what its pages given as
    files with --document score, and reports and the gallery draw every page. A PDF of
    the pages scores as the TIFF does."""
    rng = np.random.default_rng(20)
    for name in ("ann", "bob"):
        style = synth.WriterStyle.sample(rng)
        written = [synth.render_page(style, rng, lines=4)[0] for _ in range(3)]
        for k, page in enumerate(written):
            cv2.imwrite(str(tmp_path / f"{name}{k}.png"), page)
        proc = cli("enroll", tmp_path / "g", "--writer", name, tmp_path / f"{name}0.png")
        assert proc.returncode == 0, proc.stderr
    blank = np.full_like(written[1], 250)
    ann = [cv2.imread(str(tmp_path / f"ann{k}.png"), cv2.IMREAD_GRAYSCALE) for k in (1, 2)]
    tiff = tmp_path / "ann.tif"
    assert cv2.imwritemulti(str(tiff), [ann[0], blank, ann[1]])
    proc = cli("identify", tmp_path / "g", tiff, "--json", "--report", tmp_path / "r.html")
    assert proc.returncode == 0, proc.stderr
    [r] = json.loads(proc.stdout)
    assert r["top"][0]["writer"] == "ann" and r["level"] == "document"
    assert (r["lines"], r["pages"], r["blank_pages"]) == ({str(tiff): 8}, {str(tiff): 2},
                                                           {str(tiff): 1})
    assert "(2 pages: 8 lines, outlined; 1 blank left out)" in (
        tmp_path / "r.html").read_text()
    proc = cli("identify", tmp_path / "g", tmp_path / "ann1.png", tmp_path / "ann2.png",
               "--document", "--json")
    [files] = json.loads(proc.stdout)
    assert [t["writer"] for t in files["top"]] == [t["writer"] for t in r["top"]]
    for asked, paged in zip(files["top"], r["top"]):
        assert paged["scores"] == pytest.approx(asked["scores"], abs=1e-6)
    assert cli("identify", tmp_path / "g", tiff).stdout.startswith(
        f"{tiff} (2 pages: 8 lines, 1 blank left out): ann")
    pdf = tmp_path / "ann.pdf"  # a scanner's PDF of the same pages, on the paper they cover
    pdf.write_bytes(fuzzing._pdf(ann))
    proc = cli("identify", tmp_path / "g", pdf, "--json")
    assert proc.returncode == 0, proc.stderr
    [drawn] = json.loads(proc.stdout)
    assert (drawn["lines"], drawn["pages"]) == ({str(pdf): 8}, {str(pdf): 2})
    assert [t["writer"] for t in drawn["top"]] == [t["writer"] for t in r["top"]]
    for redrawn, read in zip(drawn["top"], r["top"]):  # Pillow stores the pages as JPEG
        assert redrawn["scores"] == pytest.approx(read["scores"], abs=0.005)
    proc = cli("enroll", tmp_path / "g", "--writer", "ann", tiff)
    assert proc.returncode == 0, proc.stderr
    gallery = Gallery.open(tmp_path / "g")
    [_, (path, png)] = gallery.thumbnails("ann")
    gallery.close()
    drawn = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert path == str(tiff) and declared_dpi(png) == pytest.approx(100, abs=0.01)
    outline = drawn[..., 2].astype(int) - drawn[..., 0] > 100
    assert len(np.flatnonzero(np.diff(outline.any(axis=1).astype(int)) == 1)) == 8
    assert drawn.shape[0] == round(ann[0].shape[0] / 3) + round(ann[1].shape[0] / 3) + \
        evidence.PAGE_GAP
