"""KerasTuner hypermodels, one per model family, over `TrainConfig`.

`build(hp)` samples the family's search space into a TrainConfig and compiles its model.
`fit(hp, model, *args, **kwargs)` is tuned too: the patch size changes the input pipeline,
so the datasets are built there from the same sampled config; everything the tuner passes
(epochs, callbacks, verbosity) goes through to `model.fit`.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import keras
import keras_tuner as kt

from models.config import TrainConfig
from models.train import calibration_writers, compiled_model, datasets, weights_fit
from tuning.space import Spec


class WriterHyperModel(kt.HyperModel):
    """The shared machinery; subclasses name their family."""

    family = ""

    def __init__(self, base: TrainConfig, space: dict[str, Spec], num_classes: int):
        super().__init__(name=self.family, tunable=True)
        self.base = dataclasses.replace(base, model=self.family)
        self.space, self.num_classes = space, num_classes

    def config(self, hp: kt.HyperParameters) -> TrainConfig:
        """The TrainConfig of one trial: the base with the sampled values."""
        values = {name: spec.sample(hp, name) for name, spec in self.space.items()}
        return dataclasses.replace(self.base, **values)

    def build(self, hp: kt.HyperParameters):
        return compiled_model(self.config(hp), self.num_classes)[0]

    def fit(self, hp: kt.HyperParameters, model, *args, **kwargs):
        cfg = self.config(hp)  # trials leave out the writers the retrained best will hold out
        train, val = datasets(cfg, calibration_writers(cfg))
        return model.fit(train, *args, validation_data=val, **kwargs)


class PatchCNNHyperModel(WriterHyperModel):
    """patch_cnn: learning rate, dropout, patch size and width."""

    family = "patch_cnn"


class PatchEmbedHyperModel(WriterHyperModel):
    """patch_embed: learning rate, embedding size, metric loss, temperature (cosface,
    supcon) and margin (cosface, triplet)."""

    family = "patch_embed"


class ClassifierHyperModel(WriterHyperModel):
    """resnet50_classifier: learning rate, dropout and head units."""

    family = "resnet50_classifier"


class SiameseHyperModel(WriterHyperModel):
    """siamese_resnet50: learning rate, head units, embedding size and margin."""

    family = "siamese_resnet50"


class NoRoomForTrial(kt.errors.FatalError, OSError):
    """A full disk: KerasTuner counts any error but a FatalError as a failed trial, and goes
    on to fail the next ones."""


class RoomForTrialWeights(keras.callbacks.Callback):
    """KerasTuner saves a trial's best weights with h5py after an epoch (the callback it adds
    after the search's own); a full disk there left h5py's tracebacks and its file open.
    The search stops first, where they plainly cannot fit (`weights_fit`)."""

    def __init__(self, project: Path):
        super().__init__()
        self.project = project

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not weights_fit(self.model, self.project):
            raise NoRoomForTrial(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.project))


HYPERMODELS = {cls.family: cls for cls in (PatchCNNHyperModel, PatchEmbedHyperModel,
                                           ClassifierHyperModel, SiameseHyperModel)}
