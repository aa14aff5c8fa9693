"""Merging requests that arrive together into one model call (TF Serving's --enable_batching).

Requests for the same servable and signature whose inputs differ only in dimension 0 wait in
one queue. Whenever an execution slot is free the queue is taken as one batch (at most
`max_batch_size` instances; if `batch_timeout_seconds` > 0, waiting that long for it to fill),
run as one call, and the outputs are split back along dimension 0. Under load the queue fills
while the slots are busy, so batches grow with the load and a lone request waits for nothing.

If a merged call fails, its requests are re-run one by one, so a bad image fails only the
request that sent it (TF Serving's batching would fail the whole batch).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from serving.savedmodel import Servable, Signature


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 64
    batch_timeout_seconds: float = 0.0


@dataclass
class _Task:
    inputs: Mapping[str, np.ndarray]
    size: int
    future: asyncio.Future


def batch_size(signature: Signature, inputs: Mapping[str, np.ndarray]) -> int | None:
    """The shared dimension 0 of the inputs if the request can join a batch, else None."""
    sizes = set()
    for key, spec in signature.inputs.items():
        array = inputs.get(key)
        if spec.shape is None or not spec.shape or spec.shape[0] != -1:
            return None  # the signature has no free batch dimension
        if array is None or array.ndim == 0:
            return None
        sizes.add(array.shape[0])
    return sizes.pop() if len(sizes) == 1 else None


class Batcher:
    """Per-(servable, signature, example shape) queues feeding `slots` concurrent model calls."""

    def __init__(
        self,
        options: BatchingOptions,
        executor: Executor,
        slots: int,
        observe_batch: Callable[[int], None] = lambda size: None,
    ):
        self._options = options
        self._executor = executor
        self._slots = asyncio.Semaphore(slots)
        self._observe_batch = observe_batch
        self._queues: dict[tuple, collections.deque[_Task]] = {}
        self._arrivals: dict[tuple, asyncio.Event] = {}
        self._consumers: dict[tuple, asyncio.Task] = {}
        self._running: set[asyncio.Task] = set()

    async def submit(
        self, servable: Servable, signature_name: str, inputs: Mapping[str, np.ndarray], size: int
    ) -> dict[str, np.ndarray]:
        shapes = tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in inputs.items()))
        key = (id(servable), signature_name, shapes)
        task = _Task(inputs, size, asyncio.get_running_loop().create_future())
        self._queues.setdefault(key, collections.deque()).append(task)
        self._arrivals.setdefault(key, asyncio.Event()).set()
        consumer = self._consumers.get(key)
        if consumer is None or consumer.done():
            self._consumers[key] = asyncio.create_task(self._consume(key, servable, signature_name))
        return await task.future

    def _queued(self, key: tuple) -> int:
        return sum(task.size for task in self._queues[key])

    async def _consume(self, key: tuple, servable: Servable, signature_name: str) -> None:
        queue, arrivals = self._queues[key], self._arrivals[key]
        loop = asyncio.get_running_loop()
        while queue:
            # Waiting for a slot is what lets a batch form under load.
            await self._slots.acquire()
            try:
                deadline = loop.time() + self._options.batch_timeout_seconds
                while self._queued(key) < self._options.max_batch_size:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    arrivals.clear()
                    try:
                        await asyncio.wait_for(arrivals.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
                batch = [queue.popleft()]
                total = batch[0].size
                while queue and total + queue[0].size <= self._options.max_batch_size:
                    total += queue[0].size
                    batch.append(queue.popleft())
            except BaseException:
                self._slots.release()
                raise
            running = asyncio.create_task(self._execute(servable, signature_name, batch))
            self._running.add(running)
            running.add_done_callback(self._running.discard)
        # Nothing queued: forget the key (a later submit starts a new consumer). No await since
        # the `while` check, so no task was queued in between.
        del self._queues[key], self._arrivals[key], self._consumers[key]

    async def _execute(self, servable: Servable, signature_name: str, batch: list[_Task]) -> None:
        try:
            live = [task for task in batch if not task.future.done()]  # skip cancelled requests
            if not live:
                return
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor,
                self._run_batch,
                servable,
                signature_name,
                [task.inputs for task in live],
                [task.size for task in live],
            )
            for task, result in zip(live, results, strict=True):
                if task.future.done():
                    continue
                if isinstance(result, BaseException):
                    task.future.set_exception(result)
                else:
                    task.future.set_result(result)
        except BaseException as exc:
            for task in batch:
                if not task.future.done():
                    task.future.set_exception(exc)
            raise
        finally:
            self._slots.release()

    def _run_batch(
        self,
        servable: Servable,
        signature_name: str,
        inputs: Sequence[Mapping[str, np.ndarray]],
        sizes: Sequence[int],
    ) -> list[dict | BaseException]:
        """In a worker thread: one merged call, split back; one call each if that fails."""
        total = sum(sizes)
        if len(inputs) > 1:
            merged = {key: np.concatenate([item[key] for item in inputs]) for key in inputs[0]}
            try:
                self._observe_batch(total)
                outputs = servable.run(signature_name, merged)
                if all(v.ndim >= 1 and v.shape[0] == total for v in outputs.values()):
                    bounds = np.cumsum(sizes)[:-1]
                    parts = {key: np.split(value, bounds) for key, value in outputs.items()}
                    return [{key: parts[key][i] for key in parts} for i in range(len(inputs))]
            except Exception:  # noqa: S110 - attributed below, request by request
                pass
        results: list[dict | BaseException] = []
        for item, size in zip(inputs, sizes, strict=True):
            try:
                self._observe_batch(size)
                results.append(servable.run(signature_name, item))
            except Exception as exc:
                results.append(exc)
        return results
