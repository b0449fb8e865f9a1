"""Vault sealed, stopped, slow, answering 5xx: BackendUnavailable within the timeout, and
recovery without intervention. Uses its own persistent OpenBao (raft storage on disk), which keeps its
keys and tokens across a stop and restart and comes back sealed, as a production server does."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bench.delay_proxy import DelayProxy
from keysvc import jose
from keysvc.backends.base import BackendUnavailable
from keysvc.backends.vault import VaultBackend
from keysvc.secrets import write_private_file
from tests.conftest import FAST_ROTATION
from tests.service import RUN, backend_detail, start_service
from tests.vault.bao import BaoServer
from tests.vault.conftest import settings, token_file
from tests.vault.local_http import LocalHTTPApp
from tests.verification import verify_once

ES256 = jose.Algorithm.ES256
KEY = "faults"


@pytest.fixture(scope="module")
def persistent_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    server = BaoServer(tmp_path_factory.mktemp("openbao-persistent"), dev=False, audit=False)
    server.start()
    try:
        server.enable_transit()
        server.create_key(KEY, "ecdsa-p256")
        yield server
    finally:
        server.stop()


@pytest.fixture
def healthy(persistent_bao: BaoServer) -> Iterator[BaoServer]:
    """The server, guaranteed running and unsealed before and after the test."""
    yield persistent_bao
    if persistent_bao.process is None:
        persistent_bao.start()
    if persistent_bao.request("GET", "sys/seal-status", token=None)["sealed"]:
        persistent_bao.unseal()


@pytest.fixture
async def backend(healthy: BaoServer, tmp_path: Path) -> AsyncIterator[VaultBackend]:
    path = token_file(tmp_path, healthy.root_token)
    backend = VaultBackend("vault", settings(healthy, KEY, path, request_timeout="1s"))
    await backend.open()
    yield backend
    await backend.close()


async def sign(backend: VaultBackend) -> bytes:
    (version,) = await backend.list_versions()
    signature = await backend.sign(version, ES256, b"a.b")
    jose.verify_local(version.public_key, ES256, b"a.b", signature)
    return signature


async def unavailable(call, match: str, within: float = 10) -> BackendUnavailable:
    """`call` raises BackendUnavailable matching `match`, well before `within` seconds (a
    generous bound: each fault here either fails at once or is cut off at a 0.5-1 s timeout,
    while a call that hung on Vault would take far longer)."""
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=match) as err:
        await call
    assert time.monotonic() - started < within
    assert err.value.retry_after > 0
    return err.value


async def eventually_signs(backend: VaultBackend, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await sign(backend)
            return
        except BackendUnavailable:
            assert time.monotonic() < deadline, "the backend did not recover"
            await asyncio.sleep(0.2)


async def test_sealed_vault_is_unavailable_then_recovers(healthy: BaoServer, backend: VaultBackend) -> None:
    (version,) = await backend.list_versions()
    await sign(backend)
    healthy.seal()
    err = await unavailable(backend.sign(version, ES256, b"a.b"), "is sealed")
    assert err.retry_after >= 5
    await unavailable(backend.list_versions(), "is sealed")
    healthy.unseal()
    await sign(backend)  # same backend object, nothing re-opened


async def test_stopped_vault_is_unavailable_then_recovers_after_restart(
    healthy: BaoServer, backend: VaultBackend, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    (version,) = await backend.list_versions()
    await sign(backend)
    healthy.stop()
    await unavailable(backend.sign(version, ES256, b"a.b"), "unreachable")
    await unavailable(backend.list_versions(), "unreachable")
    healthy.start(unseal=False)  # comes back sealed, with its keys
    assert healthy.request("GET", "sys/seal-status", token=None)["sealed"]
    await unavailable(backend.sign(version, ES256, b"a.b"), "sealed")
    healthy.unseal()
    await eventually_signs(backend, timeout=5)
    assert healthy.root_token not in caplog.text


async def test_slow_vault_times_out_within_the_request_timeout(healthy: BaoServer, tmp_path: Path) -> None:
    async with DelayProxy("127.0.0.1", healthy.port, one_way_delay=0.0) as proxy:
        path = token_file(tmp_path, healthy.root_token)
        slow = VaultBackend("vault", settings(healthy, KEY, path, address=proxy.address,
                                              request_timeout="500ms", batch_window="0s"))
        await slow.open()  # logged in while Vault answers promptly
        try:
            (version,) = await slow.list_versions()
            proxy.delay = 30.0  # then every answer takes a minute: only the timeout ends a call
            await unavailable(slow.list_versions(), "did not answer within 0.5s")
            await unavailable(slow.sign(version, ES256, b"a.b"), "did not answer within 0.5s")
        finally:
            await slow.close()


async def test_a_vault_too_slow_to_log_in_leaves_the_backend_open_but_unavailable(
    healthy: BaoServer, tmp_path: Path
) -> None:
    async with DelayProxy("127.0.0.1", healthy.port, one_way_delay=30.0) as proxy:
        path = token_file(tmp_path, healthy.root_token)
        slow = VaultBackend("vault", settings(healthy, KEY, path, address=proxy.address,
                                              request_timeout="500ms"))
        try:
            # lookup-self (hvac) times out: open reports it and keeps trying in the background
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match="timed out"):
                await slow.open()
            assert time.monotonic() - started < 10
            await unavailable(slow.list_versions(), "not logged in to Vault yet")
        finally:
            await slow.close()


async def test_slow_sign_times_out_for_every_caller_of_the_batch(healthy: BaoServer, backend: VaultBackend,
                                                                  tmp_path: Path) -> None:
    (version,) = await backend.list_versions()
    async with DelayProxy("127.0.0.1", healthy.port, one_way_delay=0.0) as proxy:
        path = token_file(tmp_path, healthy.root_token, "t2")
        routed = VaultBackend("vault", settings(healthy, KEY, path, address=proxy.address,
                                                request_timeout="500ms", batch_window="20ms"))
        await routed.open()
        try:
            await sign(routed)
            proxy.delay = 3.0  # Vault becomes slow mid-flight
            started = time.monotonic()
            results = await asyncio.gather(
                *(routed.sign(version, ES256, b"a.b") for _ in range(5)), return_exceptions=True
            )
            # Cut off at the 0.5 s timeout: waiting for Vault would take 6 s (3 s each way).
            assert time.monotonic() - started < 5
            assert all(isinstance(r, BackendUnavailable) and "did not answer" in str(r) for r in results)
            proxy.delay = 0.0
            await eventually_signs(routed, timeout=10)
        finally:
            await routed.close()


class LoadBalancer(LocalHTTPApp):
    """A reverse proxy in front of Vault, as production has one: it forwards to the real
    server, and answers 502 (as load balancers do) while its upstream is marked down."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.down = False

    async def _forward(self, request: web.Request) -> web.Response:
        if self.down:
            return web.json_response({"errors": ["upstream connect error"]}, status=502,
                                     headers={"Retry-After": "7"})
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with aiohttp.ClientSession() as session, session.request(
            request.method, self.upstream + request.path_qs, headers=headers,
            data=await request.read(),
        ) as upstream:
            return web.Response(status=upstream.status, body=await upstream.read(),
                                content_type=upstream.content_type)

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._forward)


async def test_5xx_is_unavailable_with_vaults_retry_after(healthy: BaoServer, tmp_path: Path) -> None:
    async with LoadBalancer(healthy.address) as balancer:
        path = token_file(tmp_path, healthy.root_token)
        backend = VaultBackend("vault", settings(healthy, KEY, path, address=balancer.address))
        await backend.open()
        try:
            await sign(backend)
            (version,) = await backend.list_versions()
            balancer.down = True
            err = await unavailable(backend.sign(version, ES256, b"a.b"),
                                    "HTTP 502: upstream connect error")
            assert err.retry_after == 7  # the server's own Retry-After is passed on
            await unavailable(backend.list_versions(), "HTTP 502")
            balancer.down = False
            await sign(backend)
        finally:
            await backend.close()


# -- the same faults through the HTTP API ------------------------------------------------------


def service_config(bao: BaoServer, token_path: Path) -> dict:
    return {
        **FAST_ROTATION,
        "tokens": {**FAST_ROTATION["tokens"], "sign_timeout": "3s"},
        "backends": [{"name": "vault", "type": "vault", "address": bao.address, "key": KEY,
                      "token_file": str(token_path), "request_timeout": "1s"}],
    }


async def assert_503_while_jwks_served(svc, kids: list[str], match: str, caplog) -> None:
    started = time.monotonic()
    status, headers, body = await svc.request("POST", "/v1/tokens", json=RUN)
    # A hang would end at sign_timeout (3 s) with a detail that fails the match below; this
    # bound only keeps the request from waiting on Vault indefinitely.
    assert time.monotonic() - started < 10
    assert status == 503, body
    assert int(headers["Retry-After"]) >= 1
    assert body["error"]["code"] == "backend_unavailable"
    assert re.search(match, backend_detail(caplog, body)), body
    assert not re.search(match, body["error"]["message"]), body  # details only in the log
    assert await svc.kids() == kids  # the last good ring is still published


async def eventually_issues(svc, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = await svc.request("POST", "/v1/tokens", json=RUN)
        if status == 200:
            return body
        assert status == 503 and time.monotonic() < deadline, body
        await asyncio.sleep(0.2)


async def test_service_sealed_stopped_and_denied(healthy: BaoServer, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = healthy.create_token(["root"])  # a child token we can revoke
    path = token_file(tmp_path, token)
    async with start_service(service_config(healthy, path)) as svc:
        issued = await svc.issue()
        await verify_once(svc.url, issued["token"], RUN["audience"])
        kids = await svc.kids()

        healthy.seal()
        await assert_503_while_jwks_served(svc, kids, "sealed", caplog)
        await asyncio.sleep(1.5)  # a refresh fails meanwhile: the ring keeps its keys
        assert await svc.kids() == kids
        healthy.unseal()
        await eventually_issues(svc)

        healthy.stop()
        await assert_503_while_jwks_served(svc, kids, "unreachable", caplog)
        healthy.start()
        issued = await eventually_issues(svc)
        await verify_once(svc.url, issued["token"], RUN["audience"])

        healthy.request("POST", "auth/token/revoke", {"token": token})
        await assert_503_while_jwks_served(svc, kids, "HTTP 403", caplog)
        write_private_file(path, healthy.create_token(["root"]).encode())  # the agent's new token
        await eventually_issues(svc)
    assert token not in caplog.text
