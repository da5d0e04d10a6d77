"""Fuzz inputs and properties shared by tests/test_fuzz.py (CI sizes) and
benchmarks/fuzz.py (10,000+ examples each): whatever the bytes, decoding, the forms parser
and the prediction entry point either succeed or raise one of their documented errors."""

from __future__ import annotations

import collections
import io
import json
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
from hypothesis import strategies as st

from iam_writers_tfds.images import MAX_PIXELS, ImageError, decode_gray
from iam_writers_tfds.kaggle_layout import LayoutError, parse_forms


def _png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


def _with_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR declaring width x height (CRC fixed, so only the size lies)."""
    ihdr = png[12:16] + struct.pack(">II", width, height) + png[24:29]
    return png[:8] + png[8:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def _tiff(pages: list[np.ndarray]) -> bytes:
    return cv2.imencodemulti(".tif", pages)[1].tobytes()


def _pdf(pages: list[np.ndarray]) -> bytes:
    """A PDF of gray `pages` at 300 dpi as Pillow writes it (each page a JPEG, as scanners
    store them)."""
    from PIL import Image

    out = io.BytesIO()
    first, *rest = [Image.fromarray(p) for p in pages]
    first.save(out, "PDF", resolution=300, save_all=True, append_images=rest)
    return out.getvalue()


_shapes = st.tuples(st.integers(1, 48), st.integers(1, 96))
_strips = st.tuples(st.integers(1, 4), st.integers(2000, 6000)).flatmap(
    lambda hw: st.sampled_from([hw, hw[::-1]]))  # lying or standing


@st.composite
def image_bytes(draw) -> bytes:
    """Random bytes, truncated PNGs, huge or zero declared sizes, 16-bit and RGBA PNGs,
    strips a few pixels across and thousands long, and TIFFs and PDFs of one to three
    pages, whole or cut anywhere."""
    kind = draw(st.sampled_from(["random", "truncated", "huge", "zero", "uint16", "rgba",
                                 "gray", "strip", "tiff", "pdf"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    h, w = draw(_strips if kind == "strip" else _shapes)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind in ("tiff", "pdf"):
        pages = [rng.integers(0, 256, (h, w), dtype=np.uint8)
                 for _ in range(draw(st.integers(1, 3)))]
        data = _tiff(pages) if kind == "tiff" else _pdf(pages)
        return data[:draw(st.integers(0, len(data)))]
    if kind == "uint16":
        return _png(rng.integers(0, 2**16, (h, w), dtype=np.uint16))
    if kind == "rgba":
        return _png(rng.integers(0, 256, (h, w, 4), dtype=np.uint8))
    png = _png(rng.integers(0, 256, (h, w), dtype=np.uint8))
    if kind == "truncated":
        return png[: draw(st.integers(0, len(png) - 1))]
    if kind == "huge":
        side = draw(st.integers(int(MAX_PIXELS**0.5) + 1, 2**31 - 1))
        return _with_size(png, side, draw(st.integers(side // 2, 2**31 - 1)))
    if kind == "zero":
        return _with_size(png, 0, h)
    return png


_valid_line = st.builds(
    lambda f, w, rest: f"{f} {w} {rest}".encode(),
    st.from_regex(r"[a-z][0-9][0-9]-[0-9]{3}[a-z]?", fullmatch=True),
    st.from_regex(r"[0-9]{3}", fullmatch=True),
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20),
)
# mostly well-formed lines, so that valid files occur, mixed with random bytes
forms_files = st.lists(st.one_of(_valid_line, _valid_line, st.binary(max_size=60)),
                       max_size=8).map(lambda lines: b"\n".join(lines))


def check_decode(data: bytes, outcomes: collections.Counter) -> None:
    try:
        img = decode_gray(data, "fuzz.png")
    except ImageError as err:
        outcomes[type(err).__name__] += 1
        assert "fuzz.png" in str(err)
        return
    assert img.dtype == np.uint8 and img.ndim == 2 and img.size > 0
    outcomes["decoded"] += 1


def check_parse(data: bytes, folder: Path, outcomes: collections.Counter) -> None:
    path = folder / "forms_for_parsing.txt"
    path.write_bytes(data)
    try:
        forms = parse_forms(path)
    except LayoutError as err:
        outcomes["LayoutError"] += 1
        assert str(path) in str(err)
        return
    assert forms and all(isinstance(k, str) and isinstance(v, str) for k, v in forms.items())
    outcomes["parsed"] += 1


def fake_model(folder: Path, writers: int = 3):
    """The runtime's Model over a stub backend: everything but the interpreter runs, so
    the prediction entry point is fuzzed in milliseconds per example."""
    from models.runtime import Model

    card = {"labels": [f"w{i}" for i in range(writers)], "fingerprint": "f" * 16,
            "input": {"mode": "patches", "patch_size": 32, "stride": 16, "min_ink": 0.03,
                      "normalization": "unit", "image_size": 128, "keep_aspect": False},
            "verification": {"threshold": 0.5}}
    (folder / "model_card.json").write_text(json.dumps(card))

    def backend(x: np.ndarray) -> dict[str, np.ndarray]:
        """One padded line in, one row per 32-px window every 16 px out."""
        assert x.dtype == np.float32 and x.shape[:2] == (1, 32) and (x.shape[2] - 32) % 16 == 0
        means = np.array([x[0, :, s:s + 32].mean() for s in range(0, x.shape[2] - 31, 16)])
        logits = np.stack([means * (i + 1) for i in range(writers)], 1)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return {"log_probs": logp, "embedding": np.ones((len(means), 4), np.float32) / 2}

    return Model(folder / "model_card.json", backend=backend)


def check_predict(model, data: bytes, folder: Path, outcomes: collections.Counter,
                  input: str = "auto") -> None:
    """`model.predict` of `data` read as `input`: scores, or an ImageError naming the file;
    no numpy warning on the way (the console would show it)."""
    path = folder / "line.png"
    path.write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            result = model.predict(path, top_k=2, input=input)
    except ImageError as err:
        outcomes[type(err).__name__] += 1
        assert str(path) in str(err)
        return
    scores = [t["score"] for t in result["top"]]
    assert len(scores) == 2 and scores[0] >= scores[1] and 0 <= scores[1] <= scores[0] <= 1
    outcomes["predicted"] += 1
