"""The search spaces, in one place, and their overrides from a YAML or JSON file.

An override file maps hyperparameter names of the chosen model to a range or a list:

    learning_rate: {min: 1.0e-4, max: 3.0e-3, sampling: log}
    width: {values: [16, 32]}

Names, keys and ranges are checked before any training starts.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

SAMPLINGS = ("linear", "log")


class SpaceError(ValueError):
    """A search-space file or value that cannot be used; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric range; `integer` ranges give ints (head units), others floats."""

    min: float
    max: float
    sampling: str = "linear"
    integer: bool = False

    def check(self, name: str) -> None:
        if not self.min < self.max:
            raise SpaceError(f"{name}: empty or inverted range [{self.min}, {self.max}]; "
                             "min must be below max (fix a single value with `values: [v]`).")
        if self.sampling not in SAMPLINGS:
            raise SpaceError(f"{name}: unknown sampling {self.sampling!r}; allowed: "
                             f"{', '.join(SAMPLINGS)}")
        if self.sampling == "log" and self.min <= 0:
            raise SpaceError(f"{name}: a log range needs min > 0, got {self.min}")

    def sample(self, hp, name: str):
        if self.integer:
            return hp.Int(name, int(self.min), int(self.max), sampling=self.sampling)
        return hp.Float(name, self.min, self.max, sampling=self.sampling)


@dataclasses.dataclass(frozen=True)
class Choice:
    values: tuple

    def check(self, name: str) -> None:
        if not self.values:
            raise SpaceError(f"{name}: `values` is empty; give at least one value.")

    def sample(self, hp, name: str):
        return hp.Choice(name, list(self.values))


Spec = Range | Choice
_LR = Range(1e-5, 1e-2, "log")
_DROPOUT = Range(0.0, 0.6)
_HEAD = Range(128, 2048, "log", integer=True)

# Names are TrainConfig fields; each model family tunes these by default.
SPACES: dict[str, dict[str, Spec]] = {
    "patch_cnn": {"learning_rate": _LR, "dropout": _DROPOUT,
                  "patch_size": Choice((32, 48, 64)), "width": Choice((8, 16, 24))},
    "patch_embed": {"learning_rate": _LR, "embedding_dim": Choice((32, 64, 128, 256)),
                    "metric_loss": Choice(("supcon", "triplet", "cosface")),
                    "temperature": Range(0.03, 0.5, "log"), "margin": Range(0.05, 1.0)},
    "resnet50_classifier": {"learning_rate": _LR, "dropout": _DROPOUT, "head_units": _HEAD},
    "siamese_resnet50": {"learning_rate": _LR, "head_units": _HEAD,
                         "embedding_dim": Choice((32, 64, 128, 256)),
                         "margin": Range(0.2, 2.0)},
}


def _number(name: str, key: str, value: Any) -> float:
    try:  # YAML reads 1e-4 (no dot) as a string
        return float(value)
    except (TypeError, ValueError):
        raise SpaceError(f"{name}.{key}: {value!r} is not a number") from None


def _override(name: str, default: Spec, spec: Any) -> Spec:
    if not isinstance(spec, dict):
        raise SpaceError(f"{name}: expected a mapping such as {{min: .., max: ..}} or "
                         f"{{values: [..]}}, got {spec!r}")
    allowed = {"values"} if "values" in spec else {"min", "max", "sampling"}
    unknown = set(spec) - allowed
    if unknown:
        raise SpaceError(f"{name}: unknown key(s) {', '.join(sorted(unknown))}; use either "
                         "`values` or `min`/`max`/`sampling`.")
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list):
            raise SpaceError(f"{name}.values: expected a list, got {values!r}")
        return Choice(tuple(values))
    base = default if isinstance(default, Range) else Range(0, 0)
    integer = base.integer or (isinstance(default, Choice)
                               and all(isinstance(v, int) for v in default.values))
    lo = _number(name, "min", spec.get("min", base.min))
    hi = _number(name, "max", spec.get("max", base.max))
    return Range(lo, hi, spec.get("sampling", base.sampling), integer)


def load(model: str, path: str | Path | None = None) -> dict[str, Spec]:
    """The search space of `model`, with the overrides of the YAML/JSON file at `path`."""
    space = dict(SPACES[model])
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such search-space file.")
        is_json = path.suffix == ".json"
        try:
            overrides = json.loads(path.read_text()) if is_json else yaml.safe_load(
                path.read_text())
        except (ValueError, yaml.YAMLError) as err:
            raise SpaceError(f"{path}: not valid {'JSON' if is_json else 'YAML'} "
                             f"({err})") from None
        if not isinstance(overrides, dict):
            raise SpaceError(f"{path}: expected a mapping of hyperparameter names.")
        unknown = set(overrides) - set(space)
        if unknown:
            raise SpaceError(f"{path}: unknown hyperparameter(s) {', '.join(sorted(unknown))} "
                             f"for {model}; tunable: {', '.join(space)}")
        try:
            for name, spec in overrides.items():
                space[name] = _override(name, space[name], spec)
                space[name].check(name)
        except SpaceError as err:
            raise SpaceError(f"{path}: {err}") from None
    return space
