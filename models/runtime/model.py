"""Loading an `iam-writers export` and running it on one image: predict, verify, embed.

Preprocessing is `pipelines.preprocess`, the code the training pipeline runs, and scores
are aggregated as in evaluation: the mean log-probability (or the normalised mean
embedding) of an image's inked windows.
"""

from __future__ import annotations

import functools
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from iam_writers_tfds.images import (
    MIN_DPI,
    SCAN_DPI,
    ImageError,
    MultiPageImageError,
    at_scan_dpi,
    read_scan,
)
from models.runtime import pages, photos
from models.runtime.descriptors import Vlad
from pipelines import preprocess

CARD = "model_card.json"
SIGNATURE = "windows"
MIN_SIDE = 16  # pixels: below this an image cannot hold a line of handwriting
MIN_CONTRAST = 40  # gray levels between paper and the darkest ink; below it, a blank page
# px at 300 dpi over which ink's edges may be spread, the way they are spread most
# (`pages.edge_blur`): more, and genuine pages are answered "unknown" more and more, and wrong
# writers were named with the strongest support from about 2.8, out of focus or shaken
# (docs/results.md, photos shaken: a check that judges every way)
MAX_EDGE_BLUR = 2.5


class ModelError(ValueError):
    """Not a usable model or gallery; the message names the file and what to pass instead."""


def _cohort_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as arrays:
        return arrays["centroids"], arrays["sums"]


def _cohort_writers(path: Path) -> list[str]:
    with np.load(path) as arrays:
        return [str(w) for w in arrays["writers"]]


class NoInkError(ImageError):
    """A blank image, or one too small to hold handwriting."""


class LowResolutionError(ImageError):
    """Handwriting scanned or photographed at fewer than MIN_DPI dots per inch."""


class BlurredError(ImageError):
    """Handwriting whose edges are spread over more than MAX_EDGE_BLUR pixels at 300 dpi."""


# what reading an image as handwriting raises where the file is at fault (missing, not
# readable, corrupt, blank, a page turned): what `--skip-unreadable` reports and skips
UNREADABLE = (ImageError, OSError)


class Scan(NamedTuple):
    """An image as read: its pages at 300 dpi (a TIFF's or a PDF's every page with ink, any
    other image's one; once read as `input` (`Model.read`), a page laid askew turned level),
    each page's name in messages, the image's name, the resolution it was read at, the blank
    pages left out and, once read as `input`, each page's text lines (None: read as a line)."""

    pages: list[np.ndarray]
    names: list[str]
    name: str
    dpi: float
    blank: int = 0
    lines: list[list[pages.Line] | None] | None = None
    paper: str | None = None  # a photo's sheet, straightened onto this paper (`photos`)
    camera: str | None = None  # a photo read as if at 300 dpi, no sheet found: its camera

    def parts(self) -> tuple[list[np.ndarray], int | None]:
        """(the line images to score, in page order; the handwritten lines found, None when
        every page was read as a line (`pages.split`))."""
        split = [pages.split(page, lines) for page, lines in zip(self.pages, self.lines)]
        found = [n for _, n in split]
        return ([part for parts, _ in split for part in parts],
                None if all(n is None for n in found) else sum(n or 1 for n in found))

    @property
    def printed(self) -> int:
        """Lines of machine print found on its pages, and left out."""
        return sum(pages.printed(lines) for lines in self.lines)


def handwriting(image: str | Path | np.ndarray, name: str = "<array>",
                dpi: float | None = None, input: str = "line", paper: str | None = None
                ) -> Scan:
    """The handwriting of a path or an array (`Scan`, without text lines), scanned at `dpi`
    (a file: else the resolution it declares, else 300; see `images.scan_dpi`); where
    nothing tells it, a photographed sheet of paper straightened onto its paper (`paper`,
    else A4, Letter or Legal by its shape) if read as `input` (`photographed`); where none
    is found on a photo whose EXIF names a camera, that camera (its handwriting's size is
    not known). A blank or tiny image raises NoInkError naming it; blank pages of a TIFF or
    a PDF (a duplex scan's backs) are left out, unless every page is blank."""
    if isinstance(image, np.ndarray):
        source, camera = dpi, None
        found = [at_scan_dpi(image, source or SCAN_DPI)]
    else:
        name = str(image)
        found, source, camera = read_scan(image, dpi)
    if source is not None and round(source) < MIN_DPI:
        told = "given" if dpi else "its file declares"
        raise LowResolutionError(
            f"{name}: scanned at {source:.0f} dpi ({told}), too few pixels to name a writer "
            f"from (at least {MIN_DPI} dpi). Scan it again at {SCAN_DPI} dpi"
            + ("." if dpi else ", or pass --dpi N if the file's declaration is wrong."))
    found, told = (photographed(found, input, paper, name) if source is None
                   else (found, {"dpi": source}))
    if camera and "paper" not in told:  # a camera's photo, read as if at 300 dpi
        told["camera"] = camera
    if len(found) == 1:
        return Scan([inked(found[0], name)], [name], name, **told)
    kept: list[tuple[np.ndarray, str]] = []
    for k, page in enumerate(found, 1):
        try:
            kept.append((inked(page, f"{name}, page {k}"), f"{name}, page {k}"))
        except NoInkError:
            continue
    if not kept:
        raise NoInkError(f"{name}: all {len(found)} pages are blank or too small for "
                         "handwriting. Pass a scan of handwriting, dark ink on light paper.")
    return Scan([k[0] for k in kept], [k[1] for k in kept], name, blank=len(found) - len(kept),
                **told)


def photographed(found: list[np.ndarray], input: str, paper: str | None = None,
                 name: str = "<array>") -> tuple[list[np.ndarray], dict]:
    """(pages whose resolution nothing told, each that may be read as a page
    (`pages.may_be_page`) and holds a photographed sheet of `paper` (None: A4, Letter or Legal,
    `photos.find_sheet`) straightened onto it at 300 dpi, one with none found cleared of its
    ground (`photos.cleared`); {"dpi": the resolution measured
    on the first such sheet, "paper": its paper}, or {"dpi": 300} where there is none).
    Before the ink is judged: on a photo, the desk around the sheet is no paper. A sheet
    photographed at fewer than MIN_DPI raises LowResolutionError naming the image, `name`."""
    papers = (paper,) if paper else photos.SHAPED
    as_page = [pages.may_be_page(page, input) for page in found]
    sheets = [photos.find_sheet(page, papers) if may else None
              for page, may in zip(found, as_page)]
    if (low := round(min((s.dpi for s in sheets if s), default=MIN_DPI))) < MIN_DPI:
        raise LowResolutionError(
            f"{name}: the sheet was photographed at {low} dpi, too few pixels to name a "
            f"writer from (at least {MIN_DPI} dpi). Photograph it closer, at the camera's "
            "full resolution, or scan it.")
    read = [photos.straightened(page, s) if s else photos.cleared(page) if may else page
            for page, s, may in zip(found, sheets, as_page)]
    first = next((s for s in sheets if s), None)
    return read, {"dpi": first.dpi, "paper": first.paper} if first else {"dpi": SCAN_DPI}


def inked(image: np.ndarray, name: str) -> np.ndarray:
    """`image` (2-D uint8 at 300 dpi), where it can hold handwriting; else NoInkError naming
    it: a blank, negative or tiny image; or BlurredError: one out of focus, shaken, or
    enlarged from too few pixels."""
    h, w = image.shape
    if min(h, w) < MIN_SIDE:
        raise NoInkError(f"{name}: {w}x{h} pixels is too small for a line of handwriting "
                         f"(at least {MIN_SIDE} px each way). Pass a scan of a text line.")
    # paper level: the median of every 4th pixel (of all of them: 0.5 ms a line)
    paper = float(np.median(image[::2, ::2]))
    if paper - float(image.min()) < MIN_CONTRAST:
        if paper < 128 and float(image.max()) - paper >= MIN_CONTRAST:
            raise NoInkError(f"{name}: light marks on a dark ground, and nothing darker than "
                             "it: a negative, or white ink on black? Invert the image's "
                             "colours, to dark ink on light paper, and pass it again.")
        raise NoInkError(f"{name}: the image is blank (nothing {MIN_CONTRAST} gray levels "
                         "darker than the paper). Pass a scan of handwriting, dark ink on "
                         "light paper.")
    if (blur := pages.edge_blur(image)) > MAX_EDGE_BLUR:
        raise BlurredError(f"{name}: the ink's edges are spread over {blur:.1f} px at 300 dpi "
                           f"(at most {MAX_EDGE_BLUR:g}): out of focus, shaken, or enlarged "
                           "from too few pixels, too little detail to name a writer from. "
                           "Photograph it in focus with the phone held still, or scan it at "
                           "300 dpi.")
    return image


def _card_for(path: Path) -> tuple[Path, dict]:
    """(export folder, model card) of a .tflite file or saved_model folder."""
    for folder in (path.parent, path):
        if (folder / CARD).is_file():
            try:
                return folder, json.loads((folder / CARD).read_text())
            except ValueError as err:
                raise ModelError(f"{folder / CARD}: unreadable model card ({err}). "
                                 "Export the run again.") from None
    raise ModelError(f"{path}: not an iam-writers export (no {CARD} beside it). Pass the "
                     "folder written by `iam-writers export`, or one of its model files.")


BUCKET_PX = 128  # a line's width is padded up to a multiple of this (see Model.inputs)
INTERPRETERS = 16  # LiteRT interpreters kept ready, one per width (about 5 MB each)


class _LiteRT:
    """The `windows` signature of a .tflite file under the LiteRT interpreter, with one
    interpreter per input width (the `INTERPRETERS` most recently used): resizing an
    interpreter's input re-plans its memory and XNNPACK's operators, about 2 ms of a 10 ms
    line (docs/results.md, export)."""

    def __init__(self, path: Path, threads: int):
        self.path, self.threads = path, threads
        self.content = path.read_bytes()
        self.runner = functools.lru_cache(maxsize=INTERPRETERS)(self._runner)
        signature = self._runner()  # read once, not kept: no input shape is known yet
        self.inputs = signature.get_input_details()
        self.outputs = signature.get_output_details()

    def _runner(self, shape: tuple[int, ...] | None = None):
        """A fresh interpreter's signature runner; the cache keys it by input `shape`."""
        from ai_edge_litert.interpreter import Interpreter

        try:
            interpreter = Interpreter(model_content=self.content, num_threads=self.threads)
            return interpreter.get_signature_runner(SIGNATURE)
        except (ValueError, RuntimeError) as err:
            raise ModelError(f"{self.path}: not a TFLite model from `iam-writers export` "
                             f"({err}). Pass one of the model_*.tflite files of an export "
                             "folder.") from None

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        name, spec = next(iter(self.inputs.items()))
        if spec["dtype"] != np.float32:  # full-integer model: quantise the input
            scale, zero = spec["quantization"]
            info = np.iinfo(spec["dtype"])
            x = np.clip(np.rint(x / scale + zero), info.min, info.max).astype(spec["dtype"])
        out = self.runner(x.shape)(**{name: x})
        result = {}
        for key, value in out.items():
            scale, zero = self.outputs[key]["quantization"]
            result[key] = ((value.astype(np.float32) - zero) * scale if scale
                           else value.astype(np.float32))
        return result


class _SavedModel:
    """The `windows` signature of a SavedModel folder (needs TensorFlow)."""

    def __init__(self, path: Path):
        try:
            import tensorflow as tf
        except ModuleNotFoundError:
            raise ModelError(f"{path}: a SavedModel folder needs TensorFlow, which the base "
                             "install leaves out. Pass one of the export's model_*.tflite "
                             "files, or pip install 'iam-writers[train]'.") from None

        self.tf = tf
        self.fn = tf.saved_model.load(str(path)).signatures[SIGNATURE]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.fn(x=self.tf.constant(x)).items()}


# the variant an export folder is read by: float32 is exact, and int8 is no faster on a CPU
# without VNNI (docs/results.md, export)
PREFERRED = ("float32", "dynamic", "float16", "int8")


def _in_export(folder: Path) -> Path:
    """The model an export folder (holding its card) is read by: its first .tflite variant
    in PREFERRED order, else its saved_model folder."""
    files = _card_for(folder)[1].get("files", {})
    for variant in PREFERRED:
        if variant in files and (folder / files[variant]).is_file():
            return folder / files[variant]
    if (folder / "saved_model" / "saved_model.pb").is_file():
        return folder / "saved_model"
    raise ModelError(f"{folder}: an export folder without its model files (no "
                     "model_*.tflite, no saved_model). Export the run again.")


class Model:
    """An exported model and its card. `path` is an export folder, one of its .tflite files,
    or its SavedModel folder."""

    def __init__(self, path: str | Path, threads: int = 2, backend=None):
        """`backend` (a callable from inputs to outputs) replaces the file's interpreter:
        export uses it to run the in-memory Keras model through the same code."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such model. Pass an export folder, one of its "
                                    "model_*.tflite files or its saved_model folder.")
        if backend is None and path.is_dir() and (path / CARD).is_file():
            path = _in_export(path)
        self.path = path
        self.folder, self.card = _card_for(path)
        self.labels: list[str] = self.card["labels"]
        self.spec: dict = self.card["input"]
        if backend is not None:
            self.backend = backend
        elif path.is_file() and path.suffix == ".tflite":
            self.backend = _LiteRT(path, threads)
        elif (path / "saved_model.pb").is_file():
            self.backend = _SavedModel(path)
        else:
            raise ModelError(f"{path}: neither a .tflite file nor a SavedModel folder. Pass an "
                             "export folder, one of its model_*.tflite files or its "
                             "saved_model folder.")

    @classmethod
    def in_memory(cls, card: dict, backend) -> Model:
        """A model with no files: its card (`labels` and `input` at least) and a backend,
        a callable from inputs to outputs (evaluation runs the Keras model this way)."""
        model = cls.__new__(cls)
        model.path = model.folder = None
        model.card, model.labels, model.spec = card, card["labels"], card["input"]
        model.backend = backend
        return model

    @functools.cached_property
    def gallery(self):
        """The training writers and their centroids (a gallery `Snapshot`), for models that
        identify by gallery."""
        from models.runtime.gallery import Gallery  # the gallery module imports this one

        if self.card.get("identify_by") != "gallery" or self.folder is None:
            return None
        return Gallery.open(self.folder / "train_gallery").snapshot()

    def _card_file(self, key: str) -> Path | None:
        """The file of the export that the card's `key` entry names, or None when the card
        has no such entry (older exports) or the model has no folder."""
        info = self.card.get(key)
        if not info or self.folder is None:
            return None
        path = self.folder / info["file"]
        if not path.is_file():
            raise ModelError(f"{path}: missing from the export (its card names it). Export "
                             "the run again.")
        return path

    def _read(self, key: str, read: Callable[[Path], object]) -> object:
        """`read` of the export's file that the card's `key` entry names, or None without
        one; a damaged file raises ModelError naming it."""
        path = self._card_file(key)
        if path is None:
            return None
        try:
            return read(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            raise ModelError(f"{path}: damaged (not the arrays export wrote). Export the run "
                             "again.") from None

    @functools.cached_property
    def vlad(self) -> Vlad | None:
        """The RootSIFT + VLAD codebook export fitted on the training writers, or None."""
        return self._read("vlad", Vlad.load)

    @functools.cached_property
    def cohort(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(unit mean embeddings [C, D], summed descriptor rows [C, K]) of the training
        writers, each enrolled from one form, that export kept to normalise fused scores
        against (`identify.fuse`), or None for exports without one."""
        return self._read("cohort", _cohort_arrays)

    @functools.cached_property
    def cohort_writers(self) -> list[str] | None:
        """The labels of the `cohort`'s training writers, in its order."""
        return self._read("cohort", _cohort_writers)

    @property
    def fingerprint(self) -> str:
        return self.card["fingerprint"]

    @property
    def identification_threshold(self) -> float:
        """Below this best cosine similarity of an image to an enrolled writer's centroid,
        `identify` answers unknown: the EER point between validation images' similarity to
        their own writer's training centroid and their best similarity to another writer's
        (older cards: of validation image pairs)."""
        return self.card.get("identification", self.card["verification"])["threshold"]

    def inputs(self, image: str | Path | np.ndarray,
               name: str = "<array>") -> tuple[np.ndarray, np.ndarray]:
        """(model input, which of the first output rows to average) of one image (a path or
        a 2-D uint8 array): the whole normalised line padded for the line pass and its inked
        windows, or the whole resized image."""
        scan = handwriting(image, name)
        if len(scan.pages) > 1:
            raise MultiPageImageError(f"{scan.name}: a file of {len(scan.pages)} pages where one "
                                      "line is expected. Pass it to identify, enroll, predict "
                                      "or verify, which read its pages as one document.")
        image, spec = scan.pages[0], self.spec
        if spec["mode"] == "resize":
            x = preprocess.resize_rgb(image, spec["image_size"], spec["keep_aspect"])[None]
            return preprocess.scale_input(x, spec["normalization"]), np.ones(1, bool)
        size, stride = spec["patch_size"], spec["stride"]
        line = preprocess.normalize_line(image, size, spec.get("line_band", 0))  # 0: older cards
        line = preprocess.pad_line(line, size, stride)
        ink = preprocess.window_ink(line, size, stride)
        keep = preprocess.kept_windows(ink, spec["min_ink"])
        if not keep.any():
            raise NoInkError(f"{name}: too little ink for the model (its most inked window is "
                             f"{ink.max():.1%} ink, at least "
                             f"{min(preprocess.THIN_LINE_INK, spec['min_ink']):.0%} needed): "
                             "specks, or a faint or cut line. Pass a whole line or a page, "
                             "dark ink on light paper.")
        # Background up to the next width bucket, so that few distinct input shapes reach
        # the backend; the windows this adds are not kept.
        step = stride * max(1, BUCKET_PX // stride)
        line = np.pad(line, [(0, 0), (0, -(line.shape[1] - size) % step)])
        return preprocess.scale_input(line[None, :, :, None], spec["normalization"]), keep

    def outputs(self, image, name: str = "<array>") -> dict[str, np.ndarray]:
        """Outputs of one image's kept windows: `log_probs` (classifiers) and `embedding`."""
        x, keep = self.inputs(image, name)
        return {k: v[: len(keep)][keep] for k, v in self.backend(x).items()}

    def scores(self, image, name: str = "<array>", input: str = "line",
               dpi: float | None = None, paper: str | None = None
               ) -> tuple[np.ndarray, np.ndarray, Scan]:
        """(per-writer scores, unit embedding, the image read (`Scan`)) of one image, read as
        `input` (`models.config.INPUTS`) at `dpi`, a photo on `paper` (`handwriting`); a
        page's handwritten lines, or those of a TIFF's or a PDF's pages, are one document.
        Scores are probabilities from the mean log-probability of the inked windows, or
        cosine similarities to the training writers' centroids for embedding-only models."""
        scan = self.read(image, name, input, dpi, paper)
        parts, found = scan.parts()
        outs = self.outputs_of(parts, scan.name, found)
        emb = document_embedding(outs)
        if "log_probs" in outs[0]:
            mean = np.concatenate([o["log_probs"] for o in outs]).mean(axis=0)
            p = np.exp(mean - mean.max())
            return p / p.sum(), emb, scan
        return self.gallery.centroids @ emb, emb, scan

    def outputs_of(self, parts: list[np.ndarray], name: str, found: int | None) -> list[dict]:
        """`outputs` of each line of an image; a page's lines without an inked window (a
        speck taken for a line) are left out, unless none is left."""
        outs = []
        for part in parts:
            try:
                outs.append(self.outputs(part, name))
            except NoInkError:
                if found is None:
                    raise
        if not outs:
            raise NoInkError(f"{name}: no handwriting found in any of the {found} lines found "
                             "on the page. Pass a scan of handwritten text.")
        return outs

    @staticmethod
    def read(image, name: str = "<array>", input: str = "line", dpi: float | None = None,
             paper: str | None = None) -> Scan:
        """An image read at `dpi` (`handwriting`) as `input`: each page with its text lines
        when read as a page, else None; a photographed sheet straightened onto its paper
        (`handwriting`), a page laid askew turned level (`pages.read_page`)."""
        scan = handwriting(image, name, dpi, input, paper)
        read = [pages.read_page(page, input, page_name)
                for page, page_name in zip(scan.pages, scan.names)]
        return scan._replace(pages=[page for page, _ in read], lines=[lines for _, lines in read])

    def predict(self, image, top_k: int = 5, input: str = "auto",
                dpi: float | None = None, paper: str | None = None) -> dict:
        """{"image", "top": [{"writer", "score"}...], "lines" (pages: handwritten lines read),
        "printed" (pages with machine print: its lines, left out), "pages" and "blank_pages"
        (a PDF or a TIFF of several pages: those read, the blank ones left out), "paper" (a
        photo: the paper its sheet was straightened onto), "unmeasured" (a photo whose EXIF
        names a camera, with no sheet found on it: the camera)} for one image file."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        scores, _, scan = self.scores(image, str(image), input, dpi, paper)
        writers = self.gallery.writers if self.gallery else self.labels
        order = np.argsort(-scores)[:top_k]
        found = scan.parts()[1]
        return ({"image": str(image),
                 "top": [{"writer": writers[i], "score": float(scores[i])} for i in order]}
                | ({"lines": found} if found is not None else {})
                | ({"printed": scan.printed} if scan.printed else {})
                | ({"pages": len(scan.pages)} if len(scan.pages) > 1 else {})
                | ({"blank_pages": scan.blank} if scan.blank else {})
                | ({"paper": scan.paper} if scan.paper else {})
                | ({"unmeasured": scan.camera} if scan.camera else {}))

    def embed(self, image, name: str = "<array>") -> np.ndarray:
        """The unit mean embedding of one line's inked windows (a path or a 2-D array)."""
        return unit(self.outputs(image, name)["embedding"].mean(axis=0))


def document_embedding(outs: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The unit mean of the unit embeddings of a document's lines (each the mean of its
    windows'), from their `outputs`: every line weighs the same, however long."""
    return unit(np.mean([unit(o["embedding"].mean(axis=0)) for o in outs], axis=0))


def embed_inked(model: Model, images: list) -> tuple[list[int], np.ndarray]:
    """(indices of the images that hold handwriting, their unit embeddings [N, D]): blank
    images are skipped rather than failing a whole batch of them."""
    kept, rows = [], []
    for i, image in enumerate(images):
        try:
            rows.append(model.embed(image))
        except NoInkError:
            continue
        kept.append(i)
    return kept, np.stack(rows)


def unit(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-12)
