"""The on-loop signer's queued lane (keysvc/loop_signer.py): one signature per loop iteration with
free iterations between, first come first served, and a queue bounded by the deadline both when
a signature is asked for and when it reaches the head. Loop iterations are counted by a
callback that schedules itself once per iteration; time is a fake clock that only signatures
advance, so every bound below is exact rather than a wall-clock guess."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import uvloop
from aiohttp import web

from keysvc import jose, keygen
from keysvc.backends.base import BackendSettings, KeyBackend, KeyVersion
from keysvc.errors import Overloaded
from keysvc.loop_signer import YIELDED_ITERATIONS, LoopSigner

KEY = keygen.generate("ec-p256")
VERSION = KeyVersion("v1", datetime.now(UTC), KEY.public_key())
ALG = jose.Algorithm.RS256  # what the lane is for; the fake backend signs anything


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeKey(KeyBackend):
    """Signs by recording the message, the loop iteration and the fake time, and taking
    `cost` seconds of fake time; a message in `fail` raises instead."""

    Settings = BackendSettings

    def __init__(self, clock: Clock, iteration: Callable[[], int], cost: float = 0.5) -> None:
        super().__init__("fake", BackendSettings())
        self.clock = clock
        self.iteration = iteration
        self.cost = cost
        self.signed: list[tuple[bytes, int, float]] = []
        self.fail: set[bytes] = set()
        self.during: Callable[[], None] | None = None
        """Called inside the next signature (something arriving while it is made)."""

    async def list_versions(self) -> list[KeyVersion]:
        return [VERSION]

    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        raise AssertionError("the queued lane calls sign_now")

    def signs_at_once(self, version: KeyVersion, alg: jose.Algorithm) -> bool:
        return True

    def sign_now(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        self.signed.append((message, self.iteration(), self.clock.now))
        self.clock.now += self.cost
        if self.during is not None:
            during, self.during = self.during, None
            during()
        if message in self.fail:
            raise RuntimeError("device error")
        return b"sig:" + message


class Iterations:
    """Counts event-loop iterations while running (one callback per iteration)."""

    def __init__(self) -> None:
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


@pytest.fixture
async def rig() -> Any:
    clock = Clock()
    iterations = Iterations()
    backend = FakeKey(clock, lambda: iterations.count)
    signer = LoopSigner(deadline=3.0, clock=clock)
    yield signer, backend, clock, iterations
    iterations.stop()


def queue(signer: LoopSigner, backend: FakeKey, message: bytes) -> asyncio.Future[bytes]:
    return signer.queue(backend, VERSION, ALG, message)


async def test_one_signature_per_iteration_in_order_with_free_iterations_between(rig: Any) -> None:
    signer, backend, _, _ = rig
    futures = [queue(signer, backend, f"m{i}".encode()) for i in range(5)]
    assert await asyncio.gather(*futures) == [f"sig:m{i}".encode() for i in range(5)]
    assert [m for m, _, _ in backend.signed] == [f"m{i}".encode() for i in range(5)]
    steps = [b - a for (_, a, _), (_, b, _) in zip(backend.signed, backend.signed[1:])]
    assert steps == [YIELDED_ITERATIONS + 1] * 4


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_request_arriving_during_a_signature_is_answered_before_the_next(loop: str) -> None:
    """A real aiohttp app on the same loop, and a GET whose bytes reach its socket while a
    queued signature is being made: aiohttp reads it, wakes the connection's task, starts the
    handler's task, and the handler answers, all before the next queued signature."""

    async def scenario() -> list[int]:
        clock = Clock()
        iterations = Iterations()
        backend = FakeKey(clock, lambda: iterations.count)
        signer = LoopSigner(deadline=3.0, clock=clock)
        answered: list[int] = []

        async def get(request: web.Request) -> web.Response:
            answered.append(len(backend.signed))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", get)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        running = asyncio.get_running_loop()
        client = socket.socket()
        client.setblocking(False)
        request = b"GET / HTTP/1.1\r\nHost: keysvc\r\n\r\n"
        try:
            await running.sock_connect(client, ("127.0.0.1", port))
            await running.sock_sendall(client, request)  # a first request: the connection is set up
            assert b"ok" in await running.sock_recv(client, 4096)
            answered.clear()
            backend.during = lambda: client.send(request)
            await asyncio.gather(*(queue(signer, backend, f"m{i}".encode()) for i in range(3)))
            assert b"ok" in await running.sock_recv(client, 4096)
        finally:
            client.close()
            iterations.stop()
            await runner.cleanup()
        return answered

    run = uvloop.run if loop == "uvloop" else asyncio.run
    assert run(scenario()) == [1]  # after the first signature, before the second


async def test_batched_signatures_are_not_held_back_by_the_queue(rig: Any) -> None:
    """The two lanes share the tick: a batched (EC) signature asked for while the queued lane
    rests between signatures is made at the next iteration all the same."""
    signer, backend, _, iterations = rig
    first = queue(signer, backend, b"rsa1")
    second = queue(signer, backend, b"rsa2")
    await first
    asked = iterations.count
    assert await signer.batch(backend, VERSION, jose.Algorithm.ES256, b"ec") == b"sig:ec"
    await second
    made = {m: i for m, i, _ in backend.signed}
    assert made[b"ec"] <= asked + 1 < made[b"rsa2"]


async def test_a_failure_fails_alone_and_a_caller_that_left_is_not_signed(rig: Any) -> None:
    signer, backend, _, _ = rig
    backend.fail = {b"m1"}
    futures = [queue(signer, backend, f"m{i}".encode()) for i in range(4)]
    futures[2].cancel()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] == b"sig:m0" and results[3] == b"sig:m3"
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[2], asyncio.CancelledError)
    assert [m for m, _, _ in backend.signed] == [b"m0", b"m1", b"m3"]


async def test_a_signature_that_would_wait_past_the_deadline_is_refused_at_once(rig: Any) -> None:
    """Once a signature's time is known (0.5 s of fake time here), a request with more than
    deadline ÷ 0.5 = 6 signatures ahead is refused when it asks, with Retry-After the time the
    queue ahead takes; nothing is signed for it."""
    signer, backend, _, _ = rig
    await queue(signer, backend, b"first")  # measures a signature: 0.5 s
    assert signer.per_signature == pytest.approx(0.5)
    admitted = [queue(signer, backend, f"m{i}".encode()) for i in range(7)]  # 0..6 ahead
    with pytest.raises(Overloaded) as refused:
        queue(signer, backend, b"late")  # 7 ahead: 3.5 s > 3 s
    assert refused.value.retry_after == 4  # ceil(7 × 0.5 s)
    assert "7 signatures are queued ahead" in str(refused.value)
    assert len(signer) == 7
    assert await asyncio.gather(*admitted) == [f"sig:m{i}".encode() for i in range(7)]
    assert b"late" not in [m for m, _, _ in backend.signed]


async def test_a_signature_whose_deadline_passed_in_the_queue_is_refused_unsigned(rig: Any) -> None:
    """Before the first signature is measured, nothing is refused when asked; the deadline is
    then kept at the head of the queue: with 0.5 s per signature and a 3 s deadline, the
    signatures starting at 0, 0.5 … 3.0 s are made and the rest refused without signing."""
    signer, backend, _, _ = rig
    futures = [queue(signer, backend, f"m{i}".encode()) for i in range(10)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    made = [m for m, _, _ in backend.signed]
    assert made == [f"m{i}".encode() for i in range(7)]
    assert [t for _, _, t in backend.signed] == [i * 0.5 for i in range(7)]
    assert results[:7] == [b"sig:" + m for m in made]
    for refused in results[7:]:
        assert isinstance(refused, Overloaded)
        assert refused.retry_after >= 1


async def test_one_slow_signature_does_not_refuse_everything_after_it(rig: Any) -> None:
    """A signature slower than the whole deadline (a stalled host) is measured, but with
    nothing ahead a request is always tried, so the estimate recovers as signatures speed up."""
    signer, backend, _, _ = rig
    backend.cost = 10.0
    await queue(signer, backend, b"stalled")
    assert signer.per_signature == pytest.approx(10.0)
    backend.cost = 0.5
    for i in range(30):
        await queue(signer, backend, f"m{i}".encode())
    assert signer.per_signature < 1.0
    await asyncio.gather(*(queue(signer, backend, f"n{i}".encode()) for i in range(4)))
