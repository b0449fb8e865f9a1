"""The generic Coalescer (keysvc/backends/batching.py) with plain batch functions."""

from __future__ import annotations

import asyncio

import pytest

from keysvc.backends.batching import Coalescer, CoalescerClosed


class Recorder:
    """A batch function that records its calls: doubles numbers, fails negative ones."""

    def __init__(self, delay: float = 0.0, fail_all: BaseException | None = None) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.delay = delay
        self.fail_all = fail_all

    async def __call__(self, group: str, items: list[int]) -> list[int | BaseException]:
        self.calls.append((group, items))
        await asyncio.sleep(self.delay)
        if self.fail_all is not None:
            raise self.fail_all
        return [ValueError(f"negative {i}") if i < 0 else 2 * i for i in items]


async def test_items_within_the_window_go_in_one_call() -> None:
    run = Recorder()
    coalescer = Coalescer(run, window=0.02, max_batch=100)
    results = await asyncio.gather(*(coalescer.submit("a", i) for i in range(10)))
    assert results == [2 * i for i in range(10)]
    assert run.calls == [("a", list(range(10)))]
    assert coalescer.batches_sent == 1


async def test_groups_are_batched_separately_and_max_batch_cuts() -> None:
    run = Recorder()
    coalescer = Coalescer(run, window=0.02, max_batch=3)
    jobs = [coalescer.submit(g, i) for g in ("a", "b") for i in range(4)]
    assert await asyncio.gather(*jobs) == [0, 2, 4, 6] * 2
    assert sorted(run.calls) == [("a", [0, 1, 2]), ("a", [3]), ("b", [0, 1, 2]), ("b", [3])]


async def test_per_item_errors_reach_only_their_caller() -> None:
    coalescer = Coalescer(Recorder(), window=0.01, max_batch=10)
    results = await asyncio.gather(
        coalescer.submit("a", 1), coalescer.submit("a", -1), coalescer.submit("a", 3),
        return_exceptions=True,
    )
    assert results[0] == 2 and results[2] == 6
    assert isinstance(results[1], ValueError) and str(results[1]) == "negative -1"


async def test_a_failed_batch_fails_each_of_its_callers() -> None:
    coalescer = Coalescer(Recorder(fail_all=ConnectionError("down")), window=0.01, max_batch=10)
    results = await asyncio.gather(*(coalescer.submit("a", i) for i in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_wrong_result_count_is_an_error_not_a_mixup() -> None:
    async def short(group: str, items: list[int]) -> list[int]:
        return items[:-1]

    coalescer = Coalescer(short, window=0.01, max_batch=10)
    results = await asyncio.gather(*(coalescer.submit("a", i) for i in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "2 results for 3 items" in str(r) for r in results)


async def test_max_batch_one_means_one_call_per_item() -> None:
    run = Recorder()
    coalescer = Coalescer(run, window=3600, max_batch=1)
    # A full batch goes at once: with an hour-long window, waiting for it would hang here.
    async with asyncio.timeout(10):
        assert await asyncio.gather(*(coalescer.submit("a", i) for i in range(4))) == [0, 2, 4, 6]
    assert len(run.calls) == 4


async def test_close_fails_waiting_callers_and_refuses_new_ones() -> None:
    coalescer = Coalescer(Recorder(), window=10, max_batch=100)
    waiting = asyncio.create_task(coalescer.submit("a", 1))
    await asyncio.sleep(0)
    await coalescer.close()
    with pytest.raises(CoalescerClosed):
        await waiting
    with pytest.raises(CoalescerClosed):
        await coalescer.submit("a", 2)


async def test_close_waits_for_batches_in_flight() -> None:
    coalescer = Coalescer(Recorder(delay=0.05), window=0, max_batch=100)
    job = asyncio.create_task(coalescer.submit("a", 5))
    await asyncio.sleep(0.01)
    await coalescer.close()
    assert job.done() and job.result() == 10


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Coalescer(Recorder(), window=-1, max_batch=1)
    with pytest.raises(ValueError):
        Coalescer(Recorder(), window=0, max_batch=0)
