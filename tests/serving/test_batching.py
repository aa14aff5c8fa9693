"""Request batching with a stand-in servable: merging, splitting, and error isolation."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from serving import errors
from serving.batching import Batcher, BatchingOptions, batch_size
from serving.savedmodel import Signature, TensorSpec

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
