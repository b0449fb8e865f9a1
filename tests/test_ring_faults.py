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
from keysvc.backends.base import BackendError, BackendUnavailable, KeyVersion
from keysvc.config import parse_config
from keysvc.errors import ConfigError, InsecureKeyError
from keysvc.keyring import PROBLEMS, EmptyListing, KeyRing, Lifecycle
from keysvc.service import Service
from tests.plugin_backend import PluginBackend
from tests.service import RUN

LIFE = Lifecycle(
    publish_lead=timedelta(hours=24), jwks_max_age=timedelta(minutes=15), max_ttl=timedelta(hours=2)
)
SECRET = "X-Amz-Signature=0123456789abcdef"


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
        (datetime.max.replace(tzinfo=UTC) - timedelta(days=1),
         "created_at 9999-12-30T23:59:59.999999Z is out of range"),
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
    assert ring.last_errors["bad"] == f"backend 'bad', key version {broken.version_id}: {problem}"
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
        assert failed and all(
            m.startswith("key ring refresh failed: unexpected RuntimeError at test_ring_faults.py:")
            for m in failed
        ), failed
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
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        f"backend plugin returned a malformed {key.alg.value} signature"
    ]


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
        self.hangs = False
        self.opened = False
        self.opens = 0
        self.listed_unopened = 0

    async def open(self) -> None:
        if self.hangs:
            await asyncio.sleep(60)
        if self.broken:
            raise RuntimeError(f"GET https://kms.example/?{SECRET} failed")
        self.opened = True
        self.opens += 1

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
            assert await service.ring.refresh() == {} and backend.opens == 1  # opened once
            assert (await client.get("/readyz")).status == 200
            response = await client.post("/v1/tokens", json=RUN, headers=auth)
            assert response.status == 200, await response.text()
        assert "failed to open: unexpected RuntimeError" in caplog.text
        assert SECRET not in caplog.text and SECRET not in str(service.ring.last_errors)
    finally:
        await service.stop()


async def test_an_open_that_hangs_on_a_refresh_times_out() -> None:
    backend = FailingOpenBackend()
    ring = KeyRing([backend], LIFE, list_timeout=0.05)
    ring.open_later(backend)
    backend.hangs = True
    async with asyncio.timeout(10):
        errors = await ring.refresh()
    assert isinstance(errors["plugin"], TimeoutError)
    assert ring.last_errors == {"plugin": "timed out after 0.05s"} and not backend.opened


async def test_a_backend_that_fails_to_open_is_a_one_line_error_for_the_cli(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from keysvc.service import local_ring

    caplog.set_level(logging.DEBUG, logger="keysvc.keyring")
    with pytest.raises(BackendError) as err:
        async with local_ring(service_config(tmp_path), backends=[FailingOpenBackend()]):
            pass
    assert str(err.value).startswith(
        "backend 'plugin' failed to open: unexpected RuntimeError at test_ring_faults.py:"
    )
    assert SECRET not in str(err.value)
    # The traceback, for whoever debugs the plugin, only at debug level.
    (debug,) = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug.getMessage() == "backend plugin failed to open"
    assert debug.exc_info is not None and debug.exc_info[0] is RuntimeError


# -- refresh and sign failures, as the ring reports them ----------------------------------------


async def test_a_listing_that_hangs_fails_after_the_list_timeout() -> None:
    backend = PluginBackend()
    backend.add(datetime.now(UTC) - timedelta(days=2))
    backend.list_delay = 60
    ring = KeyRing([backend], LIFE, list_timeout=0.05)
    async with asyncio.timeout(10):
        errors = await ring.refresh()
    assert isinstance(errors["plugin"], TimeoutError)
    assert ring.last_errors == {"plugin": "timed out after 0.05s"}


@pytest.mark.parametrize(
    ("error", "reported"),
    [
        (BackendError("backend 'plugin': denied"), "backend 'plugin': denied"),
        (OSError(13, "Permission denied"), "[Errno 13] Permission denied"),
        (RuntimeError(SECRET), "unexpected RuntimeError"),  # a library's text stays out
    ],
    ids=["backend-error", "os-error", "unexpected"],
)
async def test_a_failed_listing_is_reported_once_per_message(
    error: Exception, reported: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = PluginBackend()
    backend.add(datetime.now(UTC) - timedelta(days=2))
    ring = KeyRing([backend], LIFE)
    await ring.refresh(raise_errors=True)
    counted = errors_counted("plugin", "list")
    backend.list_error = error
    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "keysvc.keyring"]

    with caplog.at_level(logging.WARNING, logger="keysvc.keyring"):
        assert (await ring.refresh())["plugin"] is error
        assert warnings() == [f"refresh of backend plugin failed: {reported}"]
        assert (await ring.refresh())["plugin"] is error  # the same again: not logged again
        backend.list_error = BackendError("quiet")
        await ring.refresh(quiet=True)  # the caller logs: nothing here
    assert warnings() == [f"refresh of backend plugin failed: {reported}"]
    assert ring.last_errors == {"plugin": "quiet"}
    assert errors_counted("plugin", "list") == counted + 3
    with pytest.raises(BackendError, match="^quiet$"):
        await ring.refresh(raise_errors=True)
    backend.list_error = None
    assert await ring.refresh() == {} and ring.last_errors == {}
    assert SECRET not in caplog.text


async def test_an_unsupported_key_version_names_its_backend_and_version() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    backend = PluginBackend()
    small = backend.add(datetime.now(UTC), private_key=rsa.generate_private_key(65537, 1024))
    ring = KeyRing([backend], LIFE)
    errors = await ring.refresh()
    assert str(errors["plugin"]) == (
        f"backend 'plugin', key version {small.version_id}: RSA keys must be 2048-4096 bits,"
        " got 1024"
    )


async def test_refresh_loop_logs_a_refused_refresh_and_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A config problem the ring finds on a refresh (here: `tokens.algorithm` fits no key) is
    logged as refused, and the loop runs on."""
    backend = PluginBackend()
    rsa_version = backend.add(datetime.now(UTC) - timedelta(days=2), "rsa-2048")
    ring = KeyRing([backend], LIFE, jose.Algorithm.PS256)
    await ring.refresh(raise_errors=True)
    await backend.destroy_version(rsa_version)  # an EC key replaces it: PS256 fits no key now
    backend.add(datetime.now(UTC) - timedelta(days=2), "ec-p256")
    loop = asyncio.create_task(ring.run(0.01))
    try:
        with caplog.at_level(logging.ERROR, logger="keysvc.keyring"):
            for _ in range(1000):
                if len(caplog.records) >= 2:
                    break
                await asyncio.sleep(0.01)
        assert not loop.done()
        assert [r.getMessage() for r in caplog.records[:2]] == [
            "key ring refresh refused: tokens.algorithm: PS256 fits none of the configured keys"
            " (EC secp256r1)"
        ] * 2
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


class AlgorithmAwareBackend(PluginBackend):
    """Signs at once (sign_now) only with the algorithm it was asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[jose.Algorithm] = []

    def signs_at_once(self, version: KeyVersion, alg: jose.Algorithm) -> bool:
        self.asked.append(alg)
        return alg is jose.Algorithm.EdDSA

    def sign_now(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        return jose.sign_local(self.private_key(version), alg, message)


async def test_the_backend_is_asked_whether_it_signs_at_once_with_the_keys_algorithm() -> None:
    backend = AlgorithmAwareBackend()
    backend.add(datetime.now(UTC) - timedelta(days=2), "ed25519")
    ring = KeyRing([backend], LIFE)
    await ring.refresh(raise_errors=True)
    key = ring.view().signer
    assert key is not None
    backend.sign_error = RuntimeError("sign() must not be used: this signs at once")
    jose.verify_local(key.version.public_key, key.alg, b"h.p", await ring.sign(key, b"h.p"))
    assert backend.asked == [jose.Algorithm.EdDSA]


async def test_sign_failures_are_counted_and_a_bugs_text_stays_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = PluginBackend()
    backend.add(datetime.now(UTC) - timedelta(days=2))
    ring = KeyRing([backend], LIFE)
    await ring.refresh(raise_errors=True)
    key = ring.view().signer
    assert key is not None

    refused = BackendError("backend 'plugin' refused to sign: key disabled")
    backend.sign_error = refused
    counted = errors_counted("plugin", "sign")
    with pytest.raises(BackendError) as info:
        await ring.sign(key, b"h.p")
    assert info.value is refused  # the backend's own error, passed on as it is
    assert errors_counted("plugin", "sign") == counted + 1

    backend.sign_error = RuntimeError(SECRET)
    with caplog.at_level(logging.ERROR, logger="keysvc.keyring"):
        with pytest.raises(BackendUnavailable) as info:
            await ring.sign(key, b"h.p")
    assert str(info.value) == "backend 'plugin' failed to sign"
    assert errors_counted("plugin", "sign") == counted + 2
    assert [r.getMessage() for r in caplog.records] == [
        "backend plugin failed to sign: RuntimeError"
    ]
    assert SECRET not in caplog.text


async def test_signing_time_is_observed_per_backend() -> None:
    backend = PluginBackend("timed")
    backend.add(datetime.now(UTC) - timedelta(days=2))
    ring = KeyRing([backend], LIFE)
    await ring.refresh(raise_errors=True)
    key = ring.view().signer
    assert key is not None

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"backend": "timed"}) or 0.0

    count, total = sample("keysvc_sign_seconds_count"), sample("keysvc_sign_seconds_sum")
    await ring.sign(key, b"h.p")
    assert sample("keysvc_sign_seconds_count") == count + 1
    assert 0 <= sample("keysvc_sign_seconds_sum") - total < 10  # one in-process signature


# -- problems: why a backend is not current, for /readyz and the metrics ------------------------


def problem_gauges(backend: str) -> dict[str, float | None]:
    return {
        problem: REGISTRY.get_sample_value(
            "keysvc_backend_problem", {"backend": backend, "problem": problem}
        )
        for problem in PROBLEMS
    }


@pytest.mark.parametrize("kept", [False, True], ids=["never-listed", "keys-kept"])
@pytest.mark.parametrize(
    ("kind", "error", "level", "message"),
    [
        ("unavailable", BackendUnavailable("backend 'plugin' is down"), logging.WARNING,
         "it could not be listed (see the log)"),
        ("refused", ConfigError("backend 'plugin': two unstamped key files"), logging.ERROR,
         "its key versions were refused (see the log)"),
        ("insecure_key", InsecureKeyError("key.pem is readable by group or others"),
         logging.ERROR,
         "a private key file is readable by group or others: its keys do not sign until the"
         " file is mode 0600 (see the log)"),
    ],
    ids=["unavailable", "refused", "insecure-key"],
)
async def test_a_failed_refresh_is_a_problem_of_its_kind_until_the_next_good_one(
    kind: str, error: Exception, level: int, message: str, kept: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend, other = PluginBackend(), PluginBackend("other")
    other.add(datetime.now(UTC) - timedelta(days=3))
    ring = KeyRing([backend, other], LIFE)
    if kept:  # the backend's key is the newest: it signs
        backend.add(datetime.now(UTC) - timedelta(days=2))
    await ring.refresh(raise_errors=True)
    good = ring.view()
    backend.list_error = error
    with caplog.at_level(logging.DEBUG, logger="keysvc.keyring"):
        assert (await ring.refresh())["plugin"] is error
    (logged,) = [r for r in caplog.records if r.name == "keysvc.keyring"]
    assert (logged.levelno, logged.getMessage()) == (level, f"refresh of backend plugin failed: {error}")
    still = "; its last good keys are kept" if kept and kind != "insecure_key" else ""
    assert [p.to_json() for p in ring.problems()] == [
        {"backend": "plugin", "problem": kind, "message": message + still}
    ]
    assert problem_gauges("plugin") == {p: 1.0 if p == kind else 0.0 for p in PROBLEMS}
    assert problem_gauges("other") == {p: 0.0 for p in PROBLEMS}
    assert ring.versions_in("plugin") == (good.published[-1:] if kept else [])
    assert [k.backend_name for k in ring.versions_in("other")] == ["other"]
    assert ring.versions_in("nothing-by-that-name") == []
    # Keys kept keep signing, except those of a backend whose key file became readable.
    signer = ring.view().signer
    if kind == "insecure_key" and kept:
        assert signer is None and not ring.ready
    else:
        assert signer == good.signer

    backend.list_error = None
    assert await ring.refresh() == {}
    assert ring.problems() == [] and ring.view().signer == good.signer
    assert problem_gauges("plugin") == {p: 0.0 for p in PROBLEMS}


async def test_a_backend_that_suddenly_lists_nothing_keeps_its_keys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = PluginBackend()
    version = backend.add(datetime.now(UTC) - timedelta(days=2))
    ring = KeyRing([backend], LIFE)
    await ring.refresh(raise_errors=True)
    signer = ring.view().signer
    await backend.destroy_version(version)  # gone: a mount vanished, say
    with caplog.at_level(logging.WARNING, logger="keysvc.keyring"):
        errors = await ring.refresh()
    assert isinstance(errors["plugin"], EmptyListing)
    reason = (
        "listed no key versions after listing 1: a fault (key files deleted, a mount gone), not a"
        " rotation; its last good keys are kept"
    )
    assert ring.last_errors == {"plugin": reason}
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, f"refresh of backend plugin failed: {reason}")
    ]
    assert [p.to_json() for p in ring.problems()] == [{
        "backend": "plugin", "problem": "empty_listing",
        "message": "it listed no key versions after listing some; its last good keys are kept"
                   " (published and signing) until it lists keys again",
    }]
    assert ring.view().signer == signer


async def test_a_backend_that_never_listed_keys_may_list_none() -> None:
    ring = KeyRing([PluginBackend()], LIFE)
    assert await ring.refresh() == {} and ring.problems() == []
