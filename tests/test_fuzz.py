"""Property and fuzz tests: no input crashes decoding, the forms parser or prediction.
benchmarks/fuzz.py runs the same properties on 10,000+ examples each."""

from __future__ import annotations

import collections

from hypothesis import HealthCheck, given, settings

from tests import fuzzing

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(data=fuzzing.image_bytes())
def test_decoding_any_bytes_ends_in_an_image_or_a_documented_error(data):
    fuzzing.check_decode(data, collections.Counter())


@FAST
@given(data=fuzzing.forms_files)
def test_parsing_any_forms_file_ends_in_forms_or_a_layout_error(data, tmp_path):
    fuzzing.check_parse(data, tmp_path, collections.Counter())


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=fuzzing.image_bytes())
def test_predicting_any_file_ends_in_scores_or_a_documented_error(data, tmp_path):
    fuzzing.check_predict(fuzzing.fake_model(tmp_path), data, tmp_path, collections.Counter())


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=fuzzing.image_bytes())
def test_predicting_any_file_read_as_a_page_ends_in_scores_or_a_documented_error(data, tmp_path):
    """`--input page` on any file: its sheet looked for and its lines found, however small
    (a strip a pixel high crashed OpenCV's resize)."""
    fuzzing.check_predict(fuzzing.fake_model(tmp_path), data, tmp_path, collections.Counter(),
                          "page")


def test_each_kind_of_bad_image_gets_its_error(tmp_path):
    import numpy as np

    from iam_writers_tfds.images import CorruptImageError, ImageTooLargeError
    from models.runtime import NoInkError

    png = fuzzing._png(np.full((40, 200), 240, np.uint8))
    model = fuzzing.fake_model(tmp_path)
    for data, error in ((b"", CorruptImageError), (png[:50], CorruptImageError),
                        (fuzzing._with_size(png, 100_000, 100_000), ImageTooLargeError),
                        (fuzzing._with_size(png, 0, 40), CorruptImageError),
                        (png, NoInkError)):
        counts = collections.Counter()
        fuzzing.check_predict(model, data, tmp_path, counts)
        assert counts == {error.__name__: 1}, (error, counts)
