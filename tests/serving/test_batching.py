"""Request batching: merging, splitting, padding and error isolation with a stand-in servable;
TF Serving's batching flags (--enable_batching, --batching_parameters_file,
--rest_api_timeout_in_ms) through a live server on a fixture model."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc, regression_pb2

from serving import errors
from serving.batching import QUEUE_FULL, Batcher, BatchingOptions, batch_size
from serving.savedmodel import Signature, TensorSpec
from tests.serving.helpers import BATCH_TIMEOUT_S, BATCHING_PARAMETERS, HALF_PLUS_TWO

pytest_plugins = ["tests.serving.helpers"]
X1 = np.ones((1, 2), np.float32)

SIGNATURE = Signature(
    "serving_default",
    "tensorflow/serving/predict",
    {"x": TensorSpec("DT_FLOAT", (-1, 2))},
    {"y": TensorSpec("DT_FLOAT", (-1,))},
)


class Doubler:
    """y = 2 * x.sum(axis=1); slow enough that requests queue behind a running call."""

    def __init__(self):
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def run(self, signature_name, inputs):
        x = inputs["x"]
        with self._lock:
            self.calls.append(len(x))
        time.sleep(0.05)
        if np.isnan(x).any():
            raise errors.invalid_argument("NaN input")
        return {"y": 2 * x.sum(axis=1)}


def run_requests(servable, requests, slots=1, max_batch_size=64, first_alone=False):
    async def main():
        with ThreadPoolExecutor(slots) as executor:
            batcher = Batcher(BatchingOptions(max_batch_size=max_batch_size), executor, slots)
            calls = []
            for i, x in enumerate(requests):
                call = batcher.submit(servable, "serving_default", {"x": x}, len(x))
                calls.append(asyncio.ensure_future(call))
                if first_alone and i == 0:
                    await asyncio.sleep(0.01)  # the first call is running when the rest arrive
            return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(main())


def test_requests_that_queue_together_run_as_one_call() -> None:
    servable = Doubler()
    requests = [np.full((i + 1, 2), i, dtype=np.float32) for i in range(6)]
    results = run_requests(servable, requests, first_alone=True)
    assert servable.calls == [1, 20]  # the first runs alone; the rest queued behind it
    for i, result in enumerate(results):
        assert result["y"].tolist() == [4.0 * i] * (i + 1)


def test_requests_that_arrive_together_are_one_call() -> None:
    servable = Doubler()
    run_requests(servable, [np.ones((2, 2), np.float32)] * 4)
    assert servable.calls == [8]


def test_batches_respect_the_maximum_size() -> None:
    servable = Doubler()
    requests = [np.ones((3, 2), dtype=np.float32) for _ in range(7)]
    run_requests(servable, requests, max_batch_size=6)
    assert max(servable.calls) <= 6 and sum(servable.calls) == 21


def test_a_bad_request_fails_alone() -> None:
    servable = Doubler()
    bad = np.array([[np.nan, 1.0]], dtype=np.float32)
    requests = [np.ones((1, 2), np.float32), np.ones((1, 2), np.float32), bad]
    results = run_requests(servable, requests)
    assert results[0]["y"].tolist() == [4.0]
    assert results[1]["y"].tolist() == [4.0]
    assert isinstance(results[2], errors.ServingError)


def test_only_requests_with_a_free_batch_dimension_are_batched() -> None:
    assert batch_size(SIGNATURE, {"x": np.zeros((3, 2))}) == 3
    assert batch_size(SIGNATURE, {"x": np.zeros(())}) is None
    fixed = Signature("s", "m", {"x": TensorSpec("DT_FLOAT", (4, 2))}, {})
    assert batch_size(fixed, {"x": np.zeros((4, 2))}) is None


# ---- TF Serving's batching flags, through a live server ----


def batch_metrics(server) -> tuple[float, float]:
    """(model calls, instances in them) from the server's serving_batch_size histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/monitoring/prometheus/metrics", timeout=30).text
    values = {}
    for family in text_string_to_metric_families(text):
        if family.name == "serving_batch_size":
            for sample in family.samples:
                values[sample.name] = sample.value
    return values.get("serving_batch_size_count", 0.0), values.get("serving_batch_size_sum", 0.0)


def regress_all_at_once(server, xs: list[float]) -> list[float]:
    """One gRPC client per value, each sending a one-example Regress at the same moment."""
    barrier = threading.Barrier(len(xs))

    def send(x: float) -> float:
        request = regression_pb2.RegressionRequest()
        request.model_spec.name = HALF_PLUS_TWO
        request.model_spec.signature_name = "regress_x_to_y"
        example = request.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(x)
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            grpc.channel_ready_future(channel).result(timeout=30)
            barrier.wait()
            response = stub.Regress(request, timeout=60)
        return response.result.regressions[0].value

    with ThreadPoolExecutor(len(xs)) as pool:
        return list(pool.map(send, xs))


def test_requests_from_several_clients_are_merged_into_one_batch(batching_server) -> None:
    calls, instances = batch_metrics(batching_server)
    xs = [float(i) for i in range(8)]
    assert regress_all_at_once(batching_server, xs) == [0.5 * x + 2 for x in xs]
    after_calls, after_instances = batch_metrics(batching_server)
    # Eight clients, one model call of max_batch_size 8.
    assert (after_calls - calls, after_instances - instances) == (1, 8)


def test_batches_are_padded_to_the_allowed_batch_sizes(batching_server) -> None:
    calls, instances = batch_metrics(batching_server)
    xs = [10.0, 20.0, 30.0]
    assert regress_all_at_once(batching_server, xs) == [7.0, 12.0, 17.0]
    after_calls, after_instances = batch_metrics(batching_server)
    # Three requests merged after batch_timeout_micros, padded to allowed_batch_sizes' 4.
    assert (after_calls - calls, after_instances - instances) == (1, 4)


def test_rest_api_timeout_in_ms(batching_server) -> None:
    """A REST call that waits in the batch queue (batch_timeout_micros) longer than
    --rest_api_timeout_in_ms answers DEADLINE_EXCEEDED (HTTP 504), the server lives on."""
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    url = f"{batching_server.url}/v1/models/{HALF_PLUS_TWO}:regress"
    answer = httpx.post(url, json=body, timeout=60)
    assert answer.status_code == 504
    assert "--rest_api_timeout_in_ms" in answer.json()["error"]
    assert batching_server.states(HALF_PLUS_TWO) == {1: "AVAILABLE"}


def test_batching_flags_are_checked_as_tf_serving_checks_them(tmp_path, capsys) -> None:
    from serving import server

    parameters = tmp_path / "batching.txt"
    parameters.write_text(BATCHING_PARAMETERS)
    base = ["--model-base-path", str(tmp_path)]
    assert server.parse_args(base).batching is None  # off by default, as TF Serving
    on = server.parse_args([*base, "--enable_batching=true"]).batching
    assert on is not None and on.max_batch_size == 64  # ours without a file (--max-batch-size)
    from_file = server.parse_args(
        [*base, "--enable_batching", f"--batching_parameters_file={parameters}"]
    ).batching
    assert from_file.max_batch_size == 8
    assert from_file.batch_timeout_seconds == BATCH_TIMEOUT_S
    assert from_file.allowed_batch_sizes == (4, 8)
    assert from_file.num_batch_threads == 1
    assert from_file.max_enqueued_batches == 10  # TF's default for an unset field
    for argv, message in [
        (
            [*base, f"--batching_parameters_file={parameters}"],
            "batching_parameters_file is set without setting server_options.enable_batching",
        ),
        ([*base, "--enable_batching=maybe"], "expected true or false"),
    ]:
        with pytest.raises(SystemExit):
            server.parse_args(argv)
        assert message in capsys.readouterr().err
    for text, message in [
        ("max_batch_size { value: 8 } allowed_batch_sizes: 4", "must match max_batch_size"),
        ("allowed_batch_sizes: 8 allowed_batch_sizes: 4", "monotonically increasing"),
        ("max_batch_size: 8", "Invalid BatchingParameters"),
    ]:
        parameters.write_text(text)
        with pytest.raises(SystemExit):
            server.parse_args(
                [*base, "--enable_batching", f"--batching_parameters_file={parameters}"]
            )
        assert message in capsys.readouterr().err


def test_the_vendored_batching_parameters_proto_is_compiled(tmp_path) -> None:
    """serving/protos/batching_parameters_pb2.py is what grpcio-tools makes of the .proto."""
    import subprocess
    import sys

    from tests.serving.helpers import ROOT

    proto = "serving/protos/batching_parameters.proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={tmp_path}", proto],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    generated = (tmp_path / proto.replace(".proto", "_pb2.py")).read_text()
    with open(f"{ROOT}/{proto.replace('.proto', '_pb2.py')}") as f:
        assert f.read() == generated


def test_a_full_queue_is_unavailable() -> None:
    servable = Doubler()

    async def main():
        with ThreadPoolExecutor(1) as executor:
            options = BatchingOptions(max_batch_size=2, max_enqueued_batches=1)
            batcher = Batcher(options, executor, 1)
            first = asyncio.ensure_future(batcher.submit(servable, "s", {"x": X1}, 1))
            await asyncio.sleep(0.01)  # running: the queue is empty again
            queued = [asyncio.ensure_future(batcher.submit(servable, "s", {"x": X1}, 1))]
            queued.append(asyncio.ensure_future(batcher.submit(servable, "s", {"x": X1}, 1)))
            refused = batcher.submit(servable, "s", {"x": X1}, 1)
            return await asyncio.gather(first, *queued, refused, return_exceptions=True)

    results = asyncio.run(main())
    assert [r["y"].tolist() for r in results[:3]] == [[4.0]] * 3
    assert isinstance(results[3], errors.ServingError)
    assert results[3].code == errors.Code.UNAVAILABLE and results[3].message == QUEUE_FULL


def test_allowed_batch_sizes_pad_with_the_first_instance() -> None:
    servable = Doubler()

    async def main():
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(
                BatchingOptions(max_batch_size=4, allowed_batch_sizes=(4,)), executor, 1
            )
            x = np.array([[1.0, 2.0]], np.float32)
            return await batcher.submit(servable, "s", {"x": x}, 1)

    assert asyncio.run(main())["y"].tolist() == [6.0]
    assert servable.calls == [4]
