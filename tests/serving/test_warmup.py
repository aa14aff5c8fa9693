"""Warm-up records: written by the export in TF Serving's format, replayed on load by its rules.

The export (the project's own code, via the shared fixture) must leave
`assets.extra/tf_serving_warmup_requests` holding PredictionLog records for every signature;
replaying them must run, and TF Serving's limits apply: more than 1,000 records, an unparsable
record or an unsupported log type fail the load (saved_model_warmup_util.cc).
"""

from __future__ import annotations

import os
import shutil

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import errors, warmup
from serving.savedmodel import Servable

pytest_plugins = ["tests.serving.helpers"]


def read_logs(path: str) -> list[prediction_log_pb2.PredictionLog]:
    logs = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        entry = prediction_log_pb2.PredictionLog()
        entry.ParseFromString(record)
        logs.append(entry)
    return logs


@pytest.fixture(scope="module")
def servable(serving_export_v1: str) -> Servable:
    return Servable("m", 1, serving_export_v1)


def test_export_writes_tf_serving_warmup_records(serving_export_v1: str) -> None:
    path = os.path.join(serving_export_v1, "assets.extra", "tf_serving_warmup_requests")
    logs = read_logs(path)
    kinds = [(e.WhichOneof("log_type"), e) for e in logs]
    signatures = set()
    for kind, entry in kinds:
        request = getattr(entry, kind).request
        signatures.add((kind, request.model_spec.signature_name))
    assert signatures == {
        ("predict_log", "serving_default"),
        ("predict_log", "serving_tf_example"),
        ("classify_log", "classify"),
    }
    batch_sizes = {
        e.predict_log.request.inputs["image_bytes"].tensor_shape.dim[0].size
        for _, e in kinds
        if e.predict_log.request.model_spec.signature_name == "serving_default"
    }
    assert batch_sizes == {1, 8}


def test_replay_runs_every_record(servable: Servable) -> None:
    assert warmup.replay(servable) == 6


def copy_with_warmup(export_dir: str, target, records: list[bytes]) -> str:
    shutil.copytree(export_dir, target, ignore=shutil.ignore_patterns("tf_serving_warmup_*"))
    with tf.io.TFRecordWriter(os.path.join(target, "assets.extra", warmup.REQUESTS_FILE)) as w:
        for record in records:
            w.write(record)
    return str(target)


def test_replay_refuses_what_tf_serving_refuses(serving_export_v1: str, tmp_path) -> None:
    first = read_logs(warmup.warmup_path(serving_export_v1))[0].SerializeToString()
    too_many = copy_with_warmup(serving_export_v1, tmp_path / "many", [first] * 1001)
    with pytest.raises(errors.ServingError, match=r"exceeds the maximum \(1000\)"):
        warmup.replay(Servable("m", 1, too_many))

    session_run = prediction_log_pb2.PredictionLog()
    session_run.session_run_log.SetInParent()
    unsupported = copy_with_warmup(
        serving_export_v1, tmp_path / "unsupported", [session_run.SerializeToString()]
    )
    with pytest.raises(errors.ServingError) as raised:
        warmup.replay(Servable("m", 1, unsupported))
    assert raised.value.code is errors.Code.UNIMPLEMENTED
    assert "Unsupported log_type for warmup" in raised.value.message

    garbage = copy_with_warmup(serving_export_v1, tmp_path / "garbage", [b"\xff\x00 not a proto"])
    with pytest.raises(errors.ServingError, match="Failed to parse warmup record"):
        warmup.replay(Servable("m", 1, garbage))


def test_multi_inference_records_are_replayed(tmp_path) -> None:
    """saved_model_warmup.cc replays multi_inference_log records too: each task's signature
    runs on the record's examples; a task no signature can answer fails the load."""
    from tests.serving.helpers import export_half_plus_two

    export_dir = export_half_plus_two(str(tmp_path / "half_plus_two"))
    os.makedirs(os.path.join(export_dir, "assets.extra"))

    def record(*tasks: tuple[str, str]) -> bytes:
        entry = prediction_log_pb2.PredictionLog()
        request = entry.multi_inference_log.request
        example = request.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(2.0)
        for signature, method in tasks:
            task = request.tasks.add(method_name=method)
            task.model_spec.signature_name = signature
        return entry.SerializeToString()

    good = record(
        ("regress_x_to_y", "tensorflow/serving/regress"),
        ("classify_x_to_y", "tensorflow/serving/classify"),
    )
    warmed = copy_with_warmup(export_dir, tmp_path / "good", [good, good])
    assert warmup.replay(Servable("m", 1, warmed)) == 2
    bad = copy_with_warmup(
        export_dir, tmp_path / "bad", [record(("serving_default", "tensorflow/serving/predict"))]
    )
    with pytest.raises(errors.ServingError) as raised:
        warmup.replay(Servable("m", 1, bad))
    assert raised.value.code is errors.Code.UNIMPLEMENTED
