"""tf.data input pipelines over the iam_writers_tfds splits.

Public surface: `PipelineConfig`, `load_split`, `train_dataset`, `eval_dataset`,
`pair_dataset`, `pk_dataset`, `CorruptImages`.
"""

from pipelines.config import PipelineConfig
from pipelines.datasets import (
    CorruptImages,
    eval_dataset,
    load_split,
    pair_dataset,
    pk_dataset,
    train_dataset,
)

__all__ = [
    "CorruptImages",
    "PipelineConfig",
    "eval_dataset",
    "load_split",
    "pair_dataset",
    "pk_dataset",
    "train_dataset",
]
