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
from pipelines import preprocess

CARD = "model_card.json"
SIGNATURE = "windows"
MIN_SIDE = 16  # pixels: below this an image cannot hold a line of handwriting
MIN_CONTRAST = 40  # gray levels between paper and the darkest ink; below it, a blank page


class ModelError(ValueError):
    """Not a usable model or gallery; the message names the file and what to pass instead."""


class NoInkError(ImageError):
    """A blank image, or one too small to hold handwriting."""


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


class Gallery:
    """Enrolled writers: per-image embeddings in `NAME.npz`, their writers, the model's
    fingerprint and the npz's checksum in `NAME.json`. Identification ranks writers by the
    cosine similarity of an image to each writer's normalised mean embedding."""

    def __init__(self, path: str | Path, fingerprint: str, writers: list[str],
                 owners: np.ndarray, images: list[str], embeddings: np.ndarray):
        self.path = Path(path)
        self.fingerprint, self.writers, self.images = fingerprint, writers, images
        self.owners, self.embeddings = owners, embeddings

    @staticmethod
    def files(path: str | Path) -> tuple[Path, Path]:
        base = Path(path)
        base = base.with_suffix("") if base.suffix in (".npz", ".json") else base
        return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")

    @classmethod
    def load(cls, path: str | Path, create_for: str | None = None) -> Gallery:
        """Read a gallery; a missing one is empty when `create_for` (a fingerprint) is given."""
        npz, meta = cls.files(path)
        if not meta.exists() and create_for is not None:
            return cls(path, create_for, [], np.zeros(0, np.int64), [], np.zeros((0, 0)))
        if not meta.exists():
            raise FileNotFoundError(f"{meta}: no such gallery. Enroll writers first: "
                                    f"iam-writers enroll {path} --model MODEL --writer ID IMAGES")
        try:
            info = json.loads(meta.read_text())
            data = npz.read_bytes()
            if hashlib.sha256(data).hexdigest() != info["npz_sha256"]:
                raise ValueError("checksum mismatch")
            arrays = np.load(io.BytesIO(data), allow_pickle=False)
            gallery = cls(path, info["fingerprint"], info["writers"], arrays["owners"],
                          info["images"], arrays["embeddings"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelError(f"{meta}: corrupt gallery ({err}). Delete {meta.name} and "
                             f"{npz.name} and enroll the writers again.") from None
        return gallery

    def check(self, model: Model) -> None:
        if self.fingerprint != model.fingerprint:
            raise ModelError(f"{self.path}: built by another model (fingerprint "
                             f"{self.fingerprint}, this model {model.fingerprint}). Use the "
                             "model it was enrolled with, or enroll into a new gallery.")

    def save(self) -> None:
        """Write the npz, then the JSON that vouches for it (each atomically)."""
        npz, meta = self.files(self.path)
        buf = io.BytesIO()
        np.savez(buf, owners=self.owners, embeddings=self.embeddings)
        with atomic.replaced(npz) as tmp:
            tmp.write_bytes(buf.getvalue())
        atomic.write_text(meta, json.dumps({
            "fingerprint": self.fingerprint, "writers": self.writers, "images": self.images,
            "npz_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
        }, indent=2))

    def add(self, writer: str, images: list[str], embeddings: np.ndarray) -> None:
        if writer not in self.writers:
            self.writers.append(writer)
        owner = self.writers.index(writer)
        self.owners = np.concatenate([self.owners, np.full(len(images), owner, np.int64)])
        self.embeddings = (embeddings if not len(self.embeddings)
                           else np.concatenate([self.embeddings, embeddings]))
        self.images += [str(i) for i in images]

    def centroids(self) -> np.ndarray:
        """[n_writers, D] normalised mean embedding of each writer."""
        return np.stack([unit(self.embeddings[self.owners == i].mean(axis=0))
                         for i in range(len(self.writers))])


def enroll(gallery_path: str | Path, model: Model, writer: str, images: list) -> Gallery:
    """Add `writer`'s images to the gallery (created when missing) and save it."""
    if not images:
        raise ValueError(f"enroll {writer}: no images given. Pass one or more scans of "
                         f"{writer}'s handwriting.")
    gallery = Gallery.load(gallery_path, create_for=model.fingerprint)
    gallery.check(model)
    gallery.add(writer, [str(i) for i in images], np.stack([model.embed(i) for i in images]))
    gallery.save()
    return gallery


def identify(gallery_path: str | Path, model: Model, image, top_k: int = 5) -> dict:
    """Rank the enrolled writers for one image; `writer` is None (unknown) when the best
    similarity is below the model's calibrated threshold."""
    gallery = Gallery.load(gallery_path)
    gallery.check(model)
    if not gallery.writers:
        raise ModelError(f"{gallery_path}: the gallery is empty. Enroll writers first.")
    sims = gallery.centroids() @ model.embed(image)
    order = np.argsort(-sims)[:top_k]
    threshold = model.identification_threshold
    best = gallery.writers[order[0]] if sims[order[0]] >= threshold else None
    return {"image": str(image), "writer": best, "threshold": threshold,
            "top": [{"writer": gallery.writers[i], "similarity": float(sims[i])}
                    for i in order]}
