"""deploy/nginx/otf-proxy.conf.template under real nginx: keysvc beside a fake otfd on one host
name. The agent's request and the discovery documents reach keysvc, every other path reaches
otfd, and keys rotate while agents keep asking through the proxy with no failed verification."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt

from keysvc.config import merge
from tests.clock import VirtualClock
from tests.conftest import FAST_ROTATION, file_config
from tests.fakes.otfd import FakeOtfd
from tests.otf import agent
from tests.otf.nginx import otf_proxy
from tests.service import RunningService, free_port, start_service
from tests.verification import CachingVerifier, assert_rotation_without_failures, verify_once

AUDIENCE = "aws.workload.identity"


@contextlib.asynccontextmanager
async def proxied(
    otfd: FakeOtfd, tmp_path: Path, config: dict[str, Any], clock: VirtualClock | None = None
) -> AsyncIterator[tuple[str, RunningService]]:
    """keysvc whose issuer is the proxy's URL (as in production: otfd's host name), the proxy
    in front of it and `otfd`. Yields (proxy URL, keysvc reached directly). With `clock`, keysvc
    runs on it without its refresh loop (tests.service.start_service)."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    data = merge(config, {"issuer": issuer, "otf": {"url": otfd.url, "timeout": "5s"}})
    async with start_service(data, clock=clock, refresh_loop=clock is None) as svc:
        direct = dataclasses.replace(svc, url=f"http://127.0.0.1:{svc.config.server.port}")
        keysvc_address = direct.url.removeprefix("http://")
        otfd_address = otfd.url.removeprefix("http://")
        with otf_proxy(tmp_path / "nginx", keysvc_address, otfd_address, port) as url:
            assert url == issuer
            yield url, direct


def fetch(url: str, method: str = "GET", token: str | None = None, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, data=data)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def test_the_three_paths_reach_keysvc_and_everything_else_otfd(
    otfd: FakeOtfd, key_dir: Path, tmp_path: Path
) -> None:
    async with proxied(otfd, tmp_path, file_config(key_dir)) as (proxy, keysvc):
        job, token = otfd.running_job()

        # The agent's request, byte for byte, to otfd's host name: keysvc answers it.
        reply = await asyncio.to_thread(agent.ask, proxy, job.id, token, AUDIENCE)
        assert reply.status == 200, reply.body
        claims = await verify_once(proxy, reply.body.decode(), AUDIENCE)  # discovery via nginx
        assert claims["iss"] == proxy and claims["terraform_run_id"] == job.run_id
        assert [f"{r.method} {r.path}" for r in otfd.requests] == [
            f"GET /otfapi/jobs/{job.id}",
            f"GET /api/v2/workspaces/{job.workspace_id}",
        ]  # keysvc's own lookups: the POST itself never reached otfd

        # The discovery documents are keysvc's bytes and cache headers.
        for path in ("/.well-known/openid-configuration", "/.well-known/jwks"):
            status, headers, body = await asyncio.to_thread(fetch, proxy + path)
            direct = await asyncio.to_thread(fetch, keysvc.url + path)
            assert (status, body) == (200, direct[2])
            assert headers["ETag"] == direct[1]["ETag"]
            assert headers["Cache-Control"] == direct[1]["Cache-Control"]

        # Everything else is otfd's: its API, other runner paths, other methods, keysvc's own API.
        otfd.requests.clear()
        others = [
            ("GET", f"/otfapi/jobs/{job.id}"),
            ("GET", f"/api/v2/workspaces/{job.workspace_id}"),
            ("POST", "/otfapi/agents/register"),
            ("GET", f"/otfapi/jobs/{job.id}/await-signal"),
            ("GET", f"/otfapi/jobs/{job.id}/dynamic-credentials"),
            ("POST", f"/otfapi/jobs/{job.id}/dynamic-credentials/x"),
            ("POST", f"/otfapi/jobs/{job.id}/x/dynamic-credentials"),
            ("GET", "/.well-known/jwks/"),
            ("GET", "/.well-known/openid-configuration.json"),
            ("POST", "/v1/tokens"),
            ("GET", "/v1/keys"),
            ("GET", "/metrics"),
            ("GET", "/app/organizations"),
        ]
        for method, path in others:
            data = b"{}" if method == "POST" else None
            status, _, body = await asyncio.to_thread(fetch, proxy + path, method, token, data)
            assert otfd.requests[-1].path == path, (method, path)
            assert otfd.requests[-1].method == method
        assert len(otfd.requests) == len(others)
        status, headers, body = await asyncio.to_thread(
            fetch, f"{proxy}/otfapi/jobs/{job.id}", "GET", token
        )
        assert status == 200 and headers["Content-Type"] == "application/vnd.api+json"
        assert otfd.requests[-1].headers["Authorization"] == f"Bearer {token}"
        assert otfd.requests[-1].headers["Host"] == proxy.removeprefix("http://")

        # otfd, asked directly, answers as it does with no key of its own.
        status, _, body = await asyncio.to_thread(
            fetch, f"{otfd.url}/otfapi/jobs/{job.id}/dynamic-credentials", "POST", token, b'{"audience":"x"}'
        )
        assert status == 500 and b"no private key has been configured" in body


async def test_an_upload_bigger_than_nginxs_default_reaches_otfd(
    otfd: FakeOtfd, key_dir: Path, tmp_path: Path
) -> None:
    """Configuration versions and state are uploaded to otfd: no 1 MB cap on its paths, while
    the runner endpoint keeps keysvc's 64 KiB."""
    async with proxied(otfd, tmp_path, file_config(key_dir)) as (proxy, _):
        job, token = otfd.running_job()
        big = b"x" * (3 << 20)
        status, _, _ = await asyncio.to_thread(fetch, f"{proxy}/api/v2/configuration-versions/cv-1/upload", "PUT", token, big)
        assert status == 404  # the fake has no such route: what matters is it got there
        assert otfd.requests[-1].method == "PUT"
        status, _, _ = await asyncio.to_thread(
            fetch, f"{proxy}/otfapi/jobs/{job.id}/dynamic-credentials", "POST", token, b"x" * (100 << 10)
        )
        assert status == 413


@dataclasses.dataclass
class AgentThroughProxy:
    """What assert_rotation_without_failures drives: the issuer is the proxy, tokens come from
    OTF's runner endpoint through it, and the key listing from keysvc directly."""

    proxy: str
    keysvc: RunningService
    job_id: str
    token: str

    @property
    def url(self) -> str:
        return self.proxy

    @property
    def config(self) -> Any:
        return self.keysvc.config

    @property
    def ring(self) -> Any:
        return self.keysvc.ring

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        return await self.keysvc.request(method, path, **kwargs)

    async def kids(self) -> list[str]:
        return await self.keysvc.kids()

    async def issue(self, audience: str) -> dict[str, str]:
        reply = await asyncio.to_thread(agent.ask, self.proxy, self.job_id, self.token, audience)
        assert reply.status == 200, reply.body
        token = reply.body.decode()
        return {"token": token, "kid": jwt.get_unverified_header(token)["kid"]}


async def test_a_rotation_while_agents_ask_through_the_proxy_fails_no_verification(
    otfd: FakeOtfd, tmp_path: Path
) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    config = merge(FAST_ROTATION, file_config(directory, key_type="ec-p256"))
    clock = VirtualClock()
    async with proxied(otfd, tmp_path, config, clock) as (proxy, keysvc):
        backend = keysvc.ring.backend("local")
        await backend.create_version()
        await keysvc.ring.refresh()

        stop = asyncio.Event()
        failures: list[str] = []
        verified: list[list[str]] = []

        async def another_agent(index: int) -> None:
            """A runner of its own, verified by a cloud of its own (a strict caching one)."""
            job, token = otfd.running_job(name=f"workspace-{index}", phase=("plan", "apply")[index % 2])
            verifier = await asyncio.to_thread(CachingVerifier, proxy, None, clock.monotonic)
            kids: list[str] = []
            while not stop.is_set():
                reply = await asyncio.to_thread(agent.ask, proxy, job.id, token, AUDIENCE)
                try:
                    assert reply.status == 200, reply.body
                    claims = await verifier.averify(reply.body.decode(), AUDIENCE)
                    assert claims["terraform_workspace_name"] == f"workspace-{index}"
                    kids.append(jwt.get_unverified_header(reply.body.decode())["kid"])
                except Exception as exc:  # noqa: BLE001 - every failure is recorded and asserted on
                    failures.append(f"agent {index}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.005)
            verified.append(kids)

        agents = [asyncio.create_task(another_agent(i)) for i in range(3)]
        job, token = otfd.running_job(name="rotating")
        try:
            report = await assert_rotation_without_failures(
                AgentThroughProxy(proxy, keysvc, job.id, token), backend.create_version, clock
            )
        finally:
            stop.set()
            await asyncio.gather(*agents)
        assert not failures, failures
        assert len(report.signing_kids) == 3 and report.verified >= 20
        # each agent kept asking across both rotations, and verified tokens of each signing key
        assert len(verified) == 3
        for kids in verified:
            assert len(kids) >= 10 and set(kids) == set(report.signing_kids), (kids, report)
