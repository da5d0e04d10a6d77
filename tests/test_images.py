import io
import struct
import sys

import cv2
import numpy as np
import pytest

from iam_writers_tfds import images
from tests.conftest import heic, with_camera, with_exif


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def test_gray_png_round_trips():
    img = np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)
    np.testing.assert_array_equal(images.decode_gray(_png(img)), img)


def test_16bit_png_is_scaled_to_8bit():
    img = np.full((5, 7), 65535, np.uint16)
    img[0, 0] = 256
    out = images.decode_gray(_png(img))
    assert out.dtype == np.uint8 and out[1, 1] == 255 and out[0, 0] == 1


def test_a_10_bit_heic_is_read_at_8_bits_as_a_16_bit_png_is():
    """An iPhone's HDR photo: HEVC of 10 bits (lossless here), read as the PNG of it is."""
    import pillow_heif

    img = np.full((64, 96), 50000, np.uint16)
    img[10:30, 10:80] = 3000
    out = io.BytesIO()
    pillow_heif.from_bytes("I;16", img.shape[::-1], img.tobytes()).save(out, quality=-1)
    assert pillow_heif.open_heif(out).info["bit_depth"] == 10
    read = images.decode_gray(out.getvalue())
    assert read.dtype == np.uint8
    assert np.abs(read.astype(int) - images.decode_gray(_png(img))).max() <= 1


def test_a_monochrome_heic_is_read_into_memory_of_its_own():
    """Gray already, its pixels are not converted: numpy's view of libheif's would die with
    the file object (read after it, they were freed memory)."""
    import gc

    import pillow_heif

    img = np.full((48, 64), 210, np.uint8)
    img[10:20, 5:60] = 20
    out = io.BytesIO()
    pillow_heif.from_bytes("L", img.shape[::-1], img.tobytes()).save(out, quality=-1)
    assert pillow_heif.open_heif(out).mode == "L"
    read = images.decode_gray(out.getvalue())
    gc.collect()
    owner = read
    while isinstance(owner, np.ndarray) and not owner.flags.owndata:
        owner = owner.base
    assert isinstance(owner, np.ndarray)  # not pi-heif's memoryview
    assert np.abs(read.astype(int) - img).max() <= 2


def test_rgba_transparent_pixels_become_paper():
    img = np.zeros((4, 4, 4), np.uint8)  # black, fully transparent
    img[0, 0] = (0, 0, 0, 255)  # one opaque black pixel
    out = images.decode_gray(_png(img))
    assert out.shape == (4, 4) and out[0, 0] == 0 and out[1, 1] == 255


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "empty"),
        (b"this is not an image" * 5, "not a readable image"),
        (_png(np.zeros((50, 50), np.uint8))[:60], "not a readable image"),
        # an iPhone's HEIC: its file type box, then nothing libheif can read
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200),
         r"^x.png: not a readable HEIC photo \(.*\)\. Copy it off the phone again"),
    ],
    ids=["empty", "non-image", "truncated", "heic"],
)
def test_unusable_bytes_are_corrupt(data, match):
    with pytest.raises(images.CorruptImageError, match=match):
        images.decode_gray(data, "x.png")


def _pdf(pages: list[np.ndarray], dpi: float, stretch: float = 1.0) -> bytes:
    """A PDF of gray `pages`, each an image (stored losslessly) on paper of its size at
    `dpi`, as a scanner writes it (`stretch`: the paper's height that many times the
    image's)."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument.new()
    for pixels in pages:
        h, w = pixels.shape
        page = pdf.new_page(w * 72 / dpi, h * 72 / dpi * stretch)
        bitmap = pdfium.PdfBitmap.new_native(w, h, pdfium.raw.FPDFBitmap_Gray)
        assert bitmap.stride == w
        bitmap.buffer[:] = pixels.tobytes()
        image = pdfium.PdfImage.new(pdf)
        image.set_bitmap(bitmap)
        image.set_matrix(pdfium.PdfMatrix().scale(w * 72 / dpi, h * 72 / dpi * stretch))
        page.insert_obj(image)
        page.gen_content()
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def test_a_pdfs_pages_are_drawn_at_300_dpi_from_their_paper(monkeypatch):
    """A scanner's PDF: every page, at the scale of the paper it covers (handwriting size is
    a trait of the writer); a scanned page pixel for pixel where it was scanned at 300 dpi,
    not blurred by drawing it again, and resampled from its own resolution otherwise."""
    import pypdfium2 as pdfium

    rng = np.random.default_rng(0)
    pages = [rng.integers(0, 256, (300, 452), dtype=np.uint8) for _ in range(2)]
    drawn, dpi = images.pdf_pages(_pdf(pages, 300), "x.pdf")
    assert dpi == images.SCAN_DPI and len(drawn) == 2
    for page, page_drawn in zip(pages, drawn):  # noise: any resampling would show
        np.testing.assert_array_equal(page_drawn, page)
    # the same pixels on twice the paper: scanned at 150 dpi
    [half], dpi = images.pdf_pages(_pdf(pages[:1], 150), "x.pdf")
    assert dpi == pytest.approx(150) and half.shape == (600, 904)
    assert [d.shape for d in images.decode_pages(_pdf(pages, 150), "x.pdf")] == [(600, 904)] * 2
    [small], dpi = images.pdf_pages(_pdf(pages[:1], 72), "x.pdf")  # 72: not a scan's; paper
    assert dpi == images.SCAN_DPI and small.shape == (1250, 1883)
    # stretched on its paper (150 dpi across, 75 down): not a scan's resolution; paper
    [tall], dpi = images.pdf_pages(_pdf(pages[:1], 150, 2.0), "x.pdf")
    assert dpi == images.SCAN_DPI and tall.shape == (1200, 904)
    vector = pdfium.PdfDocument.new()  # a page of no scan: drawn from its paper, A4 at 300 dpi
    vector.new_page(595.28, 841.89)
    out = io.BytesIO()
    vector.save(out)
    [a4], dpi = images.pdf_pages(out.getvalue(), "a4.pdf")
    assert dpi == images.SCAN_DPI and a4.shape == (3508, 2480) and a4.min() == 255
    with pytest.raises(images.CorruptImageError, match="x.pdf: a PDF where one image is "
                       "expected.*pdftoppm.*identify"):
        images.decode_gray(_pdf(pages, 300), "x.pdf")
    with pytest.raises(images.CorruptImageError, match="x.pdf: not a readable PDF.*pdftoppm"):
        images.pdf_pages(b"%PDF-1.7\n" + bytes(200), "x.pdf")
    with pytest.raises(images.ImageTooLargeError, match=r"x.pdf, page 1: 1\.5 x 1\.0 inches "):
        images.pdf_pages(_pdf(pages, 300), "x.pdf", max_pixels=100_000)
    monkeypatch.setattr(images, "MAX_PAGES", 1)
    with pytest.raises(images.MultiPageImageError, match="x.pdf: a PDF of 2 pages, more than 1"):
        images.pdf_pages(_pdf(pages, 300), "x.pdf")


def test_a_resolution_within_a_percent_of_300_dpi_is_300():
    """A PNG declares dots a metre: 300 dpi is 299.9994, read as 300, not as resampled."""
    plain = _png(np.zeros((5, 5), np.uint8))
    png = images.png_with_dpi(plain, 300)
    assert images.declared_dpi(png) != 300 and images.scan_dpi(png) == images.SCAN_DPI
    assert images.scan_dpi(plain, 302) == 300 and images.scan_dpi(plain, 305) == 305
    assert images.scan_dpi(images.png_with_dpi(plain, 600)) == pytest.approx(600, abs=0.01)


def _patched(tiff: bytes, directory: int, tag: int, value: int) -> bytes:
    """TIFF bytes with one directory's `tag` set to `value`: a LONG in place, or where it
    holds the offset of a RATIONAL (XResolution, 282), that rational's numerator, over 1."""
    order = "<" if tiff[:2] == b"II" else ">"
    data = bytearray(tiff)
    (at,) = struct.unpack_from(order + "I", data, 4)
    for _ in range(directory):
        (entries,) = struct.unpack_from(order + "H", data, at)
        (at,) = struct.unpack_from(order + "I", data, at + 2 + 12 * entries)
    (entries,) = struct.unpack_from(order + "H", data, at)
    for k in range(entries):
        entry = at + 2 + 12 * k
        found, kind = struct.unpack_from(order + "HH", data, entry)
        if found == tag and kind == 5:
            (offset,) = struct.unpack_from(order + "I", data, entry + 8)
            struct.pack_into(order + "II", data, offset, value, 1)
            return bytes(data)
        if found == tag:
            struct.pack_into(order + "I", data, entry + 8, value)
            return bytes(data)
    raise AssertionError(f"no tag {tag} in directory {directory}: OpenCV writes it")


def test_a_tiff_of_several_pages_is_read_whole_where_pages_are_asked_for(tmp_path, monkeypatch):
    """A scanner's multi-page TIFF: `decode_pages` reads every page; where one image is
    expected (a dataset's line), it is refused rather than its first page read without a
    word; past MAX_PAGES it is refused, saying how to split it."""
    page = np.full((40, 60), 250, np.uint8)
    assert cv2.imwritemulti(str(tmp_path / "three.tif"), [page, page // 2, page // 3])
    data = (tmp_path / "three.tif").read_bytes()
    read = images.decode_pages(data, "three.tif")
    assert [int(p[0, 0]) for p in read] == [250, 125, 83]
    with pytest.raises(images.MultiPageImageError, match="three.tif: a TIFF of several pages "
                       "where one image is expected.*tiffsplit .*three.tif.*identify"):
        images.read_gray(tmp_path / "three.tif")
    assert images.tiff_pages(data) == [0, 1, 2]
    cut = data[:-50]  # the last page's pixels cut off: said, not read as two pages
    assert images.tiff_pages(cut) == [0, 1, 2]
    with pytest.raises(images.CorruptImageError, match="three.tif, page 3 of 3: not readable"):
        images.decode_pages(cut, "three.tif")
    monkeypatch.setattr(images, "MAX_PAGES", 2)
    with pytest.raises(images.MultiPageImageError, match="three.tif: a TIFF of 3 pages, more "
                       "than 2"):
        images.decode_pages(data, "three.tif")
    # a scanner's thumbnail kept as a directory (NewSubfileType 1): not a page
    thumbnailed = _patched(data, 1, 254, 1)
    assert images.tiff_pages(thumbnailed) == [0, 2]
    assert [int(p[0, 0]) for p in images.decode_pages(thumbnailed, "three.tif")] == [250, 83]
    # first: where one image is expected the page is read, at the resolution it declares
    assert cv2.imwritemulti(str(tmp_path / "thumb.tif"), [page[::4, ::4] // 2, page],
                            [cv2.IMWRITE_TIFF_XDPI, 600, cv2.IMWRITE_TIFF_YDPI, 600,
                             cv2.IMWRITE_TIFF_RESUNIT, 2])
    thumb = _patched(_patched((tmp_path / "thumb.tif").read_bytes(), 0, 254, 1), 0, 282, 72)
    assert images.tiff_pages(thumb) == [1] and images.declared_dpi(thumb) == 600
    np.testing.assert_array_equal(images.decode_gray(thumb, "thumb.tif"), page)
    assert cv2.imwrite(str(tmp_path / "one.tif"), page)
    np.testing.assert_array_equal(images.read_gray(tmp_path / "one.tif"), page)
    [one] = images.decode_pages((tmp_path / "one.tif").read_bytes())
    np.testing.assert_array_equal(one, page)


def test_declared_size_over_limit_stops_before_decoding():
    data = bytearray(_png(np.zeros((8, 8), np.uint8)))
    data[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")
    with pytest.raises(images.ImageTooLargeError, match="x.png: declares 100000x100000"):
        images.decode_gray(bytes(data), "x.png")


def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        images.read_gray(tmp_path / "nope.png")


def test_a_pipe_and_standard_input_are_named_as_such(tmp_path, monkeypatch):
    """A pipe (process substitution, /dev/stdin) and `-` were called "no such image file",
    though they exist: the runtime reads an image by its path more than once (its hash,
    then its pixels), which a pipe cannot give."""
    import os

    os.mkfifo(tmp_path / "scan.png")
    with pytest.raises(FileNotFoundError, match=r"scan.png: a pipe or device, not an image "
                                                r"file\. Save the image to a file"):
        images.image_bytes(tmp_path / "scan.png")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^-: images are not read from standard "
                                                r"input\. Save the image to a file"):
        images.image_bytes("-")


def test_a_file_that_cannot_be_read_is_named(tmp_path, monkeypatch):
    """Not by a traceback: a permission error (which root, running the tests here, never
    meets) is an image error naming the file, for reading and for enrolment's hash alike."""
    from pathlib import Path

    from models.runtime.gallery import sha256_of

    locked = tmp_path / "locked.png"
    locked.write_bytes(cv2.imencode(".png", np.full((40, 200), 200, np.uint8))[1].tobytes())
    read_bytes = Path.read_bytes

    def refused(path: Path) -> bytes:
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refused)
    for read in (images.read_gray, images.read_scan, sha256_of):
        with pytest.raises(images.ImageError,
                           match=f"^{locked}: cannot be read \\(Permission denied\\)"):
            read(locked)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_photo_is_turned_as_its_exif_orientation_says(orientation):
    """As OpenCV turns it where it converts the colours itself (the oracle): a phone's
    portrait photo, stored as the sensor saw it, is read upright."""
    image = np.full((60, 160), 220, np.uint8)
    image[5:15, 5:120] = 0  # a mark that tells every turn and flip apart
    image[20:55, 140:150] = 60
    data = with_exif(cv2.imencode(".jpg", image)[1].tobytes(), {0x0112: orientation})
    assert images.exif_orientation(data) == orientation
    np.testing.assert_array_equal(
        images.decode_gray(data),
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE))


@pytest.mark.parametrize("orientation, turn", [(6, cv2.ROTATE_90_CLOCKWISE),
                                               (8, cv2.ROTATE_90_COUNTERCLOCKWISE)])
def test_a_tiff_is_turned_as_its_orientation_tag_says(orientation, turn):
    """A scan stored sideways with TIFF's Orientation tag (as some scanners and viewers
    write it), its first page and the next: read upright, by libtiff through OpenCV."""
    from PIL import Image, TiffImagePlugin

    image = np.full((60, 160), 220, np.uint8)
    image[5:15, 5:120] = 0
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[274] = orientation
    out = io.BytesIO()
    Image.fromarray(image).save(out, "TIFF", save_all=True, tiffinfo=tags,
                                append_images=[Image.fromarray(image)])
    for page in images.decode_pages(out.getvalue()):
        np.testing.assert_array_equal(page, cv2.rotate(image, turn))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_heic_photo_is_read_upright_as_a_jpeg_is(orientation):
    """An iPhone's HEIC, stored as the sensor saw it, turned by HEIF's own rotation and its
    EXIF alike: read as the JPEG of the same EXIF is (the oracle above), turned once."""
    image = np.full((60, 160), 220, np.uint8)
    image[5:15, 5:120] = 0  # a mark that tells every turn apart
    image[20:55, 140:150] = 60
    read = images.decode_gray(heic(image, {0x0112: orientation}))
    jpeg = images.decode_gray(with_exif(cv2.imencode(".jpg", image)[1].tobytes(),
                                        {0x0112: orientation}))
    assert read.shape == jpeg.shape
    assert np.abs(read.astype(int) - jpeg).max() <= 12  # the two codecs' errors, not a mark


def test_a_heic_cut_short_is_refused_naming_it():
    data = heic(np.full((64, 64), 200, np.uint8))
    assert images.decode_gray(data).shape == (64, 64)
    with pytest.raises(images.CorruptImageError,
                       match=r"^IMG_1.HEIC: not a readable HEIC photo \(.*\)\. Copy it off"):
        images.decode_gray(data[:len(data) // 2], "IMG_1.HEIC")


def test_an_iphones_tiled_heic_cut_short_is_refused_naming_it():
    """An iPhone writes a grid of 512-px tiles; libheif decodes one cut short with its
    missing tiles grey, where a cut JPEG or a HEIC of one image is refused. So is this."""
    page = np.full((700, 1100), 225, np.uint8)
    page[::40, :] = 40  # ink in every tile
    data = heic(page)
    assert images.decode_gray(data).shape == page.shape
    with pytest.raises(images.CorruptImageError,
                       match=r"^IMG_2.HEIC: not a readable HEIC photo \(cut short: its image "
                             r"data runs to byte [\d,]+, the file ends at [\d,]+\)\. Copy it off"):
        images.decode_gray(data[:-len(data) // 4], "IMG_2.HEIC")


def test_a_heic_without_its_decoder_says_what_to_install(monkeypatch):
    """pi-heif is the base install's; installed without it (--no-deps), one line says so."""
    monkeypatch.setitem(sys.modules, "pi_heif", None)  # its import fails
    with pytest.raises(images.ImageError, match=r"^IMG_1.HEIC: a HEIC photo, and pi-heif, .*"
                                                r"not installed: pip install pi-heif$"):
        images.decode_gray(heic(np.full((64, 64), 200, np.uint8)), "IMG_1.HEIC")


def test_the_camera_a_photos_exif_names_is_read():

    jpeg = cv2.imencode(".jpg", np.full((20, 30), 200, np.uint8))[1].tobytes()
    assert images.exif_camera(jpeg) is None
    assert images.exif_camera(with_camera(jpeg, "Apple", "iPhone 13")) == "Apple iPhone 13"
    assert images.exif_camera(with_camera(jpeg, "LGE", "Nexus 5")) == "LGE Nexus 5"  # inline
    assert images.exif_camera(_png(np.zeros((5, 5), np.uint8))) is None
    cut = with_camera(jpeg, "Apple", "iPhone 13")[:40]  # EXIF cut short: says nothing
    assert images.exif_camera(cut) is None
    gray = np.full((20, 30), 200, np.uint8)
    assert images.exif_camera(heic(gray, {0x010F: "Apple", 0x0110: "iPhone 15 Pro"})) == \
        "Apple iPhone 15 Pro"
    assert images.exif_camera(heic(gray)) is None
