"""The one retry policy: what it retries, how long it waits, and that it never runs past the
caller's deadline (the key ring's sign_timeout), which backends also read for their calls."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from keysvc import jose
from keysvc.backends.base import BackendError, KeyVersion
from keysvc.backends.memory import MemoryBackend, MemorySettings
from keysvc.backends.retry import RetryPolicy, Transient, deadline, time_left
from keysvc.keyring import KeyRing, Lifecycle


class Flaky:
    """Fails with `failures` errors, in turn, then answers."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "signed"


def transient(wait: float = 0.0) -> Transient:
    return Transient("throttled", retry_after=max(wait, 1.0), wait=wait)


async def test_transient_failures_are_retried_until_success() -> None:
    flaky = Flaky(transient(), transient())
    assert await RetryPolicy(budget=2).run(flaky) == "signed"
    assert flaky.calls == 3


async def test_other_failures_are_not_retried() -> None:
    flaky = Flaky(BackendError("denied"))
    with pytest.raises(BackendError, match="denied"):
        await RetryPolicy(budget=2).run(flaky)
    assert flaky.calls == 1


async def test_the_servers_wait_counts_against_the_budget() -> None:
    flaky = Flaky(*(transient(wait=0.05) for _ in range(10)))
    with pytest.raises(Transient):
        await RetryPolicy(budget=0.12, initial=0.001, maximum=0.001).run(flaky)
    assert flaky.calls == 3  # two waits of 0.05 s fit in 0.12 s, a third does not


async def test_a_wait_longer_than_the_budget_is_not_waited() -> None:
    flaky = Flaky(transient(wait=30))
    with pytest.raises(Transient) as failure:
        await RetryPolicy(budget=2).run(flaky)
    assert flaky.calls == 1 and failure.value.retry_after == 30


@pytest.mark.parametrize(("max_attempts", "calls"), [(1, 1), (2, 2), (None, 6)])
async def test_max_attempts(max_attempts: int | None, calls: int) -> None:
    flaky = Flaky(*(transient() for _ in range(5)))
    policy = RetryPolicy(budget=30, max_attempts=max_attempts, initial=0.001, maximum=0.001)
    if max_attempts is None:
        assert await policy.run(flaky) == "signed"
    else:
        with pytest.raises(Transient):
            await policy.run(flaky)
    assert flaky.calls == calls


async def test_no_budget_no_retry() -> None:
    flaky = Flaky(transient())
    with pytest.raises(Transient):
        await RetryPolicy.of(timedelta(0)).run(flaky)
    assert flaky.calls == 1


async def test_no_retry_starts_that_the_deadline_would_cut() -> None:
    policy = RetryPolicy(budget=30)
    without = Flaky(transient(wait=0.3))
    assert await policy.run(without) == "signed" and without.calls == 2
    within = Flaky(transient(wait=0.3))
    async with deadline(0.2):
        with pytest.raises(Transient):  # the backend's own failure, not the caller's timeout
            await policy.run(within)
    assert within.calls == 1


async def test_time_left_is_the_limit_or_less_within_a_deadline() -> None:
    assert time_left(3.0) == 3.0
    async with deadline(10):
        assert time_left(3.0) == 3.0
        async with deadline(30):  # nested: the earlier deadline wins
            assert 9 < time_left(60) < 10
    async with deadline(1):
        assert time_left(3.0) < 1


async def test_a_deadline_times_out_what_runs_inside() -> None:
    with pytest.raises(TimeoutError):
        async with deadline(0.05):
            await asyncio.sleep(5)
    assert time_left(3.0) == 3.0  # and is gone afterwards


class Watching(MemoryBackend):
    """Records how long the backend is told it has for each signature."""

    def __init__(self) -> None:
        super().__init__("watching", MemorySettings(initial_versions=0))
        self.store.add("ec-p256", datetime.now(UTC) - timedelta(days=1))
        self.time_left: list[float] = []

    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        self.time_left.append(time_left(60))
        return await super().sign(version, alg, message)


async def test_the_rings_sign_timeout_is_the_backends_deadline() -> None:
    backend = Watching()
    life = Lifecycle(timedelta(hours=1), timedelta(minutes=5), timedelta(minutes=10))
    ring = KeyRing([backend], life, sign_timeout=2.5)
    await ring.refresh(raise_errors=True)
    key = ring.view().signer
    assert key is not None
    await ring.sign(key, b"a.b")
    (seen,) = backend.time_left
    assert 2 < seen < 2.5
