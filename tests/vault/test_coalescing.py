"""Request coalescing against a real OpenBao: HTTP calls are counted from Vault's audit log."""

from __future__ import annotations

import asyncio

import pytest

from keysvc import jose
from keysvc.backends.base import BackendError
from tests.vault.bao import BaoServer
from tests.vault.conftest import unique

ES256 = jose.Algorithm.ES256


def messages(n: int) -> list[bytes]:
    return [f"header.payload-{i}".encode() for i in range(n)]


async def test_concurrent_signs_share_one_vault_call(bao: BaoServer, make_backend) -> None:
    name = unique("batch")
    bao.create_key(name, "ecdsa-p256")
    backend = await make_backend(name, batch_window="50ms", max_batch=100)
    (version,) = await backend.list_versions()
    bao.mark()
    signatures = await asyncio.gather(*(backend.sign(version, ES256, m) for m in messages(60)))
    for message, signature in zip(messages(60), signatures, strict=True):
        jose.verify_local(version.public_key, ES256, message, signature)
    assert len(set(signatures)) == 60  # each caller got its own signature
    calls = bao.requests_since_mark(f"transit/sign/{name}")
    assert 1 <= calls <= 2, calls  # 60 tokens, one window: one call (two if the window split them)


async def test_max_batch_splits_batches(bao: BaoServer, make_backend) -> None:
    name = unique("maxbatch")
    bao.create_key(name, "ed25519")
    backend = await make_backend(name, batch_window="200ms", max_batch=10)
    (version,) = await backend.list_versions()
    bao.mark()
    signatures = await asyncio.gather(
        *(backend.sign(version, jose.Algorithm.EdDSA, m) for m in messages(35))
    )
    for message, signature in zip(messages(35), signatures, strict=True):
        jose.verify_local(version.public_key, jose.Algorithm.EdDSA, message, signature)
    assert bao.requests_since_mark(f"transit/sign/{name}") == 4  # 10 + 10 + 10 + 5


async def test_without_coalescing_each_token_is_one_call(bao: BaoServer, make_backend) -> None:
    name = unique("nobatch")
    bao.create_key(name, "ecdsa-p256")
    backend = await make_backend(name, max_batch=1)
    (version,) = await backend.list_versions()
    bao.mark()
    await asyncio.gather(*(backend.sign(version, ES256, m) for m in messages(12)))
    assert bao.requests_since_mark(f"transit/sign/{name}") == 12


async def test_different_algorithms_and_versions_are_batched_apart(bao: BaoServer, make_backend) -> None:
    name = unique("groups")
    bao.create_key(name, "rsa-2048")
    backend = await make_backend(name, batch_window="100ms")
    await backend.create_version()
    v1, v2 = await backend.list_versions()
    bao.mark()
    jobs = [(v, alg, m) for v in (v1, v2) for alg in (jose.Algorithm.RS256, jose.Algorithm.PS256)
            for m in messages(5)]
    signatures = await asyncio.gather(*(backend.sign(v, alg, m) for v, alg, m in jobs))
    for (version, alg, message), signature in zip(jobs, signatures, strict=True):
        jose.verify_local(version.public_key, alg, message, signature)
    assert bao.requests_since_mark(f"transit/sign/{name}") == 4  # one per (version, algorithm)


async def test_a_per_item_error_fails_only_its_caller(bao: BaoServer, make_backend) -> None:
    """Vault reports a bad item inside a successful batch answer: that caller gets the error,
    the others their signatures, all from one call."""
    name = unique("peritem")
    bao.create_key(name, "rsa-2048")
    backend = await make_backend(name, batch_window="50ms")
    (version,) = await backend.list_versions()
    good = [jose.Algorithm.RS256.digest(m) for m in messages(8)]
    bad = b"not a sha-256 digest"
    bao.mark()
    results = await asyncio.gather(
        *(backend.sign_input(1, jose.Algorithm.RS256, d) for d in good[:4]),
        backend.sign_input(1, jose.Algorithm.RS256, bad),
        *(backend.sign_input(1, jose.Algorithm.RS256, d) for d in good[4:]),
        return_exceptions=True,
    )
    assert bao.requests_since_mark(f"transit/sign/{name}") == 1
    failed = results.pop(4)
    assert isinstance(failed, BackendError) and "refused to sign" in str(failed)
    assert "input must be hashed" in str(failed)
    for message, signature in zip(messages(8), results, strict=True):
        assert isinstance(signature, bytes), signature
        jose.verify_local(version.public_key, jose.Algorithm.RS256, message, signature)


async def test_a_cancelled_caller_does_not_disturb_its_batch(bao: BaoServer, make_backend, key_name: str) -> None:
    backend = await make_backend(key_name, batch_window="100ms")
    (version,) = await backend.list_versions()
    tasks = [asyncio.create_task(backend.sign(version, ES256, m)) for m in messages(6)]
    await asyncio.sleep(0.01)
    tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    for index, (message, signature) in enumerate(zip(messages(6), results, strict=True)):
        if index != 2:
            jose.verify_local(version.public_key, ES256, message, signature)


@pytest.mark.parametrize("window", ["0s", "2ms"])
async def test_a_lone_request_is_not_held_back(bao: BaoServer, make_backend, key_name: str, window: str) -> None:
    backend = await make_backend(key_name, batch_window=window)
    (version,) = await backend.list_versions()
    loop = asyncio.get_running_loop()
    started = loop.time()
    signature = await backend.sign(version, ES256, b"x.y")
    jose.verify_local(version.public_key, ES256, b"x.y", signature)
    # Sent within its (at most 2 ms) window: a batch left waiting for company that never came
    # would not return at all. A generous bound, for a loaded machine.
    assert loop.time() - started < 10
