"""One retry policy for every backend, bounded by the caller's deadline.

A remote signer fails in passing (a throttled second, a 5xx from a node being replaced, a
connection dropped by a load balancer) and asking again shortly often succeeds. Each backend
used to do that its own way (api_core's Retry, a hand loop, botocore's, none), none of them
knowing how long the token request still had. Here it is written once:

- a backend's failure table marks what is worth retrying (`Failure(..., retry=True)`), and the
  error it builds is then a `Transient` (a BackendUnavailable, so callers see no difference),
  carrying how long the server asked to wait, if it did;
- `RetryPolicy.run(attempt)` calls again after a `Transient`, waiting the server's delay or an
  exponential backoff with full jitter, as long as the waits fit in the backend's
  `retry_budget`, the tries in `max_attempts`, and the next try in the caller's deadline;
- the key ring runs every backend call inside `deadline(seconds)` (tokens.sign_timeout when
  signing): an asyncio timeout that the policy and the backends' per-call timeouts can read
  (`time_left`), so a backend gives up with its own reason before the ring's timeout fires with
  a generic one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import TypeVar

from keysvc.errors import BackendUnavailable

log = logging.getLogger("keysvc.backends.retry")
T = TypeVar("T")

MARGIN = 0.05
"""Seconds kept free before a deadline, so that the backend's own timeout fires first."""
_DEADLINE: ContextVar[float | None] = ContextVar("keysvc_backend_deadline", default=None)


class Transient(BackendUnavailable):
    """A BackendUnavailable that trying again within the same request may cure (throttling, a
    5xx, a dropped connection). `wait` is how long the server asked to wait first (0: no ask)."""

    def __init__(self, message: str, retry_after: float = 1.0, wait: float = 0.0) -> None:
        super().__init__(message, retry_after)
        self.wait = wait


class deadline:  # noqa: N801 - used as `async with deadline(5):`, like asyncio.timeout
    """Bound what runs inside by `seconds` (asyncio.timeout_at: TimeoutError when it passes),
    and let RetryPolicy and `time_left` see that bound. Nested, the earlier deadline wins."""

    __slots__ = ("_seconds", "_timeout", "_token")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def __aenter__(self) -> None:
        when = asyncio.get_running_loop().time() + self._seconds
        outer = _DEADLINE.get()
        if outer is not None and outer < when:
            when = outer
        self._token: Token[float | None] = _DEADLINE.set(when)
        self._timeout = asyncio.timeout_at(when)
        await self._timeout.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        _DEADLINE.reset(self._token)
        return await self._timeout.__aexit__(exc_type, exc, traceback)


def time_left(limit: float) -> float:
    """`limit` seconds, or less when the caller's deadline comes sooner (minus MARGIN): what a
    backend gives one call to its server, so its own timeout fires before the caller's."""
    when = _DEADLINE.get()
    if when is None:
        return limit
    return max(0.001, min(limit, when - asyncio.get_running_loop().time() - MARGIN))


@dataclass(frozen=True)
class RetryPolicy:
    """Retry `Transient` failures: `budget` seconds of waiting in all, `max_attempts` tries at
    most (None: as the budget allows), never past the caller's deadline."""

    budget: float
    max_attempts: int | None = None
    initial: float = 0.1
    maximum: float = 1.0
    multiplier: float = 2.0

    @classmethod
    def of(cls, budget: timedelta, max_attempts: int | None = None) -> RetryPolicy:
        return cls(budget.total_seconds(), max_attempts)

    async def run(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Await `attempt()` until it returns, raises anything but a Transient, or retrying
        would exceed the budget, the attempts or the deadline (then the last failure is
        raised)."""
        loop = asyncio.get_running_loop()
        waited = 0.0
        tries = 0
        backoff = self.initial
        while True:
            tries += 1
            try:
                return await attempt()
            except Transient as failure:
                wait = max(failure.wait, random.uniform(0, backoff))
                when = _DEADLINE.get()
                if (
                    self.budget <= 0
                    or waited + wait > self.budget
                    or (self.max_attempts is not None and tries >= self.max_attempts)
                    or (when is not None and loop.time() + wait + MARGIN >= when)
                ):
                    raise
                log.debug("retrying in %.2fs (try %d failed: %s)", wait, tries, failure)
            waited += wait
            backoff = min(backoff * self.multiplier, self.maximum)
            await asyncio.sleep(wait)
