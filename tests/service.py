"""Run the real keysvc service (config → Service → aiohttp app) on a free loopback port.

Backend test suites use this so every backend passes the same token and rotation checks
through the real HTTP API.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from keysvc.backends.base import KeyBackend
from keysvc.config import ALL_SCOPES, Config, merge, parse_config
from keysvc.keyring import KeyRing
from keysvc.connections import listen
from keysvc.server import app_runner, ssl_context
from keysvc.service import Service, build_backends
from tests.clock import VirtualClock, stamped_by
from tests.openapi import CONFORMANCE

RUN = {
    "organization": "acme",
    "workspace": "networking",
    "workspace_id": "ws-8pNkEB3sF5Q9",
    "run_id": "run-Yb2n8qzM4jCP",
    "run_phase": "plan",
    "audience": "aws.workload.identity",
}


def backend_detail(caplog: Any, body: dict[str, Any]) -> str:
    """The keysvc log line behind a 503: what the backend said, which the client does not get
    (its message carries only an error id to find this line by)."""
    message = body["error"]["message"]
    found = re.search(r"error id ([0-9a-f]{8})", message)
    assert found, message
    lines = [r.getMessage() for r in caplog.records if f"error id {found[1]})" in r.getMessage()]
    assert len(lines) == 1, lines
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningService:
    url: str
    client_token: str
    service: Service
    config: Config
    session: aiohttp.ClientSession = field(repr=False)

    @property
    def ring(self) -> KeyRing:
        return self.service.ring

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.client_token if token is None else token}"}

    async def request(
        self, method: str, path: str, *, token: str | None = None, **kwargs: Any
    ) -> tuple[int, Any, Any]:
        """(status, headers, parsed JSON body or raw text)."""
        headers = {**self.auth(token), **kwargs.pop("headers", {})}
        async with self.session.request(method, self.url + path, headers=headers, **kwargs) as r:
            text = await r.text()
            try:
                body: Any = await r.json(content_type=None)
            except ValueError:
                body = text
            return r.status, r.headers.copy(), body

    async def issue(self, **overrides: Any) -> dict[str, Any]:
        """POST /v1/tokens with a valid run (fields overridable); asserts 200."""
        status, _, body = await self.request("POST", "/v1/tokens", json={**RUN, **overrides})
        assert status == 200, body
        return body

    async def jwks(self) -> dict[str, Any]:
        status, _, body = await self.request("GET", "/.well-known/jwks")
        assert status == 200, body
        return body

    async def kids(self) -> list[str]:
        return [k["kid"] for k in (await self.jwks())["keys"]]


@contextlib.asynccontextmanager
async def start_service(
    config: dict[str, Any],
    *,
    refresh_loop: bool = True,
    client_ssl: Any = True,
    backends: list[KeyBackend] | None = None,
    clock: VirtualClock | None = None,
) -> AsyncIterator[RunningService]:
    """Start keysvc with `config` (issuer and port are filled in; a client `test` with every
    scope is added) and stop it afterwards. `backends`, when given, are the instances the
    service uses in place of those `config` names (a test's own subclass of one). With `clock`,
    the key lifecycle runs on the test's clock, its backends stamping new versions by it
    (tests.clock); give refresh_loop=False and refresh the ring as the clock moves."""
    port = free_port()
    scheme = "https" if config.get("server", {}).get("tls_cert") else "http"
    token = secrets.token_urlsafe(24)
    client = {
        "name": "test",
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "scopes": list(ALL_SCOPES),
    }
    data = merge(
        {"issuer": f"{scheme}://127.0.0.1:{port}", "server": {"host": "127.0.0.1", "port": port}},
        config,
    )
    data["clients"] = [*config.get("clients", []), client]
    parsed = parse_config(data)
    if clock is not None:
        backends = [stamped_by(clock, b) for b in backends or build_backends(parsed)]
        service = Service(parsed, backends, clock=clock)
    else:
        service = Service(parsed, backends)
    await service.start(refresh_loop=refresh_loop)
    runner = app_runner(service)
    runner.app.on_response_prepare.append(CONFORMANCE.record)  # every reply against the document
    await runner.setup()
    listener = await listen(runner, parsed, host="127.0.0.1", ssl_context=ssl_context(parsed))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as session:
            yield RunningService(parsed.issuer, token, service, parsed, session)
    finally:
        listener.close()
        await runner.cleanup()
        await service.stop()
