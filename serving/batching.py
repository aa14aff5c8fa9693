"""Merging requests that arrive together into one model call (TF Serving's --enable_batching).

Configured by TF Serving's BatchingParameters (--batching_parameters_file, a text proto of
serving/protos/batching_parameters.proto), with its defaults for unset fields. Requests for the
same servable and signature whose inputs differ only in dimension 0 wait in one queue, from
every client and both APIs. Whenever one of `num_batch_threads` is free the queue is taken as
one batch (at most `max_batch_size` instances; if `batch_timeout_micros` > 0, waiting that long
for it to fill), padded up to the next of `allowed_batch_sizes` by repeating its first
instance (as BatchingSession pads), run as one call, and the outputs are split back along
dimension 0 (padding dropped). Under load the queue fills while the threads are busy, so
batches grow with the load and a lone request waits for nothing. A request that would make
the queue longer than `max_enqueued_batches` batches is refused with UNAVAILABLE, TF's message.

Where this differs from TF Serving (docs/serving.md lists it): a request larger than
`max_batch_size` runs alone instead of failing; if a merged call fails, its requests are
re-run one by one, so a bad image fails only the request that sent it (TF Serving's batching
fails the whole batch); `pad_variable_length_inputs` is accepted but inputs of different
shapes queue separately and are never padded.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from serving import errors

if TYPE_CHECKING:
    from serving.savedmodel import Servable, Signature


# SharedBatchScheduler::QueueOptions' defaults (tensorflow/core/kernels/batching_util/
# shared_batch_scheduler.h), which TF Serving keeps for fields a parameters file leaves unset.
TF_SERVING_MAX_BATCH_SIZE = 1000
TF_SERVING_MAX_ENQUEUED_BATCHES = 10
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 64
    batch_timeout_seconds: float = 0.0
    max_enqueued_batches: int = TF_SERVING_MAX_ENQUEUED_BATCHES
    num_batch_threads: int | None = None  # None: the runner's thread count
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def padded_size(self, size: int) -> int:
        """The smallest allowed batch size that holds `size` (size itself if none is set)."""
        for allowed in self.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


def options_from_parameters(parameters, num_threads: int) -> BatchingOptions:
    """BatchingOptions from a BatchingParameters proto, checked as TF Serving checks it
    (WrapSessionForBatching, BatchingSession::Create, SharedBatchScheduler::Create)."""

    def value(field: str, default):
        return getattr(parameters, field).value if parameters.HasField(field) else default

    max_batch_size = value("max_batch_size", TF_SERVING_MAX_BATCH_SIZE)
    allowed = tuple(parameters.allowed_batch_sizes)
    if allowed:
        if list(allowed) != sorted(set(allowed)):
            raise errors.invalid_argument(
                "allowed_batch_sizes entries must be monotonically increasing"
            )
        if allowed[-1] != max_batch_size:
            raise errors.invalid_argument(
                "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                f"{allowed[-1]}; expected {max_batch_size}"
            )
    threads = value("num_batch_threads", num_threads)
    if threads < 1:
        raise errors.invalid_argument("num_batch_threads must be positive; was " + str(threads))
    if max_batch_size < 1:
        raise errors.invalid_argument(f"max_batch_size must be positive; was {max_batch_size}")
    return BatchingOptions(
        max_batch_size=max_batch_size,
        batch_timeout_seconds=value("batch_timeout_micros", 0) / 1e6,
        max_enqueued_batches=value("max_enqueued_batches", TF_SERVING_MAX_ENQUEUED_BATCHES),
        num_batch_threads=threads,
        allowed_batch_sizes=allowed,
        pad_variable_length_inputs=parameters.pad_variable_length_inputs,
    )


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
        self._slots = asyncio.Semaphore(options.num_batch_threads or slots)
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
        limit = self._options.max_batch_size * self._options.max_enqueued_batches
        if key in self._queues and self._queued(key) + size > limit:
            raise errors.ServingError(errors.Code.UNAVAILABLE, QUEUE_FULL)
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
        padded = self._options.padded_size(total)
        if len(inputs) > 1 or padded > total:
            merged = {}
            for key in inputs[0]:
                parts = [item[key] for item in inputs]
                if padded > total:  # BatchingSession pads with copies of the first instance
                    parts.append(np.repeat(parts[0][:1], padded - total, axis=0))
                merged[key] = np.concatenate(parts)
            try:
                self._observe_batch(padded)
                outputs = servable.run(signature_name, merged)
                if all(v.ndim >= 1 and v.shape[0] == padded for v in outputs.values()):
                    bounds = np.cumsum(sizes)
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
