"""Backend problems while serving: a backend that suddenly lists nothing is a fault (the last
good ring is kept, logged, counted and shown by /readyz), and a key file that became readable by
others stops signing at the next refresh, as it would have stopped the start."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from keysvc.keyring import KeyRing
from tests.conftest import file_config, write_key
from tests.service import RUN, RunningService, start_service
from tests.test_ring_faults import LIFE, SECRET, PluginBackend, errors_counted
from tests.verification import verify_once


def problem_gauge(backend: str, problem: str) -> float | None:
    labels = {"backend": backend, "problem": problem}
    return REGISTRY.get_sample_value("keysvc_backend_problem", labels)


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30) -> Any:
    """Poll `check` (the real refresh loop runs every second) until it returns a true value."""
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)
    return result


async def readyz(svc: RunningService) -> tuple[int, Any]:
    status, _, body = await svc.request("GET", "/readyz", token="")
    return status, body


QUICK_REFRESH = {"rotation": {"publish_lead": "1h", "jwks_max_age": "1s", "refresh_interval": "1s"}}
"""Refreshes every second; a lead long enough that no state changes by the clock meanwhile."""


def service_keys(tmp_path: Path) -> Path:
    """An active key and a pending one."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    write_key(keys, "ec-p256", datetime.now(UTC) - timedelta(days=2))
    write_key(keys, "ec-p256", datetime.now(UTC) - timedelta(minutes=30))
    return keys


async def test_deleting_every_key_file_keeps_the_last_good_ring(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Was `{"keys":[]}` with no warning. Now the JWKS, the signer and `keys list` stay as they
    were, the error is logged once and counted, and /readyz stays 200 but says why."""
    keys = service_keys(tmp_path)
    async with start_service({**file_config(keys), **QUICK_REFRESH}) as svc:
        jwks = await svc.jwks()
        assert len(jwks["keys"]) == 2
        signing_kid = svc.ring.view().signer.kid  # type: ignore[union-attr]
        assert await readyz(svc) == (200, {
            "status": "ready", "signing_kid": signing_kid, "problems": []
        })
        errors_before = errors_counted("local", "list")
        saved = {p.name: p.read_bytes() for p in keys.iterdir()}
        for path in keys.iterdir():
            path.unlink()

        async def degraded() -> Any:
            status, body = await readyz(svc)
            return body if body.get("status") == "degraded" else None

        body = await until(degraded, "/readyz never reported the empty listing")
        assert body["signing_kid"] == signing_kid
        (problem,) = body["problems"]
        assert problem["backend"] == "local" and problem["problem"] == "empty_listing"
        assert "last good keys are kept" in problem["message"]
        assert str(keys) not in str(body)  # paths go to the log, not to a public reply
        await asyncio.sleep(2.5)  # more refreshes: still the same ring, logged once
        assert await svc.jwks() == jwks
        token = await svc.issue()
        await verify_once(svc.url, token["token"], RUN["audience"])
        assert errors_counted("local", "list") >= errors_before + 2
        assert problem_gauge("local", "empty_listing") == 1.0
        status, _, metrics = await svc.request("GET", "/metrics")
        assert 'keysvc_backend_problem{backend="local",problem="empty_listing"} 1.0' in metrics
        logged = [r for r in caplog.records if "listed no key versions" in r.getMessage()]
        assert len(logged) == 1 and logged[0].levelno == logging.ERROR
        assert "listed no key versions after listing 2" in logged[0].getMessage()

        for name, data in saved.items():  # the keys come back: the problem clears
            (keys / name).write_bytes(data)
            (keys / name).chmod(0o600)

        async def ready_again() -> Any:
            return (await readyz(svc))[1].get("status") == "ready"

        await until(ready_again, "/readyz stayed degraded after the keys came back")
        assert problem_gauge("local", "empty_listing") == 0.0


async def test_a_backend_that_never_listed_keys_is_not_ready_but_not_a_fault(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    async with start_service(file_config(empty)) as svc:
        status, body = await readyz(svc)
        assert status == 503 and body["error"]["message"] == "no signing key is usable yet"
        assert svc.ring.problems() == []


async def test_any_backend_that_suddenly_lists_nothing_keeps_its_keys() -> None:
    """The rule is the ring's, for every backend type, not the file backend's."""
    plugin = PluginBackend()
    plugin.add(datetime.now(UTC) - timedelta(days=2))
    ring = KeyRing([plugin], LIFE)
    assert await ring.refresh() == {}
    before = ring.view()
    for version in await plugin.list_versions():
        await plugin.disable_version(version)
    assert await plugin.list_versions() == []
    errors = await ring.refresh()
    assert "plugin" in errors and ring.view().listing() == before.listing()
    assert ring.view().signer == before.signer
    assert [p.problem for p in ring.problems()] == ["empty_listing"]


async def test_an_unreachable_backend_is_ready_and_degraded_without_its_error_text(
    tmp_path: Path,
) -> None:
    keys = service_keys(tmp_path)
    plugin = PluginBackend()
    plugin.add(datetime.now(UTC) - timedelta(days=3))
    async with start_service(file_config(keys)) as svc:
        svc.service.ring.backends.append(plugin)
        await svc.ring.refresh()
        plugin.list_error = RuntimeError(SECRET)
        await svc.ring.refresh()
        status, body = await readyz(svc)
        assert status == 200 and body["status"] == "degraded"
        assert body["problems"] == [{
            "backend": "plugin",
            "problem": "unavailable",
            "message": "it could not be listed (see the log); its last good keys are kept",
        }]
        assert problem_gauge("plugin", "unavailable") == 1.0


async def test_a_key_made_readable_by_others_stops_signing_at_the_next_refresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Was a warning while the key went on signing. Now, as at start: refused, loudly (an error
    log line naming the file and the fix, the metric, /readyz 503 saying why); the key stays
    published so the tokens it signed still verify; fixing the mode brings it back."""
    keys = service_keys(tmp_path)
    async with start_service({**file_config(keys), **QUICK_REFRESH}) as svc:
        kids = await svc.kids()
        signer = min(keys.iterdir())  # the older key signs; the newer is pending
        signer.chmod(0o644)

        async def unready() -> Any:
            status, body = await readyz(svc)
            return body if status == 503 else None

        body = await until(unready, "the world-readable key kept the replica ready")
        message = body["error"]["message"]
        assert body["error"]["code"] == "not_ready"
        assert message.startswith("no signing key is usable: backend 'local': a private key file")
        assert "readable by group or others" in message and str(keys) not in message
        status, headers, reply = await svc.request("POST", "/v1/tokens", json=RUN)
        assert status == 503 and headers["Retry-After"]
        assert reply["error"]["code"] == "backend_unavailable"
        assert await svc.kids() == kids  # still published: its tokens still verify
        assert problem_gauge("local", "insecure_key") == 1.0
        logged = [r for r in caplog.records if r.levelno == logging.ERROR
                  and "accessible by group or others" in r.getMessage()]
        assert logged and f"chmod 600 {signer}" in logged[0].getMessage()

        signer.chmod(0o600)

        async def signing() -> Any:
            return (await readyz(svc))[0] == 200

        await until(signing, "the key did not sign again after chmod 600")
        token = await svc.issue()
        await verify_once(svc.url, token["token"], RUN["audience"])
        assert problem_gauge("local", "insecure_key") == 0.0


async def test_a_readable_key_in_another_backend_stops_only_that_backend(tmp_path: Path) -> None:
    """The signer's backend is fine: it keeps signing; the other backend's keys sign no more."""
    keys = service_keys(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    old = write_key(other, "ec-p256", datetime.now(UTC) - timedelta(days=5))
    config = {"backends": [
        {"name": "local", "type": "file", "path": str(keys)},
        {"name": "other", "type": "file", "path": str(other)},
    ]}
    async with start_service(config, refresh_loop=False) as svc:
        signer = svc.ring.view().signer
        assert signer is not None and signer.backend_name == "local"
        old.chmod(0o640)
        errors = await svc.ring.refresh()
        assert set(errors) == {"other"}
        assert svc.ring.view().signer == signer
        status, body = await readyz(svc)
        assert status == 200 and [p["problem"] for p in body["problems"]] == ["insecure_key"]
