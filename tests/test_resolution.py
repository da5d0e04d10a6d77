"""Scan resolution: every image is measured at IAM's 300 dpi, whatever it was scanned at."""

from __future__ import annotations

import json
import struct

import cv2
import numpy as np
import pytest

from iam_writers.cli import main
from iam_writers_tfds import images, synth
from iam_writers_tfds.images import (
    SCAN_DPI,
    ImageTooLargeError,
    declared_dpi,
    png_with_dpi,
    read_scan,
    scan_dpi,
)
from models.runtime.descriptors import Descriptor, Hinge
from models.runtime.identify import Features, hinge_similarity
from tests.conftest import cli, heic, with_exif


def _with_jfif(jpeg: bytes, unit: int, density: int) -> bytes:
    """`jpeg` whose JFIF header declares `density` per inch (unit 1) or per cm (2)."""
    data = bytearray(jpeg)
    assert data[6:11] == b"JFIF\x00"
    data[13] = unit
    data[14:18] = struct.pack(">HH", density, density)
    return bytes(data)


def _pages(seed: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two pages of one generated writer and one page of another."""
    rng = np.random.default_rng(seed)
    style = synth.WriterStyle.sample(rng)
    first, second = (synth.render_page(style, rng, lines=5)[0] for _ in range(2))
    other = synth.render_page(synth.WriterStyle.sample(np.random.default_rng(seed + 100)), rng,
                              lines=5)[0]
    return first, second, other


def test_the_resolution_a_png_jpeg_or_tiff_declares_is_read():
    page = _pages()[0]
    png = cv2.imencode(".png", page)[1].tobytes()
    assert declared_dpi(png) is None and scan_dpi(png) == SCAN_DPI
    assert declared_dpi(png_with_dpi(png, 600)) == pytest.approx(600, abs=0.01)
    assert scan_dpi(png_with_dpi(png, 600)) == pytest.approx(600, abs=0.01)
    for says_nothing in (72, 96, 144, 40):  # screen tools' defaults; too low to be a scan's
        assert scan_dpi(png_with_dpi(png, says_nothing)) == SCAN_DPI
    for scanner in (60, 80, 100, 150):  # a PNG's rounding: 80 dpi is 79.9988
        assert scan_dpi(png_with_dpi(png, scanner)) == pytest.approx(scanner, abs=0.02)
    assert scan_dpi(png_with_dpi(png, 600), 200) == 200  # --dpi wins over the file
    jpeg = cv2.imencode(".jpg", page)[1].tobytes()
    assert declared_dpi(jpeg) is None  # OpenCV's JFIF header gives an aspect ratio only
    assert declared_dpi(_with_jfif(jpeg, 1, 600)) == 600
    assert declared_dpi(_with_jfif(jpeg, 2, 236)) == pytest.approx(599.44)

    def tiff(*params: int) -> bytes:
        return cv2.imencode(".tif", page, list(params))[1].tobytes()

    assert declared_dpi(tiff()) is None
    dpi = (cv2.IMWRITE_TIFF_XDPI, 600, cv2.IMWRITE_TIFF_YDPI, 600)
    assert declared_dpi(tiff(cv2.IMWRITE_TIFF_RESUNIT, 2, *dpi)) == 600  # per inch
    assert declared_dpi(tiff(cv2.IMWRITE_TIFF_RESUNIT, 3, *dpi[:1], 236, *dpi[2:3], 236)
                        ) == pytest.approx(599.44)  # per cm
    assert declared_dpi(tiff(cv2.IMWRITE_TIFF_RESUNIT, 1, *dpi)) is None  # no unit
    assert declared_dpi(tiff(cv2.IMWRITE_TIFF_RESUNIT, 2, *dpi)[:40]) is None  # cut short


def test_a_page_scanned_at_another_resolution_is_measured_as_at_300_dpi(tmp_path):
    """Handwriting size is a trait of the writer, so a page scanned at twice the
    resolution, read as it is, looks much less like its own writer's (0.995 to 0.88 here,
    about another writer's); resampled, as much as at 300 dpi."""
    first, second, other = _pages()
    big = cv2.resize(second, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    (tmp_path / "big.png").write_bytes(png_with_dpi(cv2.imencode(".png", big)[1].tobytes(), 600))
    hinge = Descriptor(Hinge())
    references = Features(None, hinge, "page")([first, other])[1]

    def scores(features: Features, image) -> np.ndarray:
        return hinge_similarity(features([image])[1], references)[0]

    at_300 = scores(Features(None, hinge, "page"), second)
    as_is = scores(Features(None, hinge, "page"), big)
    assert at_300.argmax() == 0 and at_300[0] - as_is[0] > 0.05
    for resampled in (scores(Features(None, hinge, "page", 600.0), big),  # --dpi 600
                      scores(Features(None, hinge, "page"), tmp_path / "big.png")):  # declared
        assert resampled.argmax() == 0 and resampled[0] == pytest.approx(at_300[0], abs=0.01)


def test_the_size_limit_is_of_paper_not_of_pixels(tmp_path, monkeypatch):
    """A page scanned at 1,200 dpi holds 16 times the pixels of the same page at 300 dpi:
    the limit against decompression bombs is on the area it covers at 300 dpi."""
    page = _pages()[0]
    monkeypatch.setattr(images, "MAX_PIXELS", page.size // 2)  # the page at 300 dpi: too large
    png = cv2.imencode(".png", page)[1].tobytes()
    (tmp_path / "plain.png").write_bytes(png)
    (tmp_path / "600.png").write_bytes(png_with_dpi(png, 600))
    [read], source, _ = read_scan(tmp_path / "600.png")  # a quarter of the limit's paper at 600
    assert source == pytest.approx(600, abs=0.01)
    assert read.shape == (round(page.shape[0] / 2), round(page.shape[1] / 2))
    assert read_scan(tmp_path / "plain.png", 600)[0][0].shape == read.shape  # --dpi 600 alike
    with pytest.raises(ImageTooLargeError, match=r"plain\.png: .*pass --dpi with its resolution"):
        read_scan(tmp_path / "plain.png")
    monkeypatch.setattr(images, "MAX_PIXELS", page.size // 20)  # too large even at 1,200 dpi
    with pytest.raises(ImageTooLargeError, match=r"600\.png: .*above the limit of"):
        read_scan(tmp_path / "600.png", 2400)


def test_a_photo_above_the_limit_is_read_at_a_half_or_a_quarter(tmp_path, monkeypatch):
    """A phone's 48 to 200 MP photo (a JPEG, nothing to tell its resolution) is decoded at
    the least of a half or a quarter of its size that fits the limit, upright as its EXIF
    says; told a resolution (a scan's), or beyond a quarter, it is refused as before."""
    photo = np.full((400, 600), 230, np.uint8)
    photo[20:60, 30:200] = 20  # top left: tells the turn
    jpeg = cv2.imencode(".jpg", photo)[1].tobytes()
    turned = with_exif(jpeg, {0x0112: 6})  # EXIF 6: shown turned a quarter clockwise
    (tmp_path / "big.jpg").write_bytes(jpeg)
    (tmp_path / "turned.jpg").write_bytes(turned)
    monkeypatch.setattr(images, "MAX_PIXELS", photo.size // 3)
    [half], source, camera = read_scan(tmp_path / "big.jpg")
    assert source is None and camera is None and half.shape == (200, 300)
    assert abs(cv2.resize(photo, (300, 200), interpolation=cv2.INTER_AREA).astype(int)
               - half).max() <= 8  # libjpeg's scaling: a box filter, within JPEG's error
    [upright], _, _ = read_scan(tmp_path / "turned.jpg")
    assert upright.shape == (300, 200) and upright[15:100, 170:190].mean() < 60
    monkeypatch.setattr(images, "MAX_PIXELS", photo.size // 10)
    assert read_scan(tmp_path / "big.jpg")[0][0].shape == (100, 150)
    with pytest.raises(ImageTooLargeError, match=r"big\.jpg: declares 600x400 pixels"):
        read_scan(tmp_path / "big.jpg", 300)  # told it is a scan at 300 dpi
    monkeypatch.setattr(images, "MAX_PIXELS", photo.size // 17)
    with pytest.raises(ImageTooLargeError, match=r"big\.jpg: declares 600x400 pixels"):
        read_scan(tmp_path / "big.jpg")


def test_a_heic_above_the_limit_is_read_at_a_half_or_a_third(tmp_path, monkeypatch):
    """An iPhone's 48 MP HEIC: shrunk to half its size as a JPEG is by libjpeg, upright,
    with its camera; a 200 MP one to a third; beyond a third it is refused (libheif decodes
    it whole first)."""
    photo = np.full((400, 600), 230, np.uint8)
    photo[20:60, 30:200] = 20  # top left: tells the turn
    (tmp_path / "big.heic").write_bytes(heic(photo, {0x010F: "Apple", 0x0110: "iPhone 15"}))
    (tmp_path / "turned.heic").write_bytes(heic(photo, {0x0112: 6}))
    monkeypatch.setattr(images, "MAX_PIXELS", photo.size // 3)
    [half], source, camera = read_scan(tmp_path / "big.heic")
    assert source is None and camera == "Apple iPhone 15" and half.shape == (200, 300)
    assert abs(cv2.resize(photo, (300, 200), interpolation=cv2.INTER_AREA).astype(int)
               - half).max() <= 8
    [upright], _, _ = read_scan(tmp_path / "turned.heic")
    assert upright.shape == (300, 200) and upright[15:100, 170:190].mean() < 60
    with pytest.raises(ImageTooLargeError, match=r"big\.heic: declares 600x400 pixels"):
        read_scan(tmp_path / "big.heic", 300)  # told it is a scan at 300 dpi
    monkeypatch.setattr(images, "MAX_PIXELS", photo.size // 8)
    [third], _, _ = read_scan(tmp_path / "big.heic")
    assert third.shape == (134, 200)  # rounded up, as libjpeg's sizes are
    assert abs(cv2.resize(photo, (200, 134), interpolation=cv2.INTER_AREA).astype(int)
               - third).max() <= 8
    monkeypatch.setattr(images, "MAX_PIXELS", photo.size // 10)  # a JPEG's: a quarter
    with pytest.raises(ImageTooLargeError, match=r"big\.heic: declares 600x400 pixels"):
        read_scan(tmp_path / "big.heic")


def test_identify_says_which_files_it_resampled(tmp_path, capsys):
    first, second, _ = _pages()
    cv2.imwrite(str(tmp_path / "known.png"), first)
    big = cv2.resize(second, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    (tmp_path / "big.png").write_bytes(png_with_dpi(cv2.imencode(".png", big)[1].tobytes(), 600))
    assert cli("enroll", tmp_path / "g", "--writer", "ann", tmp_path / "known.png").returncode == 0
    proc = cli("identify", tmp_path / "g", tmp_path / "big.png", "--json")
    assert proc.returncode == 0, proc.stderr
    assert (f"note: resampled to 300 dpi from the resolution the file declares (--dpi "
            f"overrides it): {tmp_path / 'big.png'} at 600 dpi") in proc.stderr.splitlines()
    [declared] = json.loads(proc.stdout)
    assert declared["dpi"] == {str(tmp_path / "big.png"): pytest.approx(600, abs=0.01)}
    # the report, the record of the answer, says how each image was read
    assert cli("identify", tmp_path / "g", tmp_path / "big.png", "--report",
               tmp_path / "r.html").returncode == 0
    assert "big.png (page: 5 lines, outlined) (scanned at 600 dpi, resampled to 300)" \
        in (tmp_path / "r.html").read_text()
    proc = cli("identify", tmp_path / "g", tmp_path / "big.png", "--json", "--dpi", "300")
    [as_is] = json.loads(proc.stdout)
    assert "resampled" not in proc.stderr and "dpi" not in as_is  # read as at 300 dpi
    assert declared["top"][0]["similarity"] > as_is["top"][0]["similarity"] + 0.05
    proc = cli("identify", tmp_path / "g", tmp_path / "big.png", "--dpi", "0")
    assert proc.returncode == 2 and "a scan resolution from 80 to 2400 dpi, got 0" in proc.stderr
    # a paper is for a photo, whose resolution is not known: not with --dpi
    with pytest.raises(SystemExit, match="2"):
        main(["identify", str(tmp_path / "g"), str(tmp_path / "big.png"), "--dpi", "300",
              "--paper", "A5"])
    assert "--paper names a photographed page's paper" in capsys.readouterr().err


def test_the_note_names_a_few_files_and_counts_the_rest(tmp_path, capsys):
    from iam_writers.cli import _declared_resolutions

    png = cv2.imencode(".png", _pages()[0])[1].tobytes()
    files = []
    for name, dpi in (("a", 600), ("b", 600), ("c", 600), ("d", 600), ("e", 200), ("f", None)):
        files.append(tmp_path / f"{name}.png")
        files[-1].write_bytes(png_with_dpi(png, dpi) if dpi else png)
    _declared_resolutions(files, None)
    assert capsys.readouterr().err == (
        "note: resampled to 300 dpi from the resolution the file declares (--dpi overrides "
        f"it): {files[0]}, {files[1]}, {files[2]} and 1 more at 600 dpi; {files[4]} at 200 "
        "dpi\n")
    _declared_resolutions(files, 300.0)  # --dpi given: nothing to say
    assert capsys.readouterr().err == ""
