"""Faults at the vault: throttling is retried within its budget and then surfaced, every other
fault (down, 5xx, slow) becomes BackendUnavailable within the configured bound, and the backend
recovers by itself once the vault does."""

from __future__ import annotations

import time

import pytest

from keysvc.backends.azure_kv import AzureKeyVaultBackend
from keysvc.backends.base import BackendUnavailable, KeyVersion
from keysvc.jose import Algorithm, verify_local
from tests.azure.conftest import KEY, BackendFactory
from tests.fakes.azure_kv import FakeKeyVault, Fault

MESSAGE = b"header.payload"
PROMPT = 10.0
"""Seconds within which a call that must not wait (for a long Retry-After, a retry, a down or
slow vault) returns: generous for a loaded machine, far below the 30 s such a wait would take
here. Lower bounds (a Retry-After honoured) are exact: waiting never ends early."""


async def ready(
    vault: FakeKeyVault, make_backend: BackendFactory, **settings: str
) -> tuple[AzureKeyVaultBackend, KeyVersion]:
    vault.create_key(KEY, "EC", crv="P-256")
    backend = make_backend(**settings)
    (version,) = await backend.list_versions()
    await backend.sign(version, Algorithm.ES256, MESSAGE)  # connection and token in place
    vault.calls.clear()
    return backend, version


async def test_throttled_sign_is_retried_after_retry_after(
    vault: FakeKeyVault, make_backend: BackendFactory
) -> None:
    backend, version = await ready(vault, make_backend)
    vault.inject(
        Fault("status", status=429, retry_after=1, remaining=1, operations=frozenset({"sign"}))
    )
    started = time.monotonic()
    signature = await backend.sign(version, Algorithm.ES256, MESSAGE)
    elapsed = time.monotonic() - started
    verify_local(version.public_key, Algorithm.ES256, MESSAGE, signature)
    assert vault.calls["sign"] == 2  # retried once...
    assert 0.9 <= elapsed < PROMPT, "...after the Retry-After second"


async def test_throttling_beyond_the_budget_surfaces_as_unavailable(
    vault: FakeKeyVault, make_backend: BackendFactory
) -> None:
    backend, version = await ready(vault, make_backend, timeout="4s", throttle_budget="2s")
    vault.inject(Fault("status", status=429, retry_after=1))
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="throttling") as info:
        await backend.sign(version, Algorithm.ES256, MESSAGE)
    elapsed = time.monotonic() - started
    assert vault.calls["sign"] == 3  # first try, then two 1 s waits fill the 2 s budget
    assert 1.9 <= elapsed < PROMPT
    assert info.value.retry_after == 1


async def test_a_long_retry_after_is_not_waited_for(
    vault: FakeKeyVault, make_backend: BackendFactory
) -> None:
    backend, version = await ready(vault, make_backend)
    vault.inject(Fault("status", status=429, retry_after=30))
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        await backend.sign(version, Algorithm.ES256, MESSAGE)
    assert time.monotonic() - started < PROMPT  # not the 30 s Retry-After
    assert vault.calls["sign"] == 1, "azure-core's own retry policy must not retry (or wait)"
    assert info.value.retry_after == 30
    with pytest.raises(BackendUnavailable, match="throttling"):
        await backend.list_versions()


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_unavailable_without_retries(
    vault: FakeKeyVault, make_backend: BackendFactory, status: int
) -> None:
    backend, version = await ready(vault, make_backend)
    vault.inject(Fault("status", status=status, retry_after=7 if status == 503 else None))
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=f"HTTP {status}") as info:
        await backend.sign(version, Algorithm.ES256, MESSAGE)
    assert time.monotonic() - started < PROMPT
    assert vault.calls["sign"] == 1
    assert info.value.retry_after == (7 if status == 503 else 1)
    with pytest.raises(BackendUnavailable):
        await backend.list_versions()
    vault.inject(None)
    await backend.sign(version, Algorithm.ES256, MESSAGE)


async def test_a_slow_vault_is_cut_off_at_the_timeout(
    vault: FakeKeyVault, make_backend: BackendFactory
) -> None:
    backend, version = await ready(vault, make_backend, timeout="1s", throttle_budget="500ms")
    vault.inject(Fault("slow", delay=5))
    for call in (
        lambda: backend.sign(version, Algorithm.ES256, MESSAGE),
        backend.list_versions,
        backend.create_version,
    ):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="did not answer within 1s"):
            await call()
        # Cut off at the 1 s timeout, not at the vault's 5 s answer (nor at once).
        assert 0.9 <= time.monotonic() - started < 4.5
    vault.inject(None)
    await backend.sign(version, Algorithm.ES256, MESSAGE)


async def test_an_unreachable_vault_is_unavailable_then_recovers(
    vault: FakeKeyVault, make_backend: BackendFactory, caplog: pytest.LogCaptureFixture
) -> None:
    backend, version = await ready(vault, make_backend)
    await vault.down()
    for call in (
        lambda: backend.sign(version, Algorithm.ES256, MESSAGE),
        backend.list_versions,
        lambda: backend.sign(version, Algorithm.ES256, MESSAGE),
    ):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="cannot reach Azure Key Vault") as info:
            await call()
        assert time.monotonic() - started < PROMPT
        assert "Bearer" not in str(info.value)
    warnings = [
        r
        for r in caplog.records
        if r.name == "keysvc.backends.azure_kv" and r.levelname == "WARNING"
    ]
    assert len(warnings) == 1, "one warning per kind of failure, not one per request"
    await vault.up()
    signature = await backend.sign(version, Algorithm.ES256, MESSAGE)
    verify_local(version.public_key, Algorithm.ES256, MESSAGE, signature)
    assert [v.version_id for v in await backend.list_versions()] == [version.version_id]


async def test_a_throttled_rotation_waits_and_creates_one_version(
    vault: FakeKeyVault, make_backend: BackendFactory
) -> None:
    backend, _ = await ready(vault, make_backend)
    vault.inject(
        Fault("status", status=429, retry_after=1, remaining=1, operations=frozenset({"rotate"}))
    )
    created = await backend.create_version()
    assert vault.calls["rotate"] == 2
    assert [v.version for v in vault.versions(KEY)][-1] == created.version_id
    assert len(vault.versions(KEY)) == 2
