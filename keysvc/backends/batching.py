"""Request coalescing: many concurrent small calls become one batched remote call.

A remote signer that accepts batches (Vault Transit's `batch_input`, a KMS batch API) pays one
round trip per call. When hundreds of tokens are requested at once, sending them one call each
is bound by round-trip time × connections; gathering the requests that arrive within a short
window into one call is bound by the signer's own speed instead.

`Coalescer` is generic: it knows nothing of Vault or signatures. Callers `submit(group, item)`;
items that share a `group` (for a signer: key version and algorithm, which a batch call shares)
and arrive within `window` seconds, up to `max_batch` of them, are handed to `run_batch` in one
call. `run_batch` returns one result per item, in order, where an item's result may be an
exception: that exception is raised to that caller only. If `run_batch` itself raises, every
caller of that batch gets the exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

G = TypeVar("G", bound=Hashable)
I = TypeVar("I")  # an item
R = TypeVar("R")


class CoalescerClosed(RuntimeError):
    """Raised to callers still waiting when the coalescer is closed."""


@dataclass
class _Batch(Generic[I, R]):
    items: list[I] = field(default_factory=list)
    waiters: list[asyncio.Future[R]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class Coalescer(Generic[G, I, R]):
    """Gathers concurrent submissions sharing a group into batches (see the module docstring).

    `window` is how long the first item of a batch waits for company; a batch that reaches
    `max_batch` items goes at once. `max_batch=1` turns coalescing off (one call per item), which
    is what a benchmark compares against.
    """

    def __init__(
        self,
        run_batch: Callable[[G, list[I]], Awaitable[Sequence[R | BaseException]]],
        *,
        window: float,
        max_batch: int,
    ) -> None:
        if window < 0:
            raise ValueError("window must not be negative")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run_batch = run_batch
        self.window = window
        self.max_batch = max_batch
        self._open: dict[G, _Batch[I, R]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False
        self.batches_sent = 0
        """How many batch calls were made (for metrics and benchmarks)."""

    async def submit(self, group: G, item: I) -> R:
        """Queue `item` and wait for its own result (or its own error)."""
        if self._closed:
            raise CoalescerClosed("coalescer is closed")
        loop = asyncio.get_running_loop()
        batch = self._open.get(group)
        if batch is None:
            batch = self._open[group] = _Batch()
            if self.max_batch > 1:
                batch.timer = loop.call_later(self.window, self._dispatch, group, batch)
        waiter: asyncio.Future[R] = loop.create_future()
        batch.items.append(item)
        batch.waiters.append(waiter)
        if len(batch.items) >= self.max_batch:
            self._dispatch(group, batch)
        return await waiter

    def _dispatch(self, group: G, batch: _Batch[I, R]) -> None:
        """Close `batch` to new items and start its call."""
        if self._open.get(group) is batch:
            del self._open[group]
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if not batch.items:
            return
        task = asyncio.get_running_loop().create_task(self._run(group, batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, group: G, batch: _Batch[I, R]) -> None:
        self.batches_sent += 1
        try:
            results = await self._run_batch(group, list(batch.items))
            if len(results) != len(batch.waiters):
                raise RuntimeError(
                    f"batch call returned {len(results)} results for {len(batch.waiters)} items"
                )
        except BaseException as exc:  # every caller of this batch gets the batch's failure
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for waiter, result in zip(batch.waiters, results, strict=True):
            if waiter.done():  # the caller gave up (cancelled or timed out)
                continue
            if isinstance(result, BaseException):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)

    async def close(self) -> None:
        """Fail callers whose batch has not been sent and wait for batches in flight."""
        self._closed = True
        for group, batch in list(self._open.items()):
            del self._open[group]
            if batch.timer is not None:
                batch.timer.cancel()
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(CoalescerClosed("coalescer is closed"))
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
