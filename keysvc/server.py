"""Running the HTTP service: one process, or `workers` processes sharing the port.

Workers are independent replicas (SO_REUSEPORT): each loads the ring itself and computes the
same lifecycle, which is exactly how separate replicas behind a load balancer behave.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import signal
import ssl
import tempfile
from typing import Any

from aiohttp import web

from keysvc import logs
from keysvc.config import Config, parse_config


def ssl_context(config: Config) -> ssl.SSLContext | None:
    server = config.server
    if server.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(server.tls_cert, server.tls_key)
    if server.client_ca is not None:
        context.load_verify_locations(server.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def serve_async(config: Config, *, reuse_port: bool = False, ready: Any = None) -> None:
    from keysvc.app import create_app
    from keysvc.service import Service

    service = Service(config)
    await service.start()
    runner = web.AppRunner(create_app(service), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner,
        config.server.host,
        config.server.port,
        ssl_context=ssl_context(config),
        reuse_port=reuse_port or None,
        backlog=1024,
    )
    await site.start()
    # Everything loaded so far (modules, config, keys) lives as long as the process: take it out
    # of the collector's generations so full collections walk only per-request garbage.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await service.stop()


def _worker(data: dict[str, Any]) -> None:
    config = parse_config(data)
    logs.configure(config.log_level)
    _run_loop(serve_async(config, reuse_port=True))


def _run_loop(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


def serve(config: Config, data: dict[str, Any], ready: Any = None) -> int:
    """Serve until SIGTERM/SIGINT. `data` is the raw config, re-validated in each worker."""
    if config.server.workers == 1:
        _run_loop(serve_async(config, ready=ready))
        return 0
    with tempfile.TemporaryDirectory(prefix="keysvc-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        context = multiprocessing.get_context("spawn")
        workers = [
            context.Process(target=_worker, args=(data,), name=f"keysvc-worker-{i}")
            for i in range(config.server.workers)
        ]
        for process in workers:
            process.start()

        def forward(signum: int, _frame: Any) -> None:
            for process in workers:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGTERM)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        if ready is not None:
            ready()
        codes = []
        for process in workers:
            process.join()
            codes.append(process.exitcode or 0)
        return max(codes)
