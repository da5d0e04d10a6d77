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
