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


def test_a_pdf_or_a_tiff_of_several_pages_is_refused_saying_how_to_split_it(tmp_path):
    """A scanner's PDF, or a multi-page TIFF whose first page alone would have been read
    without a word."""
    with pytest.raises(images.CorruptImageError, match="x.pdf: a PDF, not an image.*pdftoppm"):
        images.decode_gray(b"%PDF-1.7\n" + bytes(200), "x.pdf")
    page = np.full((40, 60), 250, np.uint8)
    assert cv2.imwritemulti(str(tmp_path / "two.tif"), [page, page // 2])
    with pytest.raises(images.MultiPageImageError, match="two.tif: a TIFF of several pages.*"
                       "tiffsplit .*two.tif.*--document"):
        images.read_gray(tmp_path / "two.tif")
    assert cv2.imwrite(str(tmp_path / "one.tif"), page)
    np.testing.assert_array_equal(images.read_gray(tmp_path / "one.tif"), page)


def test_declared_size_over_limit_stops_before_decoding():
    data = bytearray(_png(np.zeros((8, 8), np.uint8)))
    data[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")
    with pytest.raises(images.ImageTooLargeError, match="x.png: declares 100000x100000"):
        images.decode_gray(bytes(data), "x.png")


def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        images.read_gray(tmp_path / "nope.png")
