"""The BulkInferrer's logs keep which photo, not the photo."""

from __future__ import annotations

from tensorflow_serving.apis import prediction_log_pb2

from components.bulk_inferrer.executor import without_image
from models import features
from models.examples import make_example


def test_classify_log_loses_the_image_bytes_and_keeps_the_path_and_answer():
    log = prediction_log_pb2.PredictionLog()
    example = make_example(
        {features.IMAGE_KEY: b"\xff\xd8" * 5000, features.SOURCE_PATH_KEY: b"a/b.jpg"}
    )
    log.classify_log.request.input.example_list.examples.add().CopyFrom(example)
    result = log.classify_log.response.result.classifications.add()
    result.classes.add(label="hot_dog", score=0.9)
    stripped = without_image(log)
    [kept] = stripped.classify_log.request.input.example_list.examples
    assert features.IMAGE_KEY not in kept.features.feature
    assert kept.features.feature[features.SOURCE_PATH_KEY].bytes_list.value == [b"a/b.jpg"]
    assert stripped.classify_log.response == log.classify_log.response
    assert stripped.ByteSize() < 200 < log.ByteSize()
    # The input log is left as it was.
    assert (
        features.IMAGE_KEY
        in log.classify_log.request.input.example_list.examples[0].features.feature
    )
