"""Dynamic batching: requests that arrive together go through the model as one batch.

Each request puts its prepared input on an asyncio queue and awaits a future. One worker task
takes the first waiting input, waits a short collecting window for others (up to `max_batch`),
and runs the whole batch in a single thread of its own, so the event loop keeps accepting and
decoding uploads while the model computes, and the model is only ever called from one thread.
While a batch runs, the next requests queue up and form the next batch: under concurrency the
batches grow by themselves and the per-call overhead of the model is shared, which is where the
throughput comes from on a CPU. The batch sizes are counted (:class:`BatchStats`) and each result
says how large its batch was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

# How long the first request of a batch waits for others, and the most items in one model call.
DEFAULT_WINDOW_MS = 5.0
DEFAULT_MAX_BATCH = 32

Item = TypeVar("Item")
Output = TypeVar("Output")


@dataclass
class BatchStats:
    """How many items went through the model, in how many batches."""

    items: int = 0
    batches: int = 0
    largest: int = 0

    def record(self, size: int) -> None:
        self.items += size
        self.batches += 1
        self.largest = max(self.largest, size)

    @property
    def mean(self) -> float:
        return self.items / self.batches if self.batches else 0.0


@dataclass
class _Job(Generic[Item, Output]):
    item: Item
    future: asyncio.Future[tuple[Output, int]]


@dataclass
class Batcher(Generic[Item, Output]):
    """Runs `run(items) -> outputs` (one output per item, in order) on batches of concurrent requests.

    `window` is the collecting window in seconds, counted from the first item of a batch;
    `max_batch` the most items in one call.
    """

    run: Callable[[Sequence[Item]], Sequence[Output]]
    window: float
    max_batch: int
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dcnn-model")
        self._queue: asyncio.Queue[_Job[Item, Output]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> tuple[Output, int]:
        """The output for `item`, and the size of the batch it went through the model in."""
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._work(self._queue))
        job: _Job[Item, Output] = _Job(item, asyncio.get_running_loop().create_future())
        await self._queue.put(job)
        return await job.future

    async def close(self) -> None:
        """Stop the worker (after the batch in progress) and its thread."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _work(self, queue: asyncio.Queue[_Job[Item, Output]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await queue.get()]
            if self.window > 0 and queue.qsize() < self.max_batch - 1:
                await asyncio.sleep(self.window)
            while len(jobs) < self.max_batch and not queue.empty():
                jobs.append(queue.get_nowait())
            jobs = [job for job in jobs if not job.future.done()]  # the client went away
            if not jobs:
                continue
            try:
                outputs = await loop.run_in_executor(self._executor, self.run, [job.item for job in jobs])
            except Exception as error:  # reported to each request of the batch; the worker goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            self.stats.record(len(jobs))
            for job, output in zip(jobs, outputs, strict=True):
                if not job.future.done():
                    job.future.set_result((output, len(jobs)))
