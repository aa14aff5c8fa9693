"""Runs signature calls off the event loop, batching concurrent requests when enabled.

A model call spends its time in TensorFlow kernels, which release the GIL, so worker threads
run calls in parallel while the event loop keeps reading and answering other requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from serving import batching

if TYPE_CHECKING:
    from serving.savedmodel import Servable


class Runner:
    def __init__(
        self,
        num_threads: int,
        batching_options: batching.BatchingOptions | None = None,
        observe_batch: Callable[[int], None] = lambda size: None,
    ):
        if batching_options is not None and batching_options.num_batch_threads:
            num_threads = max(num_threads, batching_options.num_batch_threads)
        self._executor = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="model")
        self._num_threads = num_threads
        self._batching_options = batching_options
        self._batcher: batching.Batcher | None = None
        self._observe_batch = observe_batch

    async def run(
        self, servable: Servable, signature_name: str, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        signature = servable.signature(signature_name)
        size = batching.batch_size(signature, inputs)
        if self._batching_options is not None and size is not None:
            if self._batcher is None:  # created here, inside the running event loop
                self._batcher = batching.Batcher(
                    self._batching_options, self._executor, self._num_threads, self._observe_batch
                )
            return await self._batcher.submit(servable, signature.name, inputs, size)
        self._observe_batch(size or 1)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, servable.run, signature.name, inputs)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
