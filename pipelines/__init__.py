"""tf.data input pipelines over the iam_writers_tfds splits.

Public surface: `PipelineConfig`, `load_split`, `train_dataset`, `eval_dataset`,
`pair_dataset`, `pk_dataset`, `writer_names`, `CorruptImages`. TensorFlow is imported on
first use of a dataset function, so reading a config stays fast.
"""

from pipelines.config import PipelineConfig
from pipelines.prepared import writer_names

_DATASET_API = ("CorruptImages", "eval_dataset", "load_split", "pair_dataset", "pk_dataset",
                "train_dataset")
__all__ = ["PipelineConfig", "writer_names", *_DATASET_API]


def __getattr__(name: str):
    if name in _DATASET_API:
        from pipelines import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
