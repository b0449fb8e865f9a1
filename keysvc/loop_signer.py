"""In-process signatures made on the event loop's own thread, scheduled once per loop iteration.

A key loaded into this process (`KeyBackend.signs_at_once`) signs with no I/O to wait for, so a
thread hand-off buys nothing but its own cost. The ring hands such signatures to one tick that
runs once per event-loop iteration while there is work, in one of two lanes:

- **Batched**: microsecond signatures (P-256, P-384, Ed25519). Every one requested during an
  iteration is made at the next tick, back to back. An in-process P-256 signature takes ~30 µs
  of CPU in a tight loop but 80–90 µs in a busy server: between two tokens the interpreter's own
  work evicts OpenSSL's precomputed tables from the caches; made back to back, all but the first
  find them warm (+24–35 % tokens per second in an A/B at two workers, docs/performance.md).
  Each waits at most for the rest of the iteration it was requested in.

- **Queued**: millisecond signatures (RSA, with `tokens.rsa_signing = "loop"`). At most one per
  tick, first come first served, and after each one the loop runs `YIELDED_ITERATIONS` more
  iterations before the next, so whatever became ready during a signature (a JWKS GET,
  `/healthz`, a new connection, the reply to the token just signed) runs in between. A request
  beside RSA issuance therefore waits for at most the signature in progress, never behind the
  queue: the naive form, each handler signing inline, made it wait behind every handler that
  was ready at once (seconds, under load). A worker signs on one core this way (its loop's
  thread), so it takes a worker process per core to keep every core signing
  (docs/performance.md, "Where RSA signs").

  The queue is bounded by `deadline` (`tokens.sign_timeout`). A signature that would wait past
  it (the signatures ahead × the measured time of one) is refused at once with `Overloaded`
  (503 + Retry-After: how long the signatures ahead will take). One whose deadline passes while
  queued anyway is refused when it reaches the head, unsigned: the estimate leaves out the
  loop's other work between two signatures, the machine may slow down, and nothing is measured
  before the first signature. (An estimate that counted the loop's other work would count the
  refusals too: clients that retry at once would make it refuse ever more and sign ever less.)
  So a caller waits at most the deadline and one signature, no signature is made for a caller
  that will not wait for it, and none for one that has gone (cancelled).

The signer knows nothing of HTTP: the key ring chooses the lane (keysvc/keyring.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from keysvc.backends.base import KeyBackend, KeyVersion
from keysvc.errors import Overloaded
from keysvc.jose import Algorithm

YIELDED_ITERATIONS = 3
"""Loop iterations with no queued signature after each one: enough for aiohttp (Python 3.11) to
answer a request whose bytes arrived during the signature before the next one starts. On uvloop
the read runs in the signature's own iteration, and the connection's task and then the handler's
task take one iteration each; asyncio's loop runs the read one iteration later, hence three
(tests/test_loop_signer.py checks both loops). Each costs one pass of the loop (an epoll_wait
with no timeout) when nothing else is ready."""

SMOOTHING = 0.125
"""Weight of the newest measurement in the time per queued signature (an exponential average,
so that one signature slowed by a neighbour's burst does not refuse a queue's worth)."""

_Batched = tuple[KeyBackend, KeyVersion, Algorithm, bytes, "asyncio.Future[bytes]"]


@dataclass(slots=True)
class _Queued:
    backend: KeyBackend
    version: KeyVersion
    alg: Algorithm
    message: bytes
    future: asyncio.Future[bytes]
    deadline: float


class LoopSigner:
    """The per-iteration tick and its two lanes (see the module docstring)."""

    def __init__(self, deadline: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.deadline = deadline
        """Seconds a queued signature may wait and take (`tokens.sign_timeout`)."""
        self._clock = clock
        self._batch: list[_Batched] = []
        self._queue: deque[_Queued] = deque()
        self._scheduled = False
        self._rest = 0
        """Iterations left before the next queued signature may start."""
        self.per_signature = 0.0
        """Measured seconds per queued signature (0 until the first one is made)."""

    def __len__(self) -> int:
        """Queued signatures not yet made."""
        return len(self._queue)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._tick)

    def batch(
        self, backend: KeyBackend, version: KeyVersion, alg: Algorithm, message: bytes
    ) -> asyncio.Future[bytes]:
        """The signature, made with the other batched ones of this loop iteration once it ends."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._batch.append((backend, version, alg, message, future))
        self._schedule()
        return future

    def queue(
        self, backend: KeyBackend, version: KeyVersion, alg: Algorithm, message: bytes
    ) -> asyncio.Future[bytes]:
        """The signature, made in its turn, one per loop iteration. Raises Overloaded when the
        signatures ahead would make it wait past the deadline; the future fails with Overloaded
        when it waited past it anyway. (Its own signature is not counted: with nothing ahead a
        signature is always tried, so one slow measurement cannot refuse everything after it.)"""
        ahead = len(self._queue)
        if ahead * self.per_signature > self.deadline:
            raise self._overloaded(ahead)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._queue.append(
            _Queued(backend, version, alg, message, future, self._clock() + self.deadline)
        )
        self._schedule()
        return future

    def _overloaded(self, ahead: int) -> Overloaded:
        wait = ahead * self.per_signature
        return Overloaded(
            f"{ahead} signatures are queued ahead (about {wait:.1f}s), longer than the"
            f" sign timeout ({self.deadline:g}s)",
            retry_after=max(1, math.ceil(wait)),
        )

    def _expired(self) -> Overloaded:
        wait = len(self._queue) * self.per_signature
        return Overloaded(
            f"the signature waited longer than the sign timeout ({self.deadline:g}s) in the queue",
            retry_after=max(1, math.ceil(wait)),
        )

    def _tick(self) -> None:
        batch, self._batch = self._batch, []
        for backend, version, alg, message, future in batch:
            if future.done():  # the caller gave up (cancelled): nothing to sign
                continue
            try:
                future.set_result(backend.sign_now(version, alg, message))
            except Exception as exc:  # the caller's KeyRing.sign maps it, per signature
                future.set_exception(exc)
        if self._rest:
            self._rest -= 1
        elif self._queue:
            self._sign_next()
        if self._queue or self._rest:
            asyncio.get_running_loop().call_soon(self._tick)
        else:
            self._scheduled = False

    def _sign_next(self) -> None:
        """Make the oldest queued signature whose caller still waits and has not waited past
        its deadline; refuse, unsigned, every one before it that has."""
        while self._queue:
            item = self._queue.popleft()
            if item.future.done():
                continue
            started = self._clock()
            if started > item.deadline:
                item.future.set_exception(self._expired())
                continue
            try:
                item.future.set_result(item.backend.sign_now(item.version, item.alg, item.message))
            except Exception as exc:
                item.future.set_exception(exc)
            took = self._clock() - started
            estimate = self.per_signature
            self.per_signature = took if not estimate else estimate + SMOOTHING * (took - estimate)
            self._rest = YIELDED_ITERATIONS
            return
