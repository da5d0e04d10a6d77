import io

import cv2
import numpy as np
import pytest

from iam_writers_tfds import images


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
    ],
    ids=["empty", "non-image", "truncated"],
)
def test_unusable_bytes_are_corrupt(data, match):
    with pytest.raises(images.CorruptImageError, match=match):
        images.decode_gray(data, "x.png")


def _pdf(pages: list[np.ndarray], dpi: float) -> bytes:
    """A PDF of gray `pages`, each on paper of its size at `dpi`, as a scanner writes it."""
    from PIL import Image

    out = io.BytesIO()
    first, *rest = [Image.fromarray(p) for p in pages]
    first.save(out, "PDF", resolution=dpi, save_all=True, append_images=rest)
    return out.getvalue()


def test_a_pdfs_pages_are_drawn_at_300_dpi_from_their_paper(monkeypatch):
    """A scanner's PDF: every page, at the scale of the paper it covers (handwriting size is
    a trait of the writer), whatever the resolution of the images inside it."""
    pages = [np.full((300, 450), 250, np.uint8) for _ in range(2)]
    pages[0][100:140, 50:400], pages[1][200:220, 20:300] = 30, 60  # a stroke on each
    drawn = images.decode_pages(_pdf(pages, 300), "x.pdf")
    assert len(drawn) == 2 and all(d.ndim == 2 and d.dtype == np.uint8 for d in drawn)
    for page, page_drawn in zip(pages, drawn):
        assert abs(page_drawn.shape[0] - 300) <= 1 and abs(page_drawn.shape[1] - 450) <= 1
        h, w = map(min, zip(page.shape, page_drawn.shape))
        assert np.abs(page_drawn[:h, :w].astype(int) - page[:h, :w]).mean() < 3
    # the same pixels on twice the paper
    [half] = images.decode_pages(_pdf(pages[:1], 150), "x.pdf")
    assert abs(half.shape[0] - 600) <= 1 and abs(half.shape[1] - 900) <= 1
    with pytest.raises(images.CorruptImageError, match="x.pdf: a PDF where one image is "
                       "expected.*pdftoppm.*identify"):
        images.decode_gray(_pdf(pages, 300), "x.pdf")
    with pytest.raises(images.CorruptImageError, match="x.pdf: not a readable PDF.*pdftoppm"):
        images.decode_pages(b"%PDF-1.7\n" + bytes(200), "x.pdf")
    with pytest.raises(images.ImageTooLargeError, match=r"x.pdf, page 1: 1\.5 x 1\.0 inches "):
        images.decode_pages(_pdf(pages, 300), "x.pdf", max_pixels=100_000)
    monkeypatch.setattr(images, "MAX_PAGES", 1)
    with pytest.raises(images.MultiPageImageError, match="x.pdf: a PDF of 2 pages, more than 1"):
        images.decode_pages(_pdf(pages, 300), "x.pdf")


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
    monkeypatch.setattr(images, "MAX_PAGES", 2)
    with pytest.raises(images.MultiPageImageError, match="three.tif: a TIFF of more than 2 pages"):
        images.decode_pages(data, "three.tif")
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
