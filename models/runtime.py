"""TF-free inference over an `iam-writers export` folder: predict, verify, enroll, identify.

Imports numpy, OpenCV and ai-edge-litert only (TensorFlow just for a SavedModel folder), so
it runs on edge devices and in the base install (`pip install iam-writers`, no extras).
Preprocessing is `pipelines.preprocess`, the code the training pipeline runs, and scores
are aggregated as in evaluation: the mean log-probability (or the normalised mean
embedding) of an image's inked windows.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from pathlib import Path

import numpy as np

from iam_writers_tfds import atomic
from iam_writers_tfds.images import ImageError, read_gray
from models import descriptors
from models.config import SCORES
from pipelines import preprocess

CARD = "model_card.json"
SIGNATURE = "windows"
MIN_SIDE = 16  # pixels: below this an image cannot hold a line of handwriting
MIN_CONTRAST = 40  # gray levels between paper and the darkest ink; below it, a blank page


class ModelError(ValueError):
    """Not a usable model or gallery; the message names the file and what to pass instead."""


class NoInkError(ImageError):
    """A blank image, or one too small to hold handwriting."""


def handwriting(image: str | Path | np.ndarray, name: str = "<array>") -> tuple[np.ndarray, str]:
    """(2-D uint8 image, its name) of a path or an array that can hold handwriting; a blank
    or tiny image raises NoInkError naming it."""
    if not isinstance(image, np.ndarray):
        name, image = str(image), read_gray(image)
    h, w = image.shape
    if min(h, w) < MIN_SIDE:
        raise NoInkError(f"{name}: {w}x{h} pixels is too small for a line of handwriting "
                         f"(at least {MIN_SIDE} px each way). Pass a scan of a text line.")
    # paper level: the median of every 4th pixel (of all of them: 0.5 ms a line)
    if float(np.median(image[::2, ::2])) - float(image.min()) < MIN_CONTRAST:
        raise NoInkError(f"{name}: the image is blank (nothing {MIN_CONTRAST} gray levels "
                         "darker than the paper). Pass a scan of handwriting, dark ink on "
                         "light paper.")
    return image, name


def _card_for(path: Path) -> tuple[Path, dict]:
    """(export folder, model card) of a .tflite file or saved_model folder."""
    for folder in (path.parent, path):
        if (folder / CARD).is_file():
            try:
                return folder, json.loads((folder / CARD).read_text())
            except ValueError as err:
                raise ModelError(f"{folder / CARD}: unreadable model card ({err}). "
                                 "Export the run again.") from None
    raise ModelError(f"{path}: not an iam-writers export (no {CARD} beside it). Pass a .tflite "
                     "file or the saved_model folder written by `iam-writers export`.")


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


class Model:
    """An exported model and its card. `path` is a .tflite file or a SavedModel folder."""

    def __init__(self, path: str | Path, threads: int = 2, backend=None):
        """`backend` (a callable from inputs to outputs) replaces the file's interpreter:
        export uses it to run the in-memory Keras model through the same code."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such model. Pass a .tflite file or the "
                                    "saved_model folder written by `iam-writers export`.")
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
            raise ModelError(f"{path}: neither a .tflite file nor a SavedModel folder. Pass a "
                             "model_*.tflite file or the saved_model folder of an export.")

    @functools.cached_property
    def gallery(self) -> Gallery | None:
        """The training writers' centroids, for models that identify by gallery."""
        if self.card.get("identify_by") != "gallery":
            return None
        return Gallery.load(self.folder / "train_gallery")

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
        image, name = handwriting(image, name)
        spec = self.spec
        if spec["mode"] == "resize":
            x = preprocess.resize_rgb(image, spec["image_size"], spec["keep_aspect"])[None]
            return preprocess.scale_input(x, spec["normalization"]), np.ones(1, bool)
        size, stride = spec["patch_size"], spec["stride"]
        line = preprocess.normalize_line(image, size, spec.get("line_band", 0))  # 0: older cards
        line = preprocess.pad_line(line, size, stride)
        keep = preprocess.window_ink(line, size, stride) >= spec["min_ink"]
        if not keep.any():
            raise NoInkError(f"{name}: no handwriting found (no window has {spec['min_ink']:.0%} "
                             "ink). Pass a scan of handwritten text, dark ink on light paper.")
        # Background up to the next width bucket, so that few distinct input shapes reach
        # the backend; the windows this adds are not kept.
        step = stride * max(1, BUCKET_PX // stride)
        line = np.pad(line, [(0, 0), (0, -(line.shape[1] - size) % step)])
        return preprocess.scale_input(line[None, :, :, None], spec["normalization"]), keep

    def outputs(self, image, name: str = "<array>") -> dict[str, np.ndarray]:
        """Outputs of one image's kept windows: `log_probs` (classifiers) and `embedding`."""
        x, keep = self.inputs(image, name)
        return {k: v[: len(keep)][keep] for k, v in self.backend(x).items()}

    def scores(self, image, name: str = "<array>") -> tuple[np.ndarray, np.ndarray]:
        """(per-writer scores, unit embedding) of one image. Scores are probabilities from
        the mean window log-probability, or cosine similarities to the training writers'
        centroids for embedding-only models."""
        out = self.outputs(image, name)
        emb = unit(out["embedding"].mean(axis=0))
        if "log_probs" in out:
            mean = out["log_probs"].mean(axis=0)
            p = np.exp(mean - mean.max())
            return p / p.sum(), emb
        return self.gallery.centroids() @ emb, emb

    def predict(self, image, top_k: int = 5) -> dict:
        """{"image", "top": [{"writer", "score"}...]} for one image file."""
        scores, _ = self.scores(image, str(image))
        writers = self.gallery.writers if self.gallery else self.labels
        order = np.argsort(-scores)[:top_k]
        return {"image": str(image),
                "top": [{"writer": writers[i], "score": float(scores[i])} for i in order]}

    def embed(self, image, name: str = "<array>") -> np.ndarray:
        """The unit mean embedding of one image's inked windows (a path or a 2-D array)."""
        return unit(self.outputs(image, name)["embedding"].mean(axis=0))

    def verify(self, a, b) -> dict:
        """Same-writer score (cosine of the two embeddings) and the decision at the
        threshold stored at export (the validation set's EER point)."""
        score = float(self.embed(a) @ self.embed(b))
        threshold = self.card["verification"]["threshold"]
        return {"a": str(a), "b": str(b), "score": score, "threshold": threshold,
                "same_writer": score >= threshold}


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


def fuse(embedding: np.ndarray, hinge: np.ndarray, calibration: dict) -> np.ndarray:
    """The fused score [Q, W]: both similarities standardised by the mean and spread of
    different-writer similarities measured at export for this kind of query (so that a
    score, and its threshold, mean the same whatever the gallery's size), `weight` on the
    hinge's."""
    e, h, w = calibration["embedding"], calibration["hinge"], calibration["weight"]
    return ((1 - w) * (embedding - e["mean"]) / e["std"]
            + w * (hinge - h["mean"]) / h["std"])


def hinge_similarity(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """[Q, R] 1 - chi-square distance between contour-hinge counts (1: the same)."""
    return 1 - descriptors.chi_square(queries, references)


class Gallery:
    """Enrolled writers. `NAME.npz` holds per-image features: unit embeddings of one model
    and/or contour-hinge counts; `NAME.json` their writers, what built them (the model's
    fingerprint, the descriptor's name; None where absent) and the npz's checksum."""

    def __init__(self, path: str | Path, fingerprint: str | None, writers: list[str],
                 owners: np.ndarray, images: list[str], embeddings: np.ndarray | None,
                 descriptor: str | None = None, hinge: np.ndarray | None = None):
        self.path = Path(path)
        self.fingerprint, self.writers, self.images = fingerprint, writers, images
        self.owners, self.embeddings = owners, embeddings
        self.descriptor, self.hinge = descriptor, hinge

    @classmethod
    def new(cls, path: str | Path, fingerprint: str | None, descriptor: str | None) -> Gallery:
        """An empty gallery for a model's embeddings and/or a descriptor's counts."""
        return cls(path, fingerprint, [], np.zeros(0, np.int64), [],
                   None if fingerprint is None else np.zeros((0, 0)),
                   descriptor, None if descriptor is None else np.zeros((0, 0)))

    @property
    def built_by(self) -> str:
        """What built the gallery, in words, for error messages."""
        parts = ([f"model {self.fingerprint}"] if self.fingerprint else []) + \
            ([f"descriptor {self.descriptor}"] if self.descriptor else [])
        return " and ".join(parts)

    @staticmethod
    def files(path: str | Path) -> tuple[Path, Path]:
        base = Path(path)
        base = base.with_suffix("") if base.suffix in (".npz", ".json") else base
        return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")

    @classmethod
    def exists(cls, path: str | Path) -> bool:
        return cls.files(path)[1].exists()

    @classmethod
    def load(cls, path: str | Path) -> Gallery:
        npz, meta = cls.files(path)
        if not meta.exists():
            raise FileNotFoundError(f"{meta}: no such gallery. Enroll writers first: iam-writers "
                                    f"enroll {path} --model MODEL --writer ID IMAGES")
        try:
            info = json.loads(meta.read_text())
            data = npz.read_bytes()
            if hashlib.sha256(data).hexdigest() != info["npz_sha256"]:
                raise ValueError("checksum mismatch")
            arrays = np.load(io.BytesIO(data), allow_pickle=False)
            fingerprint, descriptor = info["fingerprint"], info.get("descriptor")  # older: none
            if descriptor:
                descriptors.Hinge.parse(descriptor)
            gallery = cls(path, fingerprint, info["writers"], arrays["owners"], info["images"],
                          arrays["embeddings"] if fingerprint else None, descriptor,
                          arrays["hinge"] if descriptor else None)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelError(f"{meta}: corrupt gallery ({err}). Delete {meta.name} and "
                             f"{npz.name} and enroll the writers again.") from None
        return gallery

    def save(self) -> None:
        """Write the npz, then the JSON that vouches for it (each atomically)."""
        npz, meta = self.files(self.path)
        arrays = {"owners": self.owners}
        if self.embeddings is not None:
            arrays["embeddings"] = self.embeddings
        if self.hinge is not None:
            arrays["hinge"] = self.hinge
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with atomic.replaced(npz) as tmp:
            tmp.write_bytes(buf.getvalue())
        atomic.write_text(meta, json.dumps({
            "fingerprint": self.fingerprint, "descriptor": self.descriptor,
            "writers": self.writers, "images": self.images,
            "npz_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
        }, indent=2))

    def require(self, fingerprint: str | None, descriptor: str | None,
                exact: bool = False) -> None:
        """Refuse another model or descriptor than those that built the gallery: None asks
        for nothing, unless `exact` (enrolling adds exactly the features it holds)."""
        wanted = []
        if fingerprint and fingerprint != self.fingerprint:
            wanted.append(f"model {fingerprint}")
        if descriptor and descriptor != self.descriptor:
            wanted.append(f"descriptor {descriptor}")
        if exact and (fingerprint, descriptor) != (self.fingerprint, self.descriptor):
            wanted = [Gallery.new(self.path, fingerprint, descriptor).built_by]
        if wanted:
            raise ModelError(f"{self.path}: built by {self.built_by}, not by "
                             f"{' and '.join(wanted)}. Use what it was enrolled with, or "
                             "enroll into a new gallery.")

    def add(self, writer: str, images: list[str], embeddings: np.ndarray | None,
            hinge: np.ndarray | None) -> None:
        if writer not in self.writers:
            self.writers.append(writer)
        owner = self.writers.index(writer)
        self.owners = np.concatenate([self.owners, np.full(len(images), owner, np.int64)])
        if embeddings is not None:
            self.embeddings = (embeddings if not len(self.embeddings)
                               else np.concatenate([self.embeddings, embeddings]))
        if hinge is not None:
            self.hinge = hinge if not len(self.hinge) else np.concatenate([self.hinge, hinge])
        self.images += [str(i) for i in images]

    def centroids(self) -> np.ndarray:
        """[n_writers, D] normalised mean embedding of each writer."""
        return np.stack([unit(self.embeddings[self.owners == i].mean(axis=0))
                         for i in range(len(self.writers))])

    def hinge_sums(self) -> np.ndarray:
        """[n_writers, K] each writer's contour-hinge counts summed over their images."""
        return np.stack([self.hinge[self.owners == i].sum(axis=0)
                         for i in range(len(self.writers))])


class Features:
    """What a gallery needs of images: a model's embeddings and/or a descriptor's counts."""

    def __init__(self, model: Model | None, hinge: descriptors.Hinge | None):
        if model is None and hinge is None:
            raise ModelError("no model and no descriptor: pass --model MODEL, or "
                             "--descriptor hinge")
        self.model, self.hinge = model, hinge

    @property
    def fingerprint(self) -> str | None:
        return self.model.fingerprint if self.model else None

    @property
    def descriptor(self) -> str | None:
        return self.hinge.name if self.hinge else None

    def __call__(self, images: list) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(unit embeddings [N, D] or None, hinge counts [N, K] or None) of the images;
        a blank or unreadable image raises, naming it."""
        emb, counts = [], []
        for image in images:
            array, name = handwriting(image)
            if self.model:
                emb.append(self.model.embed(array, name))
            if self.hinge:
                counts.append(self.hinge(array))
        return (np.stack(emb) if self.model else None), (np.stack(counts) if self.hinge else None)


def features_for(model: Model | None, score: str | None) -> Features:
    """What `enroll` stores for a score: `embedding`, `hinge`, or `fused` (both; the default
    with a model, so that one gallery serves all three). The hinge's parameters are those
    the model's fusion was calibrated with, else the defaults."""
    score = score or ("fused" if model else "hinge")
    if score not in SCORES:
        raise ModelError(f"unknown descriptor {score!r}; allowed: {', '.join(SCORES)}")
    if model is None and score != "hinge":
        raise ModelError(f"--descriptor {score} needs --model MODEL (or pass --descriptor "
                         "hinge to enroll without a model)")
    fusion = model.card.get("fusion") if model else None
    hinge = descriptors.Hinge.parse(fusion["descriptor"]) if fusion else descriptors.Hinge()
    return Features(model if score != "hinge" else None, hinge if score != "embedding" else None)


def enroll(gallery_path: str | Path, features: Features, writer: str, images: list) -> Gallery:
    """Add `writer`'s images to the gallery (created when missing) and save it."""
    if not images:
        raise ValueError(f"enroll {writer}: no images given. Pass one or more scans of "
                         f"{writer}'s handwriting.")
    if Gallery.exists(gallery_path):
        gallery = Gallery.load(gallery_path)
        gallery.require(features.fingerprint, features.descriptor, exact=True)
    else:
        gallery = Gallery.new(gallery_path, features.fingerprint, features.descriptor)
    gallery.add(writer, [str(i) for i in images], *features(images))
    gallery.save()
    return gallery


class Identifier:
    """Ranks a gallery's writers for a query (one image, or several as one document) by one
    score: `embedding` (cosine to each writer's mean embedding), `hinge` (1 - chi-square to
    each writer's summed contour-hinge counts) or `fused` (both standardised and weighted as
    calibrated at export). Below the score's threshold the answer is "unknown writer"."""

    def __init__(self, gallery: Gallery, model: Model | None = None, score: str | None = None,
                 threshold: float | None = None):
        if not gallery.writers:
            raise ModelError(f"{gallery.path}: the gallery is empty. Enroll writers first.")
        fusion = model.card.get("fusion") if model else None
        self.score = score or ("fused" if fusion else "embedding" if model else "hinge")
        if self.score not in SCORES:
            raise ModelError(f"unknown score {self.score!r}; allowed: {', '.join(SCORES)}")
        if self.score != "hinge" and model is None:
            raise ModelError(f"--descriptor {self.score} needs --model MODEL")
        if self.score == "fused" and not fusion:
            raise ModelError(f"{model.path}: its export calibrated no fusion with a descriptor. "
                             "Pass --descriptor embedding or hinge.")
        hinge = {"embedding": None, "hinge": gallery.descriptor,
                 "fused": fusion and fusion["descriptor"]}[self.score]
        if self.score == "hinge" and hinge is None:
            raise ModelError(f"{gallery.path}: enrolled without a descriptor. Identify with "
                             "--descriptor embedding, or enroll again with --descriptor hinge.")
        embedder = model if self.score != "hinge" else None
        gallery.require(embedder and embedder.fingerprint, hinge)
        self.gallery, self.model = gallery, model
        self.fusion, self.given_threshold = fusion, threshold
        self.features = Features(embedder, descriptors.Hinge.parse(hinge) if hinge else None)
        self.centroids = gallery.centroids() if embedder else None
        self.sums = gallery.hinge_sums() if hinge else None

    def threshold(self, document: bool = False) -> float:
        """Below this score the answer is unknown: `--threshold`, else the one calibrated
        for this score and kind of query (one line, or a document of several)."""
        if self.given_threshold is not None:
            return self.given_threshold
        if self.fusion:
            return self.fusion["document" if document else "line"]["thresholds"][self.score]
        if self.score == "embedding":
            return self.model.identification_threshold
        return descriptors.HINGE_DOCUMENT_THRESHOLD if document else descriptors.HINGE_THRESHOLD

    def score_matrix(self, emb: np.ndarray | None, counts: np.ndarray | None,
                     document: bool = False) -> np.ndarray:
        """[Q, n_writers] scores of queries (lines, or documents) given as unit embeddings
        [Q, D] and/or contour-hinge counts [Q, K] (whichever the score uses)."""
        sims = {}
        if self.centroids is not None:
            sims["embedding"] = emb @ self.centroids.T
        if self.sums is not None:
            sims["hinge"] = hinge_similarity(counts, self.sums)
        if self.score == "fused":
            return fuse(sims["embedding"], sims["hinge"],
                        self.fusion["document" if document else "line"])
        return sims[self.score]

    def similarities(self, images: list) -> np.ndarray:
        """[n_writers] scores of the images taken together as one query: their mean
        embedding, their summed hinge counts."""
        emb, counts = self.features(images)
        return self.score_matrix(None if emb is None else unit(emb.mean(axis=0))[None],
                                 None if counts is None else counts.sum(axis=0)[None],
                                 document=len(images) > 1)[0]

    def rank(self, images: list, top_k: int = 5) -> dict:
        """{"images", "writer" (None: unknown), "score", "threshold", "top"} for one query."""
        sims = self.similarities(images)
        order = np.argsort(-sims)[:top_k]
        threshold = self.threshold(document=len(images) > 1)
        best = self.gallery.writers[order[0]] if sims[order[0]] >= threshold else None
        return {"images": [str(i) for i in images], "writer": best, "score": self.score,
                "threshold": threshold,
                "top": [{"writer": self.gallery.writers[i], "similarity": float(sims[i])}
                        for i in order]}
