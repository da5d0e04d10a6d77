"""`iam-writers export`: a run directory -> SavedModel + TFLite variants + card + parity.

exports/NAME/ holds saved_model/ (signatures `classify`, `embed`, `patches`),
model_{float32,float16,dynamic,int8}.tflite (the `patches` signature, converted from the
SavedModel), model_card.json, labels.json, parity.json and parity.md. The folder is built
under a temporary name and renamed when complete, so a killed export leaves nothing at
its final path; a failed int8 parity gate leaves nothing either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from iam_writers_tfds import atomic
from iam_writers_tfds.images import decode_gray
from models import runtime
from models.config import TrainConfig
from models.evaluate import aggregate, load_run, normalise, run_windows, verification
from pipelines import PipelineConfig, eval_dataset, load_split, ops, train_dataset

VARIANTS = {"none": "float32", "float16": "float16", "dynamic": "dynamic", "int8": "int8"}


class DegradedExport(RuntimeError):
    """int8 fell below the parity gate; nothing was written."""


@dataclasses.dataclass
class ExportConfig:
    run: Path
    out: Path
    quantize: tuple[str, ...] = tuple(VARIANTS)
    allow_degraded: bool = False
    min_agreement: float = 0.97  # int8 top-1 agreement with Keras below this fails
    calibration_samples: int = 200
    threads: int = 2
    top_k: int = 5
    stride: int = 0  # window stride at inference; 0: the run's evaluation stride


    def __post_init__(self) -> None:
        self.run, self.out = Path(self.run), Path(self.out)
        unknown = [q for q in self.quantize if q not in VARIANTS]
        if unknown or not self.quantize:
            raise ValueError(f"unknown quantization {', '.join(unknown) or '(none given)'}; "
                             f"allowed: {', '.join(VARIANTS)}")
        if self.stride < 0:
            raise ValueError(f"stride must be >= 0 (0: the run's), got {self.stride}")
        if not 100 <= self.calibration_samples <= 500:
            raise ValueError("calibration_samples must be in 100..500")


def _towers(model: keras.Model, cfg: TrainConfig):
    """(features model, classifier head or None): features give the head's input and the
    embedding (the embedding layer if any, else the pooled features)."""
    if cfg.model == "siamese_resnet50":
        tower = model.get_layer("tower")
        return keras.Model(tower.inputs, [tower.output, tower.output]), None
    head = model.get_layer("writer")
    names = [layer.name for layer in model.layers]
    emb = model.get_layer("embedding" if "embedding" in names else "gap").output
    return keras.Model(model.inputs, [head.input, emb]), head


def patches_fn(model: keras.Model, cfg: TrainConfig):
    """The `patches` computation: float32 model inputs [N, ...] -> {embedding [N, D] (unit),
    log_probs [N, C] (classifiers only)}. Log-probabilities rather than probabilities, so
    int8 keeps resolution where averaging needs it."""
    features, head = _towers(model, cfg)

    def patches(x):
        feat, emb = features(x, training=False)
        out = {"embedding": tf.math.l2_normalize(tf.cast(emb, tf.float32), axis=-1)}
        if head is not None:
            logits = tf.matmul(tf.cast(feat, tf.float32), head.kernel) + head.bias
            out["log_probs"] = tf.nn.log_softmax(logits)
        return out

    return features, head, patches


def serving_archive(model: keras.Model, cfg: TrainConfig, pcfg: PipelineConfig,
                    labels: list[str], centroids: np.ndarray | None,
                    top_k: int) -> keras.export.ExportArchive:
    """The SavedModel's three signatures, preprocessing in the graph where TF ops allow:

    * `patches`: float32 model inputs [N, ...] -> {log_probs [N, C], embedding [N, D]}
      (the part that becomes TFLite; embedding-only models have no log_probs);
    * `classify`: one uint8 grayscale image [H, W, 1] of any size -> top-k `writer_ids`
      and `scores` (probabilities, or cosine similarity to training centroids);
    * `embed`: the same image -> its unit `embedding`.
    """
    features, head, patches = patches_fn(model, cfg)
    names = tf.constant(labels)
    k = min(top_k, len(labels))

    def windows(image):
        if pcfg.mode == "resize":
            rgb = ops.resize_rgb(image, pcfg.image_size, pcfg.keep_aspect)
            return ops.scale_input(rgb, pcfg)[None], tf.ones([1], bool)
        line = ops.normalize_line_graph(image, pcfg.patch_size)
        x, ink = ops.sliding_windows(line, pcfg)
        keep = ink >= pcfg.min_ink
        return ops.scale_input(x, pcfg), tf.logical_or(keep, tf.logical_not(tf.reduce_any(keep)))

    def embed(image):
        x, keep = windows(image)
        emb = tf.boolean_mask(patches(x)["embedding"], keep)
        return {"embedding": tf.math.l2_normalize(tf.reduce_mean(emb, axis=0))}

    def classify(image):
        x, keep = windows(image)
        out = patches(x)
        if head is None:
            emb = tf.math.l2_normalize(tf.reduce_mean(tf.boolean_mask(out["embedding"], keep), 0))
            scores = tf.linalg.matvec(tf.constant(centroids, tf.float32), emb)
        else:
            scores = tf.nn.softmax(tf.reduce_mean(tf.boolean_mask(out["log_probs"], keep), 0))
        top = tf.math.top_k(scores, k)
        return {"writer_ids": tf.gather(names, top.indices), "scores": top.values}

    archive = keras.export.ExportArchive()
    archive.track(features)
    if head is not None:
        archive.track(model)
    image_spec = [tf.TensorSpec([None, None, 1], tf.uint8, name="image")]
    archive.add_endpoint("patches", patches,
                         [tf.TensorSpec((None, *pcfg.input_shape), tf.float32, name="patches")])
    archive.add_endpoint("classify", classify, image_spec)
    archive.add_endpoint("embed", embed, image_spec)
    return archive


def _convert(saved_model: Path, variant: str, calibration: np.ndarray) -> bytes:
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["patches"])
    if variant != "none":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        conv.representative_dataset = lambda: ([x[None]] for x in calibration)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def _calibration(cfg: TrainConfig, n: int) -> np.ndarray:
    """`n` model inputs from the training pipeline (no augmentation) for int8 ranges."""
    pcfg = dataclasses.replace(cfg.pipeline_config(), augment=False, shuffle_buffer=256)
    ds = train_dataset(load_split(cfg.config, "train", cfg.data_dir), pcfg)
    return np.stack(list(ds.unbatch().map(lambda x, y: x).take(n).as_numpy_iterator()))


def _per_image(fn, cfg: TrainConfig, pcfg: PipelineConfig, split: str, key: str):
    """Unit mean embedding per `key` (image_id or writer) of a split's inked windows,
    through the Keras `patches` fn."""
    emb, meta = run_windows(lambda x: fn(x)["embedding"], eval_dataset(
        load_split(cfg.config, split, cfg.data_dir), pcfg))
    keep = meta["ink"] >= (pcfg.min_ink if pcfg.mode == "patches" else 0.0)
    ids, means = aggregate(emb, meta[key], keep)
    return ids, normalise(means), meta


def _parity(models: dict[str, runtime.Model], cfg: TrainConfig) -> list[dict]:
    """Per variant on the test split: top-1 agreement with Keras, accuracy, largest
    probability difference, file size and median latency per image."""
    raw = list(load_split(cfg.config, "test", cfg.data_dir).as_numpy_iterator())
    images = [decode_gray(ex["image"], ex["image_id"].decode()) for ex in raw]
    truth = np.array([ex["writer"] for ex in raw])
    scores, latency = {}, {}
    for name, model in models.items():
        rows, times = [], []
        for img in tqdm(images, desc=f"parity {name}", leave=False, disable=None):
            start = time.perf_counter()
            rows.append(model.scores(img)[0])
            times.append(time.perf_counter() - start)
        scores[name], latency[name] = np.stack(rows), float(np.median(times)) * 1000
    ref = scores["keras"].argmax(1)
    table = []
    for name, model in models.items():
        s = scores[name]
        size = model.path.stat().st_size if model.path.suffix == ".tflite" else None
        table.append({
            "variant": name, "file": model.path.name if size else None, "size_bytes": size,
            "top1_agreement": float((s.argmax(1) == ref).mean()),
            "accuracy": float((s.argmax(1) == truth).mean()),
            "max_abs_prob_diff": float(np.abs(s - scores["keras"]).max()),
            "median_ms_per_image": latency[name], "n_images": len(images),
        })
    return table


def parity_markdown(table: list[dict]) -> str:
    lines = ["| variant | size | top-1 agreement | accuracy | max prob diff | ms / image |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in table:
        size = f"{r['size_bytes'] / 1024:.0f} KiB" if r["size_bytes"] else "(in memory)"
        lines.append(f"| {r['variant']} | {size} | {r['top1_agreement']:.3f} | "
                     f"{r['accuracy']:.3f} | {r['max_abs_prob_diff']:.4f} | "
                     f"{r['median_ms_per_image']:.1f} |")
    return "\n".join(lines) + "\n"


def _card(cfg: TrainConfig, pcfg: PipelineConfig, run: Path, labels: list[str],
          fingerprint: str, threshold: dict, files: dict[str, str]) -> dict:
    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics.pop("per_writer", None)
    if pcfg.mode == "patches":
        steps = ["decode to 8-bit grayscale (16-bit scaled, alpha over white)",
                 "crop to the ink bounding box (threshold half-way from paper to darkest ink)",
                 f"scale the height to {pcfg.patch_size} px keeping the aspect ratio "
                 "(area resize when shrinking)",
                 "subtract the paper level, stretch ink to 0..255 (bright ink on black)",
                 f"{pcfg.patch_size}x{pcfg.patch_size} windows every {pcfg.stride} px, plus the "
                 "last", f"keep windows with at least {pcfg.min_ink:.0%} ink pixels (> 127)",
                 "divide by 255", "average the windows' log-probabilities (or embeddings)"]
    else:
        steps = ["decode to 8-bit grayscale", "to RGB",
                 f"{'pad' if pcfg.keep_aspect else 'squash'} to {pcfg.image_size} px",
                 "ResNet50 caffe preprocessing" if pcfg.normalization == "resnet50"
                 else "divide by 255"]
    return {
        "model": cfg.model, "labels": labels, "fingerprint": fingerprint,
        "source_run": str(run.resolve()), "train_config": cfg.to_json(),
        "input": {"mode": pcfg.mode, "patch_size": pcfg.patch_size, "stride": pcfg.stride,
                  "min_ink": pcfg.min_ink, "image_size": pcfg.image_size,
                  "keep_aspect": pcfg.keep_aspect, "normalization": pcfg.normalization,
                  "shape": [None, *pcfg.input_shape], "dtype": "float32"},
        "preprocessing": steps,
        "identify_by": "gallery" if cfg.model == "siamese_resnet50" else "softmax",
        "metrics": metrics, "verification": threshold, "files": files,
    }


def export(ecfg: ExportConfig) -> dict:
    """Write the export folder; returns its model card (with the parity table)."""
    if ecfg.out.exists():
        raise FileExistsError(f"{ecfg.out}: already exists. Choose a new --out or delete it.")
    cfg, labels, model = load_run(ecfg.run)
    pcfg = dataclasses.replace(cfg.pipeline_config(), deterministic=True,
                               patch_stride=ecfg.stride or cfg.pipeline_config().patch_stride)
    fingerprint = hashlib.sha256((ecfg.run / "model.keras").read_bytes()).hexdigest()[:16]
    fn = tf.function(patches_fn(model, cfg)[2], reduce_retracing=True)

    print("calibrating the verification threshold on the validation split", flush=True)
    ids, img_emb, meta = _per_image(fn, cfg, pcfg, "validation", "image_id")
    writer_of = dict(zip(meta["image_id"], meta["writer"]))
    ver = verification(img_emb, np.array([writer_of[i] for i in ids]))
    ver.pop("_roc", None)
    threshold = {"threshold": ver.get("eer_threshold", 0.5), "split": "validation", **ver}
    centroids = None
    if cfg.model == "siamese_resnet50":
        centroids = _per_image(fn, cfg, pcfg, "train", "writer")[1]

    with atomic.replaced(ecfg.out, directory=True) as tmp:
        print(f"writing the SavedModel to {ecfg.out / 'saved_model'}", flush=True)
        archive = serving_archive(model, cfg, pcfg, labels, centroids, ecfg.top_k)
        archive.write_out(str(tmp / "saved_model"), verbose=False)
        calibration = (_calibration(cfg, ecfg.calibration_samples)
                       if "int8" in ecfg.quantize else None)
        files = {}
        for q in ecfg.quantize:
            name = f"model_{VARIANTS[q]}.tflite"
            print(f"converting {name}", flush=True)
            (tmp / name).write_bytes(_convert(tmp / "saved_model", q, calibration))
            files[VARIANTS[q]] = name
        card = _card(cfg, pcfg, ecfg.run, labels, fingerprint, threshold, files)
        (tmp / "labels.json").write_text(json.dumps(labels, indent=2))
        (tmp / runtime.CARD).write_text(json.dumps(card, indent=2))
        if centroids is not None:
            runtime.Gallery(tmp / "train_gallery", fingerprint, list(labels),
                            np.arange(len(labels)), list(labels), centroids).save()

        def keras_backend(x):
            return {k: v.numpy() for k, v in fn(tf.constant(x)).items()}

        models = {"keras": runtime.Model(tmp / runtime.CARD, backend=keras_backend)}
        for variant, name in files.items():
            models[variant] = runtime.Model(tmp / name, ecfg.threads)
        print("parity on the test split", flush=True)
        card["parity"] = _parity(models, cfg)
        report = parity_markdown(card["parity"])
        (tmp / runtime.CARD).write_text(json.dumps(card, indent=2))
        (tmp / "parity.json").write_text(json.dumps(card["parity"], indent=2))
        (tmp / "parity.md").write_text(report)
        print(report)
        int8 = next((r for r in card["parity"] if r["variant"] == "int8"), None)
        if int8 and int8["top1_agreement"] < ecfg.min_agreement and not ecfg.allow_degraded:
            raise DegradedExport(
                f"int8 top-1 agreement {int8['top1_agreement']:.3f} is below "
                f"{ecfg.min_agreement:.2f}; nothing written to {ecfg.out}. Pass "
                "--allow-degraded to accept it, or leave int8 out of --quantize.")
    return card
