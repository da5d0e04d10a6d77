"""Every pipeline hyperparameter, named in one place."""

from __future__ import annotations

import dataclasses

from iam_writers_tfds.configs import check_seed

MODES = ("patches", "resize")
NORMALIZATIONS = ("unit", "resnet50")
ON_CORRUPT = ("skip", "fail")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How images become model inputs.

    `patches` (the default recipe): grayscale lines, ink bright on dark, scaled to
    `patch_size` px high: the band of `line_band` scan rows centred on the line's ink (every
    line at one scale, so handwriting size survives), or with `line_band` 0 the ink's
    bounding box (each line at its own scale); training takes `patches_per_image` random
    crops containing ink, evaluation a sliding window with stride `patch_stride`. `resize`
    (the notebooks' recipe): the whole image to RGB `image_size` x `image_size`, squashed or
    (`keep_aspect`) padded.

    Every stream keeps its order (tf.data's default): with parallel maps out of order, two
    runs under one seed trained different models (docs/results.md, "Seeded training").
    """

    mode: str = "patches"
    patch_size: int = 64
    line_band: int = 128  # scan px; 0: the ink's bounding box
    patches_per_image: int = 8
    patch_stride: int | None = None  # default: patch_size // 2
    min_ink: float = 0.03  # fraction of a patch's pixels that must be ink
    image_size: int = 128
    normalization: str = "unit"
    keep_aspect: bool = False
    batch_size: int = 64
    shuffle_buffer: int = 2048
    augment: bool = True
    seed: int = 0
    cache: bool = True
    on_corrupt: str = "skip"
    device_prefetch: bool = False  # prefetch_to_device("/gpu:0"): custom loops only

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("mode", self.mode, MODES),
            ("normalization", self.normalization, NORMALIZATIONS),
            ("on_corrupt", self.on_corrupt, ON_CORRUPT),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
        for name in ("patch_size", "image_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 16 <= value <= 1024:
                raise ValueError(f"{name} must be an integer in 16..1024, got {value!r}")
        if self.line_band and not 16 <= self.line_band <= 4096:
            raise ValueError(f"line_band must be 0 or 16..4096 scan px, got {self.line_band}")
        if self.patches_per_image < 1 or self.batch_size < 1:
            raise ValueError("patches_per_image and batch_size must be >= 1")
        check_seed(self.seed)
        if not 0 <= self.min_ink < 1:
            raise ValueError(f"min_ink must be in [0, 1), got {self.min_ink}")
        if self.patch_stride is not None and not 1 <= self.patch_stride <= self.patch_size:
            raise ValueError(f"patch_stride must be in 1..patch_size, got {self.patch_stride}")

    @property
    def stride(self) -> int:
        return self.patch_stride or self.patch_size // 2

    @property
    def input_shape(self) -> tuple[int, int, int]:
        if self.mode == "patches":
            return (self.patch_size, self.patch_size, 1)
        return (self.image_size, self.image_size, 3)
