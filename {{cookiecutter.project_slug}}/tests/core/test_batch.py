from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from {{ cookiecutter.package_name }}.core.batch import Batcher


class Doubler:
    """A batch function that records its batches and can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        fail, self.fail = self.fail, None  # the one batch running fails
        if fail is not None:
            raise fail
        return [2 * item for item in items]


async def test_a_lone_call_runs_at_once_and_calls_meanwhile_share_the_next_batch() -> None:
    run = Doubler()
    batcher = Batcher(run, name="test")
    assert await batcher(1) == 2
    assert run.batches == [[1]]

    run.gate.clear()
    first = asyncio.create_task(batcher(10))
    await asyncio.sleep(0)  # the first batch starts and waits
    rest = [asyncio.create_task(batcher(i)) for i in range(20, 25)]
    await asyncio.sleep(0)
    run.gate.set()
    assert await first == 20
    assert await asyncio.gather(*rest) == [40, 42, 44, 46, 48]  # each its own result, in order
    assert run.batches[1:] == [[10], [20, 21, 22, 23, 24]]


async def test_batches_are_bounded_by_max_size() -> None:
    run = Doubler()
    batcher = Batcher(run, name="test", max_size=3)
    run.gate.clear()
    calls = [asyncio.create_task(batcher(i)) for i in range(7)]
    await asyncio.sleep(0)
    run.gate.set()
    assert await asyncio.gather(*calls) == [0, 2, 4, 6, 8, 10, 12]
    assert run.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_failed_batch_reaches_each_of_its_callers_and_the_next_batch_runs() -> None:
    run = Doubler()
    batcher = Batcher(run, name="test")
    run.gate.clear()
    failing = [asyncio.create_task(batcher(i)) for i in range(3)]
    await asyncio.sleep(0)
    run.fail = RuntimeError("database went away")
    later = asyncio.create_task(batcher(7))
    await asyncio.sleep(0)
    run.gate.set()
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert [str(r) for r in results] == ["database went away"] * 3
    assert await later == 14  # it arrived during the failed batch: the next one served it
    assert run.batches == [[0, 1, 2], [7]]


async def test_a_caller_that_stops_waiting_does_not_take_its_item_back() -> None:
    run = Doubler()
    batcher = Batcher(run, name="test")
    run.gate.clear()
    busy = asyncio.create_task(batcher(1))
    await asyncio.sleep(0)
    gone = asyncio.create_task(batcher(2))  # waits for the next batch
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    run.gate.set()
    assert await busy == 2
    await batcher.aclose()
    assert run.batches == [[1], [2]]  # a write handed over still happens


@pytest.mark.parametrize("started", [False, True], ids=["before-it-ran", "mid-batch"])
async def test_stopping_the_batcher_leaves_no_caller_waiting(started: bool) -> None:
    run = Doubler()
    batcher = Batcher(run, name="test")
    run.gate.clear()
    calls = [asyncio.create_task(batcher(i)) for i in range(3)]
    await asyncio.sleep(0)
    if started:
        await asyncio.sleep(0)  # it takes the calls and waits in the batch
        calls.append(asyncio.create_task(batcher(9)))  # for the next batch
        await asyncio.sleep(0)
        assert run.batches == [[0, 1, 2]]
    task = batcher._task
    assert task is not None
    task.cancel()
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert batcher._task is None
