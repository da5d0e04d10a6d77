"""Decoding handwriting images into 8-bit grayscale, with the guards real data needs.

Only numpy and OpenCV (and pi-heif, for a HEIC) are imported here, so the TF-free edge
runtime can share it.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np

if TYPE_CHECKING:
    from pi_heif import HeifFile

# Decoding failures become our own errors naming the file and the fix; OpenCV's log lines
# about the same failures would only be noise beside them.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

# A full IAM form scan is 2479x3542 (8.8 MP); anything far above is a bomb or a mistake.
MAX_PIXELS = 40_000_000
SCAN_DPI = 300  # IAM's scans: the resolution every model and descriptor here is made for
# below this a page holds too few pixels of handwriting to name its writer: genuine pages
# are answered "unknown" more and more, and at 40 dpi wrong writers are named with the
# strongest support (docs/results.md, photos and scans at low resolution)
MIN_DPI = 80
# a file's declared resolution is believed in this range (below MIN_DPI, to be refused),
# but for the defaults of screen tools (a screenshot's, an image editor's, a Retina
# screenshot's), which say nothing about a scan
BELIEVED_DPI = (50, 1200)
SCREEN_DPI = (72, 96, 144)
# a camera's photo above MAX_PIXELS is decoded at a half or a quarter of its size by libjpeg's
# own scaling, as the phone's 12 MP mode would take it: its sheet is read at 300 dpi anyway
PHOTO_SCALES = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4}
MAX_PAGES = 20  # pages of one TIFF read as one document; a longer file is split by its user
# the files taken by their names for images where a folder is read whole (a folder of writers'
# folders): what OpenCV, pypdfium2 and pi-heif read, in any case
SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jp2", ".tif", ".tiff", ".bmp", ".dib",
                      ".webp", ".pbm", ".pgm", ".ppm", ".pnm", ".pdf", ".heic", ".heif", ".hif"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")
# an ISO media file's type box and major brand: HEIF's HEVC images (an iPhone's photos),
# which OpenCV has no decoder for: libheif reads them (pi-heif)
_HEIF_BRANDS = {b"ftyp" + brand for brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim",
                                              b"heis", b"mif1", b"msf1")}
# libheif decodes a HEIC whole before it is shrunk, so a third of its size at most (360 MP,
# about 2 GB), not a quarter as a JPEG's own scaling allows: an iPhone's 48 MP is read at a
# half, a Galaxy S24 Ultra's 200 MP at a third (4.4 s, 0.9 GB: docs/results.md, HEIC)
HEIF_SCALES = (2, 3)


class ImageError(ValueError):
    """An image that cannot be used. Subclasses say whether a build may skip it."""


class CorruptImageError(ImageError):
    """Empty, truncated or not an image at all: builds skip these with a counted warning."""


class MultiPageImageError(CorruptImageError):
    """A TIFF of several pages where one image is expected, or of more than MAX_PAGES."""


class ImageTooLargeError(ImageError):
    """Declared size above MAX_PIXELS: builds stop, since it is likely a decompression bomb."""


def png_with_dpi(png: bytes, dpi: float) -> bytes:
    """A PNG file's bytes with a pHYs chunk declaring `dpi` (pixels per metre), so that
    whoever opens it, `declared_dpi` included, knows its scale."""
    per_metre = round(dpi / 0.0254)
    body = b"pHYs" + struct.pack(">IIB", per_metre, per_metre, 1)
    chunk = struct.pack(">I", 9) + body + struct.pack(">I", zlib.crc32(body))
    end_of_header = 8 + 8 + 13 + 4  # signature, IHDR's length and type, its data, its CRC
    return png[:end_of_header] + chunk + png[end_of_header:]


def png_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a PNG header without decoding it, or None if not a PNG."""
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return height, width


def declared_dpi(data: bytes) -> float | None:
    """The horizontal resolution in dots per inch that a PNG (pHYs chunk), a JPEG (JFIF
    header) or a TIFF (its first image's XResolution) declares, or None when it declares
    none."""
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_dpi(data)
    if data.startswith(_PNG_SIGNATURE):
        at = len(_PNG_SIGNATURE)
        while at + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[at:at + 8])
            if kind == b"pHYs" and length == 9 and at + 17 <= len(data):
                x, _, unit = struct.unpack(">IIB", data[at + 8:at + 17])
                return x * 0.0254 if unit == 1 and x else None  # unit 1: per metre
            if kind in (b"IDAT", b"IEND"):  # pHYs must come before the image data
                return None
            at += 12 + length
        return None
    if data[:2] == b"\xff\xd8" and data[6:11] == b"JFIF\x00" and len(data) >= 16:
        unit, x = data[13], struct.unpack(">H", data[14:16])[0]
        return {1: float(x), 2: x * 2.54}.get(unit) if x else None  # per inch, per cm
    return None


def _tiff_dpi(data: bytes) -> float | None:
    """XResolution (tag 282) in ResolutionUnit (tag 296: 2 inch, the default; 3 cm) of a
    TIFF's first page (its first image file directory that is no thumbnail), read whole."""
    order, directories = _tiff_directories(data)
    first = next((d for d in directories if not _reduced(d, order)), None)
    if first is None or not first.whole or 282 not in first.tags or first.tags[282].kind != 5:
        return None  # 282 is a RATIONAL: the offset of two uint32
    try:
        (offset,) = struct.unpack(order + "I", first.tags[282].value)
        numerator, denominator = struct.unpack_from(order + "II", data, offset)
    except struct.error:  # cut short: says nothing
        return None
    unit = struct.unpack(order + "H", first.tags[296].value[:2])[0] if 296 in first.tags else 2
    if not denominator or not numerator:
        return None
    return {2: numerator / denominator, 3: numerator / denominator * 2.54}.get(unit)


def at_scan_dpi(image: np.ndarray, dpi: float) -> np.ndarray:
    """`image`, scanned at `dpi`, resampled to SCAN_DPI: handwriting size is a trait of the
    writer, so every image must be measured on the same scale."""
    scale = SCAN_DPI / dpi
    if nominal(dpi) == SCAN_DPI:
        return image
    return cv2.resize(image, None, fx=scale, fy=scale,
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def nominal(dpi: float) -> float:
    """SCAN_DPI where `dpi` is within 1% of it (a declaration's rounding: 300 dpi in a PNG
    is 299.9994), else `dpi`: images at it are read as they are."""
    return SCAN_DPI if abs(SCAN_DPI / dpi - 1) < 0.01 else dpi


def scan_dpi(data: bytes, dpi: float | None = None) -> float:
    """The resolution an image file is read at: `dpi` when given, else the one the file
    declares if believed (`_believed`), else SCAN_DPI; within 1% of SCAN_DPI, SCAN_DPI
    (`nominal`)."""
    return _read_at(dpi or believed_dpi(data))


def _read_at(told: float | None) -> float:
    """The resolution an image is read at, given the one told (by `--dpi`, or declared and
    believed): `nominal` of it; SCAN_DPI where none was."""
    return nominal(told) if told else SCAN_DPI


def believed_dpi(data: bytes) -> float | None:
    """The resolution an image file declares where it is believed (`_believed`), else None."""
    declared = declared_dpi(data)
    return declared if declared and _believed(declared) else None


def _believed(dpi: float) -> bool:
    """Whether a declared resolution lies in BELIEVED_DPI and is none of SCREEN_DPI, give
    or take 1%: a declaration's rounding (100 dpi in a PNG is 99.9998)."""
    return (0.99 * BELIEVED_DPI[0] <= dpi <= 1.01 * BELIEVED_DPI[1]
            and all(abs(dpi / screen - 1) >= 0.01 for screen in SCREEN_DPI))


def decode_gray(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode PNG, JPEG, TIFF or HEIC bytes into a 2-D uint8 grayscale array (dark ink on
    light paper).

    16-bit images are scaled to 8 bits, colour is converted to gray, and transparent
    pixels are composited over white paper. A TIFF of several pages is refused: one image
    is expected here (`decode_pages` reads them all).
    """
    if is_pdf(data):
        raise CorruptImageError(f"{name}: a PDF where one image is expected. Export its pages "
                                "as PNG or TIFF at 300 dpi (for example `pdftoppm -r 300 -png "
                                f"{name} page`), or pass it to enroll, identify, predict or "
                                "verify, which read a PDF's pages as one document.")
    indices = tiff_pages(data)
    if len(indices) > 1:
        raise MultiPageImageError(
            f"{name}: a TIFF of several pages where one image is expected. Split it into a "
            f"file a page (for example `tiffsplit {name}`), or pass it to enroll, identify, "
            "predict or verify, which read a TIFF's pages as one document.")
    return _decoded(data, indices[0], 1, 1, name, max_pixels)


def is_pdf(data: bytes) -> bool:
    return data.startswith(b"%PDF")


def decode_pages(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS
                 ) -> list[np.ndarray]:
    """The pages of image bytes, each as `decode_gray` makes it: every page of a TIFF or a
    PDF (a scanner's document, up to MAX_PAGES; a PDF's at SCAN_DPI, `pdf_pages`), the one
    image of any other file."""
    if is_pdf(data):
        return pdf_pages(data, name, max_pixels)[0]
    indices = tiff_pages(data)
    if len(indices) > MAX_PAGES:
        raise MultiPageImageError(f"{name}: a TIFF of {len(indices)} pages, more than "
                                  f"{MAX_PAGES}. Split it into documents of fewer pages (for "
                                  f"example `tiffsplit {name}`) and pass those.")
    return [_decoded(data, index, n, len(indices), name, max_pixels)
            for n, index in enumerate(indices, 1)]


def _decoded(data: bytes, index: int, n: int, count: int, name: str, max_pixels: int
             ) -> np.ndarray:
    """Image file directory `index` of TIFF bytes (0: also the image of any other file),
    page `n` of `count`, as `decode_gray` makes it."""
    if index == 0:
        return _first_page(data, name, max_pixels)
    page = _page(data, index)
    if page is None:
        raise CorruptImageError(f"{name}, page {n} of {count}: not readable (truncated or "
                                "corrupt). Scan or export the document again.")
    return _gray(page, f"{name}, page {n}" if count > 1 else name, max_pixels)


class _Entry(NamedTuple):
    """A TIFF directory entry: its type, its count of values, and its values or their
    offset (4 bytes)."""

    kind: int
    count: int
    value: bytes


class _Directory(NamedTuple):
    """A TIFF image file directory: {tag: `_Entry`}, and whether all its entries were read
    (a file cut short inside them: not)."""

    tags: dict[int, _Entry]
    whole: bool


def _tiff_directories(data: bytes) -> tuple[str, list[_Directory]]:
    """(the byte order of TIFF bytes, its image file directories by following their chain);
    a chain cut short or looping ends where it does, and for any other file it is empty."""
    if data[:4] not in _TIFF_SIGNATURES:
        return "<", []
    order = "<" if data[:2] == b"II" else ">"
    directories: list[_Directory] = []
    seen: set[int] = set()
    try:
        (at,) = struct.unpack_from(order + "I", data, 4)
        while at and at not in seen and len(seen) <= 10 * MAX_PAGES:
            seen.add(at)
            (entries,) = struct.unpack_from(order + "H", data, at)
            directories.append(_Directory({}, False))
            for k in range(entries):
                tag, *entry = struct.unpack_from(order + "HHI4s", data, at + 2 + 12 * k)
                directories[-1].tags[tag] = _Entry(*entry)
            directories[-1] = directories[-1]._replace(whole=True)
            (at,) = struct.unpack_from(order + "I", data, at + 2 + 12 * entries)
    except struct.error:
        pass
    return order, directories


def _reduced(directory: _Directory, order: str) -> bool:
    """A reduced-resolution copy of a page (a scanner's thumbnail): NewSubfileType bit 0."""
    kind, _, value = directory.tags.get(254, _Entry(4, 1, bytes(4)))
    form = {3: "H", 4: "I"}.get(kind)  # a LONG by the standard; a SHORT from some writers
    return bool(form and struct.unpack_from(order + form, value)[0] & 1)


def tiff_pages(data: bytes) -> list[int]:
    """Which of the image file directories of TIFF bytes are pages: all but reduced-
    resolution copies (`_reduced`); a directory cut short is a page, for decoding to judge.
    [0] for any other file."""
    order, directories = _tiff_directories(data)
    return [i for i, d in enumerate(directories) if not _reduced(d, order)] or [0]


def pdf_pages(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS
              ) -> tuple[list[np.ndarray], float]:
    """(a PDF's pages in gray at SCAN_DPI, the resolution its first page was scanned at),
    drawn by PDFium (Chrome's renderer). A page that is one scanned image is drawn pixel for
    pixel at the image's own resolution (its pixels over its paper, `_scanned_at`) and
    resampled from it as a declared resolution is, so that the scan is not blurred
    by a second resampling; any other page is drawn at SCAN_DPI from its paper size. Either
    way handwriting comes out at the scale of the paper. `max_pixels` bounds the paper."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as err:
        raise CorruptImageError(f"{name}: not a readable PDF ({err}). Re-export it, or export "
                                "its pages as PNG or TIFF at 300 dpi (for example `pdftoppm -r "
                                f"300 -png {name} page`) and pass those.") from None
    try:
        if not len(pdf):
            raise CorruptImageError(f"{name}: a PDF without a page. Pass a scan of handwriting.")
        if len(pdf) > MAX_PAGES:
            raise MultiPageImageError(f"{name}: a PDF of {len(pdf)} pages, more than "
                                      f"{MAX_PAGES}. Split it into documents of fewer pages "
                                      f"(for example `pdfseparate {name} page-%d.pdf`) and "
                                      "pass those.")
        pages, sources = [], []
        for k in range(len(pdf)):
            page = pdf[k]
            try:
                width, height = (side / 72 for side in page.get_size())  # points to inches
                if width * height * SCAN_DPI ** 2 > max_pixels:
                    raise ImageTooLargeError(
                        f"{name}, page {k + 1}: {width:.1f} x {height:.1f} inches of paper is "
                        f"{width * height * SCAN_DPI ** 2:,.0f} pixels at {SCAN_DPI} dpi, above "
                        f"the limit of {max_pixels:,}. Pass a scan of a page of handwriting.")
                source = _scanned_at(page) or SCAN_DPI
                # PDFium draws ceil(points x scale) columns: a hair under the scale that
                # gives a whole number of them, lest a float's last bit add one
                columns = round(page.get_width() * source / 72)
                drawn = page.render(scale=(columns - 1e-3) / page.get_width(),
                                    grayscale=True).to_numpy()
                source = nominal(source)
                pages.append(at_scan_dpi(np.ascontiguousarray(drawn), source))
                sources.append(source)
            except pdfium.PdfiumError as err:
                raise CorruptImageError(f"{name}, page {k + 1}: not readable ({err}). "
                                        "Re-export the PDF.") from None
            finally:
                page.close()
        return pages, sources[0]
    finally:
        pdf.close()


def _scanned_at(page) -> float | None:
    """The resolution of a PDF page that is one image covering it (a scanner's page): the
    image's pixels over the paper's inches, where both sides give the same (not turned or
    stretched on the page) and it is believed (`_believed`); else None."""
    import pypdfium2.raw as pdfium_c

    images = list(page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=1))
    if len(images) != 1:
        return None
    left, bottom, right, top = images[0].get_bounds()
    width, height = page.get_size()
    if right - left < 0.98 * width or top - bottom < 0.98 * height:
        return None
    columns, rows = images[0].get_px_size()
    dpi = round(columns / (width / 72), 2)  # points are float32
    return dpi if _believed(dpi) and abs(rows / (height / 72) / dpi - 1) < 0.01 else None


def _first_page(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """The image of `decode_gray`, or a TIFF's first page, with the guards it names."""
    if not data:
        raise CorruptImageError(f"{name}: the file is empty. Re-download it or delete it.")
    heif = _heif(data, name) if is_heif(data) else None
    size = heif.size[::-1] if heif is not None else png_size(data) or jpeg_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageTooLargeError(
            f"{name}: declares {size[1]}x{size[0]} pixels, above the limit of {max_pixels:,}. "
            "Remove the file or downscale it; it may be a decompression bomb."
        )
    if heif is not None:
        return _heif_gray(heif, name, max_pixels)
    return _upright(_gray(_imdecode(data, name, cv2.IMREAD_UNCHANGED), name, max_pixels),
                    exif_orientation(data))


def is_heif(data: bytes) -> bool:
    """Whether image bytes are HEIF's HEVC images (a HEIC: an iPhone's photo), by their
    file type box."""
    return data[4:12] in _HEIF_BRANDS


def _heif(data: bytes, name: str) -> HeifFile:
    """libheif's reading of HEIF bytes: its boxes parsed, its image not yet decoded; an
    unreadable one, or one cut short, raises, naming the file."""
    try:  # here, not at the top: it brings Pillow, which only a HEIC needs
        import pi_heif
    except ImportError:  # installed without its dependencies
        raise ImageError(f"{name}: a HEIC photo, and pi-heif, which reads it, is not "
                         "installed: pip install pi-heif") from None
    try:
        heif = pi_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True, bgr_mode=True)
    except ValueError as err:
        raise _unreadable_heif(name, str(err)) from None
    if (end := _heif_data_end(data)) > len(data):
        raise _unreadable_heif(name, f"cut short: its image data runs to byte {end:,}, the "
                                     f"file ends at {len(data):,}")
    return heif


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, end) of each ISO media box in data[start:end]; a size of 0 runs to
    `end`, and one that cannot be a box's ends the walk."""
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        body = start + 8
        if size == 1 and body + 8 <= end:
            size, body = struct.unpack_from(">Q", data, body)[0], body + 8
        size = size or end - start
        if size < body - start:
            return
        yield kind, body, start + size
        start += size


def heif_meta_box(data: bytes, kind: bytes) -> tuple[int, int] | None:
    """(body start, end) of the box `kind` in a HEIF's `meta` box (`iloc`: where its items
    lie, `iinf`: what they are), or None."""
    meta = next(((b, e) for k, b, e in _boxes(data, 0, len(data)) if k == b"meta"), None)
    return meta and next(((b, e) for k, b, e in _boxes(data, meta[0] + 4, meta[1])
                          if k == kind), None)


def _heif_data_end(data: bytes) -> int:
    """Where the last image data a HEIF's item locations (`iloc`) point into the file ends:
    past the end of a file cut short. libheif refuses such an image, but decodes a tiled one
    (an iPhone's) with its missing tiles grey."""
    iloc = heif_meta_box(data, b"iloc")
    if not iloc or iloc[1] > len(data):
        return 0  # no locations to check, or cut within them: libheif refuses it itself
    body, stop = iloc
    version = data[body]
    sizes = data[body + 4] >> 4, data[body + 4] & 15, data[body + 5] >> 4, data[body + 5] & 15
    offset_size, length_size, base_size, index_size = sizes
    at = body + 6

    def read(n: int) -> int:
        nonlocal at
        at += n
        return int.from_bytes(data[at - n:at], "big")

    end = 0
    try:
        for _ in range(read(4 if version == 2 else 2)):
            read(4 if version == 2 else 2)  # item ID
            method = read(2) & 15 if version in (1, 2) else 0
            in_file = read(2) == 0 and method == 0  # data reference 0: this file, at offsets
            base = read(base_size)
            for _ in range(read(2)):
                read(index_size if version in (1, 2) else 0)
                offset, length = read(offset_size), read(length_size)
                if in_file and length:
                    end = max(end, base + offset + length)
            if at > stop:
                return 0  # not the iloc its version says: libheif judges it
    except IndexError:
        return 0
    return end


def _heif_gray(heif: HeifFile, name: str, max_pixels: int) -> np.ndarray:
    """The primary image of a `_heif` in gray (`_gray`), turned upright by libheif as HEIF's
    own rotation and mirroring say (its EXIF orientation only repeats them: not applied
    again), in memory of its own: numpy's view of libheif's pixels dies with `heif`."""
    try:
        image = np.asarray(heif)
    except ValueError as err:  # the image data corrupt
        raise _unreadable_heif(name, str(err)) from None
    gray = _gray(image, name, max_pixels)
    return gray.copy() if np.may_share_memory(gray, image) else gray  # a monochrome HEIC's


def _unreadable_heif(name: str, why: str) -> CorruptImageError:
    why = " ".join(why.split())  # libheif's messages may end in a line break
    return CorruptImageError(f"{name}: not a readable HEIC photo ({why}). Copy it off the "
                             "phone again, or export it as JPEG.")


def _imdecode(data: bytes, name: str, flags: int) -> np.ndarray:
    """OpenCV's decoding of image bytes; what it cannot decode raises, naming the file."""
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        raise CorruptImageError(
            f"{name}: not a readable image (truncated, corrupt or another file type). "
            "Re-download it or delete it."
        )
    return img


def reduced_photo(data: bytes, name: str) -> np.ndarray | None:
    """A JPEG or a HEIC above MAX_PIXELS (a phone's 48 to 200 MP modes) in gray at the
    least of `PHOTO_SCALES` (a HEIC's: `HEIF_SCALES`) that brings it within, upright; None
    for any other image."""
    heif = _heif(data, name) if is_heif(data) else None
    size = heif.size[::-1] if heif is not None else jpeg_size(data)
    if size is None or size[0] * size[1] <= MAX_PIXELS:
        return None
    factor = next((f for f in (PHOTO_SCALES if heif is None else HEIF_SCALES)
                   if size[0] * size[1] <= MAX_PIXELS * f * f), None)
    if factor is None:
        return None  # too large even so: refused as any image is (`decode_gray`)
    if heif is not None:  # shrunk as libjpeg's scaling would: a box filter, size rounded up
        whole = _heif_gray(heif, name, MAX_PIXELS * factor * factor)
        return cv2.resize(whole, (-(-size[1] // factor), -(-size[0] // factor)),
                          interpolation=cv2.INTER_AREA)
    flags = PHOTO_SCALES[factor] | cv2.IMREAD_IGNORE_ORIENTATION
    return _upright(_gray(_imdecode(data, name, flags), name, MAX_PIXELS),
                    exif_orientation(data))


# a phone stores a photo as its sensor saw it and says in EXIF how to turn it (values 2-8):
# OpenCV turns it only when it converts the colours itself, which decode_gray does not ask
_TURNS = {2: lambda a: cv2.flip(a, 1), 3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
          4: lambda a: cv2.flip(a, 0), 5: cv2.transpose,
          6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
          7: lambda a: cv2.rotate(cv2.transpose(a), cv2.ROTATE_180),
          8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE)}


def _upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """`image` turned as its EXIF orientation says (1: as it is)."""
    return _TURNS[orientation](image) if orientation in _TURNS else image


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, the bytes after its length) of each segment of JPEG bytes before its image
    data; none for any other file, and none from where a file is cut short."""
    if data[:2] != b"\xff\xd8":
        return
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF and data[at + 1] not in (0xD9, 0xDA):
        (length,) = struct.unpack_from(">H", data, at + 2)  # until the image data (SOS)
        yield data[at + 1], data[at + 4:at + 2 + length]
        at += 2 + length


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header without decoding it, or None."""
    for marker, body in _jpeg_segments(data):
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(body) >= 5:
            height, width = struct.unpack_from(">HH", body, 1)  # SOF0-15: after the precision
            return (height, width) if height and width else None
    return None


def _exif(tiff: bytes | None) -> tuple[bytes, str, _Directory] | None:
    """(the TIFF body of an EXIF, its byte order, its first directory), or None where there
    is none."""
    order, directories = _tiff_directories(tiff or b"")
    return (tiff, order, directories[0]) if directories else None


def _jpeg_exif(data: bytes) -> bytes | None:
    """The TIFF body of a JPEG's EXIF segment, or None."""
    return next((body[6:] for marker, body in _jpeg_segments(data)
                 if marker == 0xE1 and body[:6] == b"Exif\x00\x00"), None)


def _heif_exif(data: bytes) -> bytes | None:
    """The TIFF body of a HEIC's EXIF item (after the header pi-heif may leave), or None;
    an unreadable HEIC has none here (its decoding says why)."""
    try:
        exif = _heif(data, "").info.get("exif")
    except CorruptImageError:
        return None
    return exif.removeprefix(b"Exif\x00\x00") if exif else None


def exif_camera(data: bytes) -> str | None:
    """The camera a JPEG's or a HEIC's EXIF names ("Make Model", as phones and cameras write
    them), else None: a photo, whose resolution says nothing of the handwriting's size."""
    if (exif := _exif(_heif_exif(data) if is_heif(data) else _jpeg_exif(data))) is None:
        return None
    names = [_ascii(*exif, tag) for tag in (0x010F, 0x0110)]
    return " ".join(n for n in names if n) or None


def _ascii(tiff: bytes, order: str, directory: _Directory, tag: int) -> str | None:
    """A directory's ASCII entry (type 2): in its 4 bytes, or at the offset they hold."""
    kind, count, value = directory.tags.get(tag, _Entry(0, 0, b""))
    if kind != 2 or not count:
        return None
    raw = value if count <= 4 else tiff[struct.unpack(order + "I", value)[0]:][:min(count, 64)]
    return raw.split(b"\x00")[0].decode("ascii", "replace").strip() or None


def exif_orientation(data: bytes) -> int:
    """The orientation (1-8) a JPEG's EXIF gives, else 1: the image as stored. (A HEIC's is
    applied by libheif itself: `_heif_gray`.)"""
    if (exif := _exif(_jpeg_exif(data))) is None:
        return 1
    _, order, first = exif
    kind, _, value = first.tags.get(0x0112, _Entry(0, 0, b""))
    return struct.unpack_from(order + "H", value)[0] if kind == 3 else 1


def _gray(img: np.ndarray, name: str, max_pixels: int) -> np.ndarray:
    """A decoded image as 2-D uint8 gray, ink dark on light paper; above `max_pixels`, refused."""
    if img.shape[0] * img.shape[1] > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {img.shape[1]}x{img.shape[0]} pixels is above the limit of "
            f"{max_pixels:,}. Remove or downscale it."
        )
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 3:
        channels = img.shape[2]
        if channels == 4:
            alpha = img[:, :, 3:4].astype(np.float32) / 255.0
            rgb = img[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
            img = cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_BGR2GRAY)
        elif channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        else:
            img = img[:, :, 0]
    return np.ascontiguousarray(img)


def _page(data: bytes, index: int) -> np.ndarray | None:
    """Page `index` (from 0) of TIFF bytes, decoded alone, or None where it has none."""
    try:
        ok, mats = cv2.imdecodemulti(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED,
                                     range=(index, index + 1))
    except (cv2.error, TypeError):  # TypeError: an OpenCV before 4.8 takes no range
        return None
    return mats[0] if ok and mats and mats[0].size else None


def image_file(path: str | Path) -> Path:
    """The path of an existing file; a folder, a pipe or device (read more than once: its
    hash, then its image), standard input (`-`) or a missing path raises, saying which."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path}: a folder, not an image file. Pass its images (a "
                                "shell glob such as DIR/*.png).")
    if str(path) == "-" and not path.exists():
        raise FileNotFoundError("-: images are not read from standard input. Save the image "
                                "to a file (e.g. scanimage --output-file scan.png) and pass "
                                "its path.")
    if path.exists() and not path.is_file():
        raise FileNotFoundError(f"{path}: a pipe or device, not an image file. Save the image "
                                "to a file and pass its path.")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file. Check the path.")
    return path


def image_bytes(path: str | Path) -> bytes:
    """The bytes of an existing image file (`image_file`); one that cannot be read (no
    permission, an I/O error) raises, naming it."""
    path = image_file(path)
    try:
        return path.read_bytes()
    except OSError as err:
        raise ImageError(f"{path}: cannot be read ({err.strerror or err}). Check that the "
                         "file is readable by this user.") from None


def read_gray(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file into a 2-D uint8 grayscale array; see `decode_gray`."""
    return decode_gray(image_bytes(path), str(path), max_pixels)


def scan_pixels(dpi: float) -> int:
    """The most pixels a scan read at `dpi` may hold: MAX_PIXELS at SCAN_DPI, the same
    paper area at a higher resolution (up to BELIEVED_DPI's top), so that an A4 page at
    1,200 dpi (139 MP) is read while a bomb at 300 dpi is not."""
    return int(MAX_PIXELS * (min(max(dpi, SCAN_DPI), BELIEVED_DPI[1]) / SCAN_DPI) ** 2)


class Scanned(NamedTuple):
    """A scan's pages at SCAN_DPI, the resolution they were read at (None: nothing told
    it), and where nothing told it the camera a photo's EXIF names (`exif_camera`)."""

    pages: list[np.ndarray]
    dpi: float | None
    camera: str | None = None


def read_scan(path: str | Path, dpi: float | None = None) -> Scanned:
    """The pages of a scan (`decode_pages`: a TIFF's or a PDF's every page, else its one
    image), each resampled to SCAN_DPI, and the resolution they were read at, from `scan_dpi`
    (a TIFF's first page's declared one; a PDF's pages are measured on their paper, whatever
    `dpi` says: `pdf_pages`), or None where nothing tells it (no `dpi`, no resolution
    believed in the file): then they are read as they are, as if at SCAN_DPI, a photo (a
    JPEG or a HEIC) above MAX_PIXELS at a half, a third (a HEIC) or a quarter (a JPEG) of
    its size (`reduced_photo`), with its camera."""
    data = image_bytes(path)
    if is_pdf(data):
        return Scanned(*pdf_pages(data, str(path)))
    told = dpi or believed_dpi(data)  # scan_dpi's rule, the declaration parsed once
    camera = None if told else exif_camera(data)
    if not told and (photo := reduced_photo(data, str(path))) is not None:
        return Scanned([photo], None, camera)
    source = _read_at(told)
    try:
        pages = decode_pages(data, str(path), scan_pixels(source))
    except ImageTooLargeError as err:
        if source > SCAN_DPI or camera:  # a camera's photo: no scan at a resolution to name
            raise
        raise ImageTooLargeError(f"{err} If it is a scan at more than {SCAN_DPI} dpi, pass "
                                 "--dpi with its resolution.") from None
    return Scanned([at_scan_dpi(page, source) for page in pages], source if told else None,
                   camera)
