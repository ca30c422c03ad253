"""Dynamic batching: concurrent items share model calls, in order, within the window and the size cap."""

from __future__ import annotations

import asyncio

from dcnn.serve.batching import Batcher


def recording_run(calls: list[list[int]]):
    def run(items):
        calls.append(list(items))
        if any(item < 0 for item in items):
            raise ValueError("negative item")
        return [item * 10 for item in items]
    return run


def test_concurrent_items_share_calls_up_to_max_batch():
    calls: list[list[int]] = []

    async def scenario():
        batcher = Batcher(recording_run(calls), window=0.05, max_batch=4)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.close()
        return results, batcher.stats

    results, stats = asyncio.run(scenario())
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert results == [(i * 10, len(next(c for c in calls if i in c))) for i in range(10)]
    assert (stats.items, stats.batches, stats.largest, stats.mean) == (10, 3, 4, 10 / 3)


def test_the_window_collects_late_arrivals_and_zero_waits_for_none():
    async def staggered(window: float) -> list[list[int]]:
        calls: list[list[int]] = []
        batcher = Batcher(recording_run(calls), window=window, max_batch=8)

        async def late(item: int, delay: float):
            await asyncio.sleep(delay)
            return await batcher.submit(item)

        await asyncio.gather(late(1, 0.0), late(2, 0.02))
        await batcher.close()
        return calls

    assert asyncio.run(staggered(0.2)) == [[1, 2]]
    assert asyncio.run(staggered(0.0)) == [[1], [2]]


def test_an_error_reaches_every_request_of_its_batch_and_the_worker_goes_on():
    calls: list[list[int]] = []

    async def scenario():
        batcher = Batcher(recording_run(calls), window=0.05, max_batch=8)
        failed = await asyncio.gather(batcher.submit(1), batcher.submit(-1), return_exceptions=True)
        after = await batcher.submit(3)
        await batcher.close()
        return failed, after

    failed, after = asyncio.run(scenario())
    assert [type(f) for f in failed] == [ValueError, ValueError]
    assert after == (30, 1) and calls == [[1, -1], [3]]

