"""Reading phones' own HEIC photos, against the same pixels as a JPEG.

    python benchmarks/heic.py FILE [FILE ...] [--repeat 3]

Each FILE is a HEIC as a phone wrote it (for example the phone photos among pillow-heif's
source distribution's tests/images/: `pip download pillow-heif --no-binary :all:`). It is
read as the runtime reads a query image (`images.read_scan`: upright, one above 40 MP
shrunk, its camera from its EXIF), the median of `--repeat` reads timed; its upright pixels
are then written as a colour JPEG (quality 92, as a phone's) and read the same way in the
same process. Prints each file's camera, size and layout (a grid of tiles, as an iPhone's,
or one image), the seconds of each read and their ratio; a file refused prints why.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(path: Path, repeat: int) -> tuple[float, tuple[int, int]]:
    """(median seconds of `read_scan`, the shape read)."""
    from iam_writers_tfds.images import read_scan

    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        pages, _, _ = read_scan(path)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), pages[0].shape


def layout(data: bytes) -> str:
    """"a grid (N HEVC images)" where the file has HEIF's `grid` item (an iPhone's tiles,
    the thumbnail's among them), else "one image"."""
    from iam_writers_tfds.images import heif_meta_box

    box = heif_meta_box(data, b"iinf")
    iinf = data[box[0]:box[1]] if box else b""
    return f"a grid ({iinf.count(b'hvc1')} HEVC images)" if b"grid" in iinf else "one image"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", type=Path, nargs="+")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    import cv2
    import numpy as np
    import pi_heif

    from iam_writers_tfds.images import ImageError, exif_camera

    for path in args.files:
        data = path.read_bytes()
        try:
            heic_s, shape = timed(path, args.repeat)
        except ImageError as err:
            print(f"{path.name}: refused: {err}")
            continue
        heif = pi_heif.open_heif(data, bgr_mode=True)
        colour = np.asarray(heif)  # upright; libheif's memory, freed with `heif`
        with tempfile.TemporaryDirectory() as tmp:
            jpeg = Path(tmp) / "same.jpg"
            cv2.imwrite(str(jpeg), colour, [cv2.IMWRITE_JPEG_QUALITY, 92])
            jpeg_s, _ = timed(jpeg, args.repeat)
        print(f"{path.name}: {exif_camera(data) or 'no camera'}, {colour.shape[1]}x"
              f"{colour.shape[0]}, {layout(data)}; read {shape[1]}x{shape[0]} in "
              f"{heic_s:.2f} s, as a JPEG {jpeg_s:.2f} s ({heic_s / jpeg_s:.1f}x)")


if __name__ == "__main__":
    main()
