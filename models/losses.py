"""Metric-learning losses written for Keras 3 (TF-Addons and tensorflow-similarity do not
run there)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable("iam_writers")
class ContrastiveLoss(keras.losses.Loss):
    """Hadsell et al. 2006 on Euclidean distances: y=1 (same writer) pulls the pair
    together, y=0 pushes it at least `margin` apart.

        loss = y * d^2 + (1 - y) * max(margin - d, 0)^2
    """

    def __init__(self, margin: float = 1.0, name: str = "contrastive", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def call(self, y_true, y_pred):
        y = ops.cast(ops.reshape(y_true, [-1]), y_pred.dtype)
        d = ops.reshape(y_pred, [-1])
        return y * ops.square(d) + (1.0 - y) * ops.square(ops.maximum(self.margin - d, 0.0))

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


def _pairwise(y_true, y_pred):
    """(labels [B], unit embeddings [B, D] in float32, same-writer mask without the
    diagonal, the diagonal)."""
    y = ops.reshape(y_true, [-1])
    z = ops.cast(y_pred, "float32")
    eye = ops.eye(ops.shape(z)[0], dtype="float32")
    same = ops.cast(ops.equal(y[:, None], y[None, :]), "float32")
    return z, same * (1.0 - eye), eye


@keras.saving.register_keras_serializable("iam_writers")
class SupConLoss(keras.losses.Loss):
    """Supervised contrastive loss (Khosla et al. 2020) over a batch of unit embeddings
    and writer labels, as P x K batches give them: each anchor is pulled towards every
    other sample of its writer against all the batch's samples,

        loss_i = -mean_{p: y_p = y_i, p != i} log softmax_{a != i}(z_i . z_a / temperature)_p

    Anchors with no other sample of their writer contribute 0.
    """

    def __init__(self, temperature: float = 0.1, name: str = "supcon", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = temperature

    def call(self, y_true, y_pred):
        z, pos, eye = _pairwise(y_true, y_pred)
        logits = ops.matmul(z, ops.transpose(z)) / self.temperature - 1e9 * eye
        log_prob = logits - ops.logsumexp(logits, axis=1, keepdims=True)
        n_pos = ops.sum(pos, axis=1)
        return -ops.sum(pos * log_prob, axis=1) / ops.maximum(n_pos, 1.0)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable("iam_writers")
class BatchHardTripletLoss(keras.losses.Loss):
    """Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances of unit
    embeddings: each anchor's farthest same-writer sample should be `margin` closer than
    its nearest other-writer sample,

        loss_i = max(max_{p: y_p = y_i} d(i, p) - min_{n: y_n != y_i} d(i, n) + margin, 0)

    Anchors without a positive or a negative in the batch contribute 0.
    """

    def __init__(self, margin: float = 0.2, name: str = "batch_hard_triplet", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def call(self, y_true, y_pred):
        z, pos, eye = _pairwise(y_true, y_pred)
        neg = 1.0 - pos - eye
        d = ops.sqrt(ops.maximum(2.0 - 2.0 * ops.matmul(z, ops.transpose(z)), 1e-12))
        hardest_pos = ops.max(d * pos, axis=1)
        hardest_neg = ops.min(d + 4.0 * (1.0 - neg), axis=1)  # distances are at most 2
        valid = ops.cast((ops.sum(pos, axis=1) > 0) & (ops.sum(neg, axis=1) > 0), "float32")
        return valid * ops.maximum(hardest_pos - hardest_neg + self.margin, 0.0)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable("iam_writers")
class CosFaceLoss(keras.losses.Loss):
    """Large-margin cosine loss (CosFace, Wang et al. 2018) on the cosine similarities of
    unit embeddings to learned writer centres: the true writer's cosine must win by
    `margin`, at softmax temperature `temperature` (scale 1 / temperature),

        loss_i = cross_entropy(softmax((cos_i - margin * onehot(y_i)) / temperature), y_i)
    """

    def __init__(self, margin: float = 0.2, temperature: float = 0.1, name: str = "cosface",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin, self.temperature = margin, temperature

    def call(self, y_true, y_pred):
        cos = ops.cast(y_pred, "float32")
        y = ops.cast(ops.reshape(y_true, [-1]), "int32")
        logits = (cos - self.margin * ops.one_hot(y, ops.shape(cos)[-1])) / self.temperature
        return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "temperature": self.temperature}
