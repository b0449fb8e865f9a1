"""A TCP proxy that adds a fixed one-way delay in each direction: a WAN link on loopback.

`python bench/delay_proxy.py --target 127.0.0.1:8200 --rtt-ms 20` listens on a free loopback
port (printed on stdout) and forwards every byte to the target `rtt/2` later, and every byte back
`rtt/2` later, so each request/response exchange costs one RTT more. Delay is per chunk and keeps
order; bandwidth is not limited. Used by bench/vault_batch.py (Vault 20 ms away) and by the
Vault fault tests (a Vault so slow that requests time out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections import deque
from typing import Self

from keysvc.loopback import is_loopback_host


class DelayProxy:
    def __init__(self, target_host: str, target_port: int, one_way_delay: float,
                 listen_host: str = "127.0.0.1", listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.delay = one_way_delay
        self.listen = (listen_host, listen_port)
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, *self.listen)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        up = self._spawn(self._pipe(client_r, server_w))
        down = self._spawn(self._pipe(server_r, client_w))
        await asyncio.gather(up, down, return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read as fast as data comes; write each chunk `delay` after it was read."""
        loop = asyncio.get_running_loop()
        queue: deque[tuple[float, bytes]] = deque()
        ready = asyncio.Event()
        done = False

        async def deliver() -> None:
            while True:
                while not queue:
                    if done:
                        return
                    ready.clear()
                    await ready.wait()
                due, chunk = queue.popleft()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if chunk:
                    writer.write(chunk)
                    await writer.drain()
                else:  # EOF travels with the same delay
                    with contextlib.suppress(OSError):
                        writer.write_eof()

        sender = self._spawn(deliver())
        try:
            while True:
                chunk = await reader.read(65536)
                queue.append((loop.time() + self.delay, chunk))
                ready.set()
                if not chunk:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            done = True
            ready.set()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await sender
            writer.close()


async def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="added round-trip time")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on")
    args = parser.parse_args(argv)
    target_host, target_port = args.target.rsplit(":", 1)
    listen_host, listen_port = args.listen.rsplit(":", 1)
    if not is_loopback_host(listen_host):
        parser.error("the proxy only listens on loopback")
    proxy = DelayProxy(target_host, int(target_port), args.rtt_ms / 2000, listen_host, int(listen_port))
    await proxy.start()
    print(f"listening on 127.0.0.1:{proxy.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await proxy.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(sys.argv[1:]))
