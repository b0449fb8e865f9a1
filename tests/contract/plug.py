"""A TCP proxy on a fixed loopback port that can be unplugged: every connection dropped and
new ones refused, as when a server or the network path to it is down, and plugged back in on
the same port. Backends under the contract reach servers shared by many tests (OpenBao, moto)
through one, so an outage of one test never stops the server for the others."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Self
from urllib.parse import urlsplit

from bench.delay_proxy import DelayProxy


class Plug:
    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        assert target.hostname and target.port, target_url
        self._proxy = DelayProxy(target.hostname, target.port, one_way_delay=0.0)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        await self._proxy.start()
        self.port = self._proxy.port
        self._proxy.listen = ("127.0.0.1", self.port)  # the same port when plugged back in
        return self

    async def close(self) -> None:
        await self._proxy.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def unplugged(self) -> AsyncIterator[None]:
        await self._proxy.close()
        try:
            yield
        finally:
            await self._proxy.start()
