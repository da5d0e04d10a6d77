"""The whole-line computation that export serialises and evaluate scores, so that the
figures of `evaluate` (and of `train`'s closing evaluation) are those of the exported model.

A patch model runs once over a whole normalised line (`windows_fn`), and the TF-free
runtime's own preprocessing (`models.runtime.Model`) feeds it, here with the Keras model
behind it, in the export with the TFLite interpreter.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from iam_writers_tfds.images import decode_gray
from models import runtime
from models.config import PATCH_DOWNSAMPLING, TrainConfig
from pipelines import PipelineConfig, load_split


def _line_towers(model: keras.Model, pcfg: PipelineConfig):
    """A patch model applied once to a whole padded line [1, P, W, 1] instead of to each of
    its windows: the convolutional trunk runs over the line, average pooling of its feature
    map over every window (P wide, every `stride` px) stands in for the patch's global
    average pooling, and the layers after it run per window. Overlapping windows share
    their convolutions, so a line costs about W / P patches instead of 2 W / P.
    Returns (features model -> [1, n_windows, F] head input and [1, n_windows, D]
    embedding, the softmax head or None)."""
    names = [layer.name for layer in model.layers]
    gap = names.index("gap")
    cells = model.get_layer("gap").input.shape[1]  # feature rows of one patch
    x = inputs = keras.Input((pcfg.patch_size, None, 1), name="line")
    for layer in model.layers[1:gap]:
        x = layer(x)
    x = layers.AveragePooling2D(cells, strides=(1, pcfg.stride // PATCH_DOWNSAMPLING),
                                name="windows")(x)
    x = emb = layers.Reshape((-1, x.shape[-1]), name="per_window")(x)
    tail = model.layers[gap + 1:]
    head = tail.pop() if tail and tail[-1].name == "writer" else None
    for layer in tail:
        x = layer(x)
        if layer.name == "embedding":
            emb = x
    return keras.Model(inputs, [x, emb]), head


def _towers(model: keras.Model, cfg: TrainConfig, pcfg: PipelineConfig):
    """(features model, classifier head or None): features give the head's input and the
    embedding (the embedding layer if any, else the pooled features), per window of a line
    (patch models) or per image (resize models)."""
    if pcfg.mode == "patches":
        return _line_towers(model, pcfg)
    if cfg.by_gallery:
        tower = model.get_layer("tower")
        return keras.Model(tower.inputs, [tower.output, tower.output]), None
    head = model.get_layer("writer")
    return keras.Model(model.inputs, [head.input, model.get_layer("gap").output]), head


def input_spec(pcfg: PipelineConfig) -> tf.TensorSpec:
    """The `windows` signature's input: one padded line, or a batch of whole images."""
    shape = (1, pcfg.patch_size, None, 1) if pcfg.mode == "patches" else (None,
                                                                          *pcfg.input_shape)
    return tf.TensorSpec(shape, tf.float32, name="x")


def windows_fn(model: keras.Model, cfg: TrainConfig, pcfg: PipelineConfig):
    """The `windows` computation: float32 model input -> per window (or image)
    {embedding [N, D] (unit), log_probs [N, C] (classifiers only)}. Log-probabilities rather
    than probabilities, so int8 keeps resolution where averaging needs it."""
    features, head = _towers(model, cfg, pcfg)

    def windows(x):
        feat, emb = features(x, training=False)
        if pcfg.mode == "patches":
            feat, emb = feat[0], emb[0]
        out = {"embedding": tf.math.l2_normalize(tf.cast(emb, tf.float32), axis=-1)}
        if head is not None:
            logits = tf.matmul(tf.cast(feat, tf.float32), head.kernel) + head.bias
            out["log_probs"] = tf.nn.log_softmax(logits)
        return out

    return features, head, windows


def input_card(pcfg: PipelineConfig) -> dict:
    """The model card's `input`: what the runtime's preprocessing needs."""
    return {"mode": pcfg.mode, "patch_size": pcfg.patch_size, "line_band": pcfg.line_band,
            "stride": pcfg.stride, "min_ink": pcfg.min_ink, "image_size": pcfg.image_size,
            "keep_aspect": pcfg.keep_aspect, "normalization": pcfg.normalization,
            "shape": input_spec(pcfg).shape.as_list(), "dtype": "float32"}


def keras_backend(model: keras.Model, cfg: TrainConfig, pcfg: PipelineConfig):
    """The `windows` computation of the in-memory Keras model as a runtime backend."""
    fn = tf.function(windows_fn(model, cfg, pcfg)[2], reduce_retracing=True)
    return lambda x: {k: v.numpy() for k, v in fn(tf.constant(x)).items()}


def line_model(model: keras.Model, cfg: TrainConfig, labels: list[str],
               pcfg: PipelineConfig | None = None) -> runtime.Model:
    """The runtime's model over the Keras model: the exported model's own computation."""
    pcfg = pcfg or cfg.inference_pipeline()
    card = {"labels": labels, "input": input_card(pcfg)}
    return runtime.Model.in_memory(card, keras_backend(model, cfg, pcfg))


def split_images(cfg: TrainConfig, split: str) -> list[tuple[str, str, int, np.ndarray]]:
    """(image id, form id, writer, decoded grayscale image) of every image of a split."""
    raw = load_split(cfg.config, split, cfg.data_dir).as_numpy_iterator()
    return [(ex["image_id"].decode(), ex["form_id"].decode(), int(ex["writer"]),
             decode_gray(ex["image"], ex["image_id"].decode())) for ex in raw]
