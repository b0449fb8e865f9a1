"""A real HTTPS server on 127.0.0.1 serving an issuer's discovery document and JWKS.

It runs aiohttp in its own thread and event loop, so synchronous tests can drive the `keysvc`
CLI (which runs its own event loop) against it. Tests change what it serves through `state`.
The TLS certificate comes from a trustme CA that the tests hand to doctor with `--ca-file`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web


@dataclass
class IssuerState:
    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    jwks_headers: dict[str, str] = field(
        default_factory=lambda: {"Cache-Control": "public, max-age=900"}
    )
    discovery_overrides: dict[str, Any] = field(default_factory=dict)
    discovery_status: int = 200
    jwks_status: int = 200
    jwks_delay: float = 0.0
    service_keys: dict[str, Any] | None = None
    client_token: str = "doctor-test-token"
    requests: list[str] = field(default_factory=list)


class IssuerServer:
    def __init__(self, ca: trustme.CA, tmp: Path) -> None:
        self.state = IssuerState()
        self.ca_file = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self._certificate = ca.issue_cert("127.0.0.1", "localhost")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def discovery(self) -> dict[str, Any]:
        document = {
            "issuer": self.url,
            "jwks_uri": self.url + "/.well-known/jwks",
            "id_token_signing_alg_values_supported": sorted(
                {
                    k.get("alg", "RS256")
                    for k in self.state.jwks.get("keys", [])
                    if isinstance(k, dict)
                }
            )
            or ["RS256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "scopes_supported": ["openid"],
            "claims_supported": ["sub", "aud", "iss"],
        }
        document.update(self.state.discovery_overrides)
        return {k: v for k, v in document.items() if v is not None}

    async def _discovery(self, request: web.Request) -> web.StreamResponse:
        self.state.requests.append(request.path)
        if self.state.discovery_status in (301, 302):
            raise web.HTTPFound(self.url + "/elsewhere")
        return web.json_response(self.discovery(), status=self.state.discovery_status)

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        self.state.requests.append(request.path)
        if self.state.jwks_delay:
            await asyncio.sleep(self.state.jwks_delay)
        return web.Response(
            body=json.dumps(self.state.jwks).encode(),
            status=self.state.jwks_status,
            content_type="application/json",
            headers=self.state.jwks_headers,
        )

    async def _keys(self, request: web.Request) -> web.StreamResponse:
        self.state.requests.append(request.path)
        if request.headers.get("Authorization") != f"Bearer {self.state.client_token}":
            return web.json_response(
                {"error": {"code": "unauthorized", "message": "bad token"}},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return web.json_response(self.state.service_keys or {"keys": []})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/.well-known/jwks", self._jwks)
        app.router.add_get("/v1/keys", self._keys)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._certificate.configure_cert(context)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def __enter__(self) -> IssuerServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def serve(ca: trustme.CA, tmp: Path) -> Iterator[IssuerServer]:
    with IssuerServer(ca, tmp) as server:
        yield server
