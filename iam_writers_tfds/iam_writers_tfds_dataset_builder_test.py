"""iam_writers_tfds dataset builder tests over dummy_data/ (12 writers x 3 forms x 1 line):
the Kaggle layout at its top, the same lines in the official IAM layout in dummy_data/iam/
(one of them, in validation, marked `err` in lines.txt)."""

import tensorflow_datasets as tfds

from iam_writers_tfds import iam_writers_tfds_dataset_builder


class Top50Test(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = iam_writers_tfds_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["top50"]
    SPLITS = {"train": 12, "validation": 12, "test": 12}
    SKIP_CHECKSUMS = True


class Top10Test(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = iam_writers_tfds_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["top10"]
    SPLITS = {"train": 10, "validation": 10, "test": 10}
    SKIP_CHECKSUMS = True


class SyntheticTest(tfds.testing.DatasetBuilderTestCase):
    """A manual dir holding a generated layout stands in for the generator here."""

    DATASET_CLASS = iam_writers_tfds_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["synthetic"]
    SPLITS = {"train": 12, "validation": 12, "test": 12}
    SKIP_CHECKSUMS = True


class IamTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = iam_writers_tfds_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["iam"]
    SPLITS = {"train": 12, "validation": 12, "test": 12}
    SKIP_CHECKSUMS = True


class IamOkTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = iam_writers_tfds_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["iam_ok"]
    SPLITS = {"train": 12, "validation": 11, "test": 12}
    SKIP_CHECKSUMS = True


if __name__ == "__main__":
    tfds.testing.test_main()
