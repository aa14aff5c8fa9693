"""Fuzzing TF Serving's gRPC front end: generated and mutated requests to every method.

Random model specs (names, versions, labels, signatures), TensorProtos of every dtype with
huge, negative and unknown dims and values of the wrong kind, empty and missing inputs,
random tf.Examples, and byte mutations of a valid PredictRequest sent raw. Bounded here;
`make bench` runs it at length (bench/fuzz_bench.py). Properties: no INTERNAL / UNKNOWN /
DATA_LOSS / UNAVAILABLE (INTERNAL only for bytes that are not a request at all, gRPC's own
answer), the server's RSS grows by less than 200 MB, and a good request answers afterwards.
"""

from __future__ import annotations

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from bench import fuzz_bench
from tests.serving.helpers import Target, image

pytest_plugins = ["tests.serving.helpers"]

GRPC_EXAMPLES = 100  # per strategy: 200 calls


@pytest.fixture(scope="module")
def local_target(serving_target: Target) -> Target:
    if not serving_target.local or serving_target.grpc is None:
        pytest.skip("needs this server's process (RSS) and its gRPC port")
    return serving_target


def _good_predict(target: Target) -> predict_pb2.PredictResponse:
    with grpc.insecure_channel(target.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(fuzz_bench.good_predict_request(target.model, image()), timeout=60)


def test_grpc_fuzz_keeps_the_server_answering(local_target: Target):
    pid = local_target.server.process.pid
    _good_predict(local_target)  # warm: the RSS baseline includes a traced model call
    before = fuzz_bench.rss_mb(pid)
    tally = fuzz_bench.fuzz_grpc(local_target.grpc, local_target.model, image(), GRPC_EXAMPLES)
    assert tally.violations == [], tally.violations[:5]
    assert tally.inputs == 2 * GRPC_EXAMPLES
    assert {"OK", "INVALID_ARGUMENT", "NOT_FOUND"} <= set(tally.statuses), tally.statuses
    assert local_target.server.process.poll() is None
    assert fuzz_bench.rss_mb(pid) - before < fuzz_bench.RSS_LIMIT_MB
    response = _good_predict(local_target)
    assert tf.make_ndarray(response.outputs["probabilities"]).shape[0] == 1
    print(f"gRPC fuzz: {tally.as_dict()}")


def peak_rss_mb_during(pid: int, work) -> float:
    """Peak RSS growth of process `pid` while `work()` runs (Linux: clear_refs resets the
    peak, VmHWM reads it)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    before = fuzz_bench.rss_mb(pid)
    work()
    with open(f"/proc/{pid}/status") as f:
        peak = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    return peak - before


def test_a_huge_dim_is_refused_without_allocating_it(local_target: Target):
    """A TensorProto whose shape says 2^26 strings and carries one: TF fills such a tensor with
    its last value, so decoding it built a 2^26-element array (~1 GB; 2^31 took the machine's
    memory). Refused up front, as TF Serving refuses it ("tensor parsing error")."""
    request = fuzz_bench.good_predict_request(local_target.model, image())
    tensor = request.inputs["image_bytes"]
    del tensor.tensor_shape.dim[:]
    tensor.tensor_shape.dim.add(size=1)
    tensor.tensor_shape.dim.add(size=2**26)
    raised = []

    def send():
        with grpc.insecure_channel(local_target.grpc) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            try:
                stub.Predict(request, timeout=120)
            except grpc.RpcError as exc:
                raised.append(exc)

    growth = peak_rss_mb_during(local_target.server.process.pid, send)
    assert growth < fuzz_bench.RSS_LIMIT_MB, f"peak RSS grew {growth:.0f} MB"
    assert raised and raised[0].code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor parsing error: image_bytes" in raised[0].details()


def test_an_unknown_dtype_number_is_invalid_argument(local_target: Target):
    """DataType 400 does not exist: as_dtype's TypeError escaped as INTERNAL."""
    request = fuzz_bench.good_predict_request(local_target.model, image())
    request.inputs["image_bytes"].dtype = 400
    with grpc.insecure_channel(local_target.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, timeout=60)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert "Expects arg[0] to be string but invalid is provided" in raised.value.details()


def test_undecodable_request_bytes_answer_internal_as_tf_serving(local_target: Target):
    """gRPC C++ (TF Serving) answers INTERNAL when the request does not parse; grpcio's
    Python server said UNKNOWN ("Unexpected <class 'DecodeError'>")."""
    with grpc.insecure_channel(local_target.grpc) as channel:
        raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        with pytest.raises(grpc.RpcError) as raised:
            raw(b"\x0a\xff\xff\xff\xff", timeout=30)
    assert raised.value.code() is grpc.StatusCode.INTERNAL, raised.value.details()
    assert raised.value.details().startswith("Failed to parse request")
    assert _good_predict(local_target).outputs["probabilities"].dtype
