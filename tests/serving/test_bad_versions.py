"""Bad model versions dropped by hand into the served folder while the server is under load.

Three broken versions, newest first in line to be served (TF Serving's default policy serves
the latest): a corrupt saved_model.pb, a version with its variables missing, and a version
whose warm-up requests fail (assets.extra/tf_serving_warmup_requests with an image that does
not decode). As TF Serving: none is ever served, version 1 keeps answering every request
(REST and gRPC clients, none fails meanwhile), and the model's status shows each failure in
TF Serving's form (state END, status with a non-OK canonical error_code and its message).
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from serving.client import ServingClient, b64
from tests.serving.helpers import (
    CLASS_NAMES,
    MODEL_NAME,
    POLL_SECONDS,
    ServerProcess,
    image,
    push_version,
)

pytest_plugins = ["tests.serving.helpers"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    if os.environ.get("TF_SERVING_URL"):
        pytest.skip("writes into the served directory")
    export_v1 = request.getfixturevalue("serving_export_v1")
    base = tmp_path_factory.mktemp("bad_versions")
    push_version(export_v1, str(base / MODEL_NAME), 1)
    process = ServerProcess(str(base), str(base.parent / "bad-versions-server.log"))
    try:
        process.wait_available(MODEL_NAME)
        yield process, str(base / MODEL_NAME), export_v1
    finally:
        process.stop()


class Load:
    """A REST and a gRPC client predicting until stopped; every answer (or error) is kept."""

    def __init__(self, process: ServerProcess):
        self.answers: list[object] = []
        self._stop = threading.Event()
        self._process = process
        self._threads = [
            threading.Thread(target=self._rest, daemon=True),
            threading.Thread(target=self._grpc, daemon=True),
        ]

    def _rest(self) -> None:
        with ServingClient(self._process.url, MODEL_NAME, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    answer = client.predict(instances=[b64(image(seed=3))])
                    self.answers.append(answer["predictions"][0]["class_name"])
                except Exception as exc:
                    self.answers.append(exc)

    def _grpc(self) -> None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL_NAME
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([image(seed=4)]))
        with grpc.insecure_channel(self._process.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not self._stop.is_set():
                try:
                    response = stub.Predict(request, timeout=30)
                    names = tf.make_ndarray(response.outputs["class_name"])
                    self.answers.append(names[0].decode())
                except Exception as exc:
                    self.answers.append(exc)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def wait_for(condition, timeout: float = 90.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"timed out waiting for {what}")


def corrupt_saved_model(export_v1: str, destination: str) -> None:
    shutil.copytree(export_v1, destination)
    with open(os.path.join(destination, "saved_model.pb"), "r+b") as f:
        f.seek(20)
        f.write(b"\xff" * 64)  # a torn write in the middle of the graph


def missing_variables(export_v1: str, destination: str) -> None:
    shutil.copytree(export_v1, destination, ignore=shutil.ignore_patterns("variables"))


def failing_warmup(export_v1: str, destination: str) -> None:
    """A complete model whose warm-up record sends bytes that are not an image."""
    shutil.copytree(export_v1, destination)
    entry = prediction_log_pb2.PredictionLog()
    entry.predict_log.request.model_spec.name = MODEL_NAME
    entry.predict_log.request.inputs["image_bytes"].CopyFrom(
        tf.make_tensor_proto([b"not an image at all"])
    )
    path = os.path.join(destination, "assets.extra", "tf_serving_warmup_requests")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(entry.SerializeToString())


BAD_VERSIONS = {2: corrupt_saved_model, 3: missing_variables, 4: failing_warmup}


def grpc_status(process: ServerProcess) -> dict[int, tuple[str, int, str]]:
    with grpc.insecure_channel(process.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = MODEL_NAME
        response = stub.GetModelStatus(request, timeout=30)
    state_name = get_model_status_pb2.ModelVersionStatus.State.Name
    return {
        s.version: (state_name(s.state), s.status.error_code, s.status.error_message)
        for s in response.model_version_status
    }


def test_bad_versions_are_never_served_and_version_1_keeps_answering(server):
    process, model_dir, export_v1 = server
    client = ServingClient(process.url, MODEL_NAME)
    with Load(process) as load:
        wait_for(lambda: len(load.answers) >= 6, what="first answers")
        for version, make in BAD_VERSIONS.items():
            staging = os.path.join(model_dir, f".staging-{version}")
            make(export_v1, staging)
            os.rename(staging, os.path.join(model_dir, str(version)))  # appears whole
            wait_for(
                lambda v=version: grpc_status(process).get(v, ("",))[0] == "END",
                what=f"version {version} to fail",
            )
            seen = len(load.answers)
            wait_for(lambda s=seen: len(load.answers) >= s + 4, what="answers after it")
    failures = [a for a in load.answers if isinstance(a, Exception)]
    assert failures == [], failures[:3]
    assert set(load.answers) <= set(CLASS_NAMES), set(load.answers)

    statuses = grpc_status(process)
    assert statuses[1][:2] == ("AVAILABLE", 0)
    for version in BAD_VERSIONS:
        state, code, message = statuses[version]
        assert state == "END" and code != 0 and message, (version, statuses[version])
    # The warm-up failure is the decoder's INVALID_ARGUMENT, as TF Serving reports it.
    assert statuses[4][1] == grpc.StatusCode.INVALID_ARGUMENT.value[0], statuses[4]
    # REST prints the same status proto (TF Serving's JSON: codes by name).
    rest = {int(v["version"]): v for v in client.status()["model_version_status"]}
    assert rest[3]["state"] == "END" and rest[3]["status"]["error_code"] != "OK"
    assert rest[3]["status"]["error_message"] == statuses[3][2]
    for version in BAD_VERSIONS:
        pinned = client.send(
            "POST", f"/v1/models/{MODEL_NAME}/versions/{version}:predict",
            json={"instances": [b64(image())]},
        )  # fmt: skip
        assert pinned.status_code == 404, pinned.text
