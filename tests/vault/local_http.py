"""Base for the small aiohttp servers the Vault tests put next to OpenBao (a Kubernetes API,
a load balancer): served on a free 127.0.0.1 port for the length of an `async with`."""

from __future__ import annotations

from typing import Self

from aiohttp import web


class LocalHTTPApp:
    address = ""

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.address = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
