"""What a misbehaving backend (a plugin, a library with a bug) may do to the ring and the
service: never a 500, never a frozen ring, never a secret in the log, always a clean stop."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import utils
from prometheus_client import REGISTRY

from keysvc import jose
from keysvc.backends.base import BackendError, KeyVersion
from keysvc.backends.memory import MemoryBackend, MemorySettings
from keysvc.config import parse_config
from keysvc.keyring import KeyRing, Lifecycle
from keysvc.service import Service
from tests.service import RUN

LIFE = Lifecycle(
    publish_lead=timedelta(hours=24), jwks_max_age=timedelta(minutes=15), max_ttl=timedelta(hours=2)
)
_REAL = object()
SECRET = "X-Amz-Signature=0123456789abcdef"


class PluginBackend(MemoryBackend):
    """A third-party backend gone wrong: the memory backend (the reference for plugins), with
    whatever list error or signature bytes the test sets."""

    def __init__(self, name: str = "plugin", encoding: str = "raw") -> None:
        super().__init__(name, MemorySettings(initial_versions=0))
        self.signature_encoding = encoding  # type: ignore[misc]
        self.list_error: Exception | None = None
        self.signature: Any = _REAL
        self.closed = False

    def add(self, created_at: datetime, key_type: str = "ec-p256") -> KeyVersion:
        return self.store.add(key_type, created_at)  # type: ignore[arg-type]

    async def list_versions(self) -> list[KeyVersion]:
        if self.list_error is not None:
            raise self.list_error
        return await super().list_versions()

    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        if self.signature is not _REAL:
            return self.signature
        signature = await super().sign(version, alg, message)
        if self.signature_encoding == "der" and alg.is_ecdsa:
            return jose.raw_to_der(signature)
        return signature

    async def close(self) -> None:
        self.closed = True
        await super().close()


def errors_counted(backend: str, operation: str) -> float:
    labels = {"backend": backend, "operation": operation}
    return REGISTRY.get_sample_value("keysvc_backend_errors_total", labels) or 0.0


def service_config(tmp_path: Path, **extra: Any) -> Any:
    token_hash = hashlib.sha256(b"client-token").hexdigest()
    return parse_config({
        "issuer": "http://127.0.0.1:8080",
        "clients": [{"name": "c", "token_sha256": token_hash, "scopes": ["tokens:issue"]}],
        "backends": [{"name": "plugin", "type": "file", "path": str(tmp_path)}],
        **extra,
    })


@pytest.mark.parametrize(
    ("created_at", "problem"),
    [
        (datetime(2026, 1, 1), "created_at has no time zone"),
        (datetime.max.replace(tzinfo=UTC) - timedelta(days=1), "is out of range"),
    ],
    ids=["naive", "year-9999"],
)
async def test_unusable_created_at_fails_that_backend_only(created_at: datetime, problem: str) -> None:
    good, bad = PluginBackend("good"), PluginBackend("bad")
    good.add(datetime.now(UTC) - timedelta(days=3))
    bad.add(datetime.now(UTC) - timedelta(hours=1))  # pending: both published
    ring = KeyRing([good, bad], LIFE)
    assert await ring.refresh() == {}
    before = ring.view()
    assert before.signer is not None and len(before.keys) == 2
    counted = errors_counted("bad", "list")

    broken = bad.add(created_at)
    errors = await ring.refresh()

    assert set(errors) == {"bad"} and isinstance(errors["bad"], BackendError)
    assert problem in ring.last_errors["bad"]
    assert f"key version {broken.version_id}:" in ring.last_errors["bad"]
    assert errors_counted("bad", "list") == counted + 1
    # Both backends keep their keys (the bad one its last good versions), and the ring reads.
    after = ring.view()
    assert [k.kid for k in after.published] == [k.kid for k in before.published]
    assert after.signer == before.signer
    # Once the backend lists sane versions again, its error is gone.
    await bad.destroy_version(broken)
    assert await ring.refresh() == {} and "bad" not in ring.last_errors


async def test_refresh_loop_keeps_going_after_an_unexpected_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug anywhere in a refresh is logged (type and place, not its text) and the loop runs on:
    a new key is still picked up afterwards."""
    backend = PluginBackend()
    backend.add(datetime.now(UTC) - timedelta(days=2))
    failures = 3

    def clock() -> datetime:
        nonlocal failures
        if failures:
            failures -= 1
            raise RuntimeError(f"clock broke: {SECRET}")
        return datetime.now(UTC)

    ring = KeyRing([backend], LIFE, clock=clock)
    with pytest.raises(RuntimeError):
        await ring.refresh()
    loop = asyncio.create_task(ring.run(0.01))
    try:
        with caplog.at_level(logging.ERROR, logger="keysvc.keyring"):
            for _ in range(1000):
                if failures == 0 and not loop.done():
                    break
                await asyncio.sleep(0.01)
            new = backend.add(datetime.now(UTC) - timedelta(days=1))
            for _ in range(1000):
                if any(k.version is new for k in ring.all_keys()) or loop.done():
                    break
                await asyncio.sleep(0.01)
        assert not loop.done(), loop
        assert any(k.version is new for k in ring.all_keys())
        failed = [r.getMessage() for r in caplog.records if "refresh failed" in r.getMessage()]
        assert failed and all("unexpected RuntimeError at " in m for m in failed)
        assert SECRET not in caplog.text
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_start_logs_the_masked_error_not_the_library_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = PluginBackend()
    backend.list_error = RuntimeError(f"GET https://bucket.example/key?{SECRET} failed")
    service = Service(service_config(tmp_path), backends=[backend])
    with caplog.at_level(logging.WARNING):
        await service.start(refresh_loop=False)
    await service.stop()
    assert "backend plugin not available at start: unexpected RuntimeError" in caplog.text
    assert SECRET not in caplog.text and "bucket.example" not in caplog.text


async def test_stop_closes_the_backends_whatever_became_of_the_refresh_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = PluginBackend()
    backend.add(datetime.now(UTC) - timedelta(days=2))
    service = Service(service_config(tmp_path), backends=[backend])
    await service.start()
    service._refresher.cancel()  # type: ignore[union-attr]

    async def died() -> None:
        raise RuntimeError(SECRET)

    service._refresher = asyncio.create_task(died())  # a loop that ended with an error
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR):
        await service.stop()  # does not raise
    assert backend.closed
    assert "refresh loop had stopped: unexpected RuntimeError" in caplog.text
    assert SECRET not in caplog.text
    await service.stop()  # twice is harmless


def _der(r: int, s: int) -> bytes:
    return utils.encode_dss_signature(r, s)


@pytest.mark.parametrize(
    ("key_type", "encoding", "signature"),
    [
        ("ec-p256", "der", b""),
        ("ec-p256", "der", _der(3, 5)[:-1]),  # truncated
        ("ec-p256", "der", b"\x00" * 64),  # raw where DER was promised
        ("ec-p256", "der", _der(2**300, 5)),  # r wider than the curve
        ("ec-p256", "der", b"\x30\x06\x02\x01\xfd\x02\x01\x05"),  # r negative
        ("ec-p384", "der", None),
        ("ec-p256", "raw", b"\x01" * 63),
        ("ec-p256", "raw", _der(3, 5)),  # DER where raw was promised
        ("ec-p256", "raw", "not bytes"),
        ("rsa-2048", "raw", b""),
        ("ed25519", "raw", None),
    ],
    ids=["der-empty", "der-truncated", "der-is-raw", "der-r-too-wide", "der-r-negative",
         "der-none", "raw-short", "raw-is-der", "raw-str", "rsa-empty", "ed25519-none"],
)
async def test_malformed_signature_is_a_backend_error(
    key_type: str, encoding: str, signature: Any, caplog: pytest.LogCaptureFixture
) -> None:
    backend = PluginBackend(encoding=encoding)
    backend.add(datetime.now(UTC) - timedelta(days=2), key_type)
    ring = KeyRing([backend], LIFE)
    await ring.refresh(raise_errors=True)
    key = ring.view().signer
    assert key is not None
    # the backend's real signature goes through (DER converted)
    jose.verify_local(key.version.public_key, key.alg, b"h.p", await ring.sign(key, b"h.p"))

    backend.signature = signature
    counted = errors_counted("plugin", "sign")
    with pytest.raises(BackendError) as info:
        await ring.sign(key, b"h.p")
    assert str(info.value) == "backend 'plugin' returned a malformed signature"
    assert errors_counted("plugin", "sign") == counted + 1
    assert f"backend plugin returned a malformed {key.alg.value} signature" in caplog.text


async def test_malformed_signature_answers_503_not_500(tmp_path: Path) -> None:
    from keysvc.app import create_app

    backend = PluginBackend(encoding="der")
    backend.add(datetime.now(UTC) - timedelta(days=2))
    backend.signature = b"\x30\x06\x02\x01\x03"  # DER cut short
    service = Service(service_config(tmp_path), backends=[backend])
    await service.start(refresh_loop=False)
    try:
        async with TestClient(TestServer(create_app(service), host="127.0.0.1")) as client:
            response = await client.post(
                "/v1/tokens", json=RUN, headers={"Authorization": "Bearer client-token"}
            )
            body = await response.json()
        assert response.status == 503, body
        assert body["error"]["code"] == "backend_error"
    finally:
        await service.stop()


class FailingOpenBackend(PluginBackend):
    """A plugin whose open() raises (with a secret in its text) until `broken` is cleared, and
    that counts the listings it was asked for while not open."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True
        self.opened = False
        self.listed_unopened = 0

    async def open(self) -> None:
        if self.broken:
            raise RuntimeError(f"GET https://kms.example/?{SECRET} failed")
        self.opened = True

    async def list_versions(self) -> list[KeyVersion]:
        self.listed_unopened += not self.opened
        return await super().list_versions()


async def test_a_backend_that_fails_to_open_leaves_the_service_unready_until_a_refresh_opens_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The service's only backend failed to open: it has no key, so it starts unready (it does
    not list a backend that never opened), and each refresh opens it again until that works."""
    from keysvc.app import create_app

    backend = FailingOpenBackend()
    backend.add(datetime.now(UTC) - timedelta(days=3))
    service = Service(service_config(tmp_path), backends=[backend])
    await service.start(refresh_loop=False)
    auth = {"Authorization": "Bearer client-token"}
    try:
        async with TestClient(TestServer(create_app(service), host="127.0.0.1")) as client:
            assert (await client.get("/readyz")).status == 503
            assert await (await client.get("/.well-known/jwks")).json() == {"keys": []}
            response = await client.post("/v1/tokens", json=RUN, headers=auth)
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "backend_unavailable"

            errors = await service.ring.refresh()  # still failing: still unready
            assert str(errors["plugin"]).startswith(
                "backend 'plugin' failed to open: unexpected RuntimeError at test_ring_faults.py:"
            )
            assert not service.ring.ready and backend.listed_unopened == 0

            backend.broken = False
            assert await service.ring.refresh() == {}
            assert backend.opened and backend.listed_unopened == 0
            assert (await client.get("/readyz")).status == 200
            response = await client.post("/v1/tokens", json=RUN, headers=auth)
            assert response.status == 200, await response.text()
        assert "failed to open: unexpected RuntimeError" in caplog.text
        assert SECRET not in caplog.text and SECRET not in str(service.ring.last_errors)
    finally:
        await service.stop()


async def test_a_backend_that_fails_to_open_is_a_one_line_error_for_the_cli(tmp_path: Path) -> None:
    from keysvc.service import local_ring

    with pytest.raises(BackendError, match="failed to open: unexpected RuntimeError") as err:
        async with local_ring(service_config(tmp_path), backends=[FailingOpenBackend()]):
            pass
    assert SECRET not in str(err.value)
