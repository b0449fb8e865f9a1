"""Running the HTTP service: one process, or `workers` processes sharing the port.

Workers are independent replicas (SO_REUSEPORT): each loads the ring itself and computes the
same lifecycle, which is exactly how separate replicas behind a load balancer behave.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import ssl
import tempfile
import time
from typing import Any

from aiohttp import web

from keysvc import logs
from keysvc.config import Config, parse_config

log = logging.getLogger("keysvc.server")


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
        try:
            await runner.cleanup()
        finally:
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
    """Serve until SIGTERM/SIGINT. `data` is the raw config, re-validated in each worker.

    With several workers this process supervises them. A worker that dies while the others
    run (killed, crashed, failed to start) is not restarted: the others are stopped and the
    exit status says why (128 + signal for a killed worker), so the supervisor (Kubernetes,
    systemd) restarts the whole service and counts it. Restarting the worker here would hide
    a crash loop from the supervisor, and in between the survivors keep passing health checks
    on the shared port while part of the service is gone."""
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
        supervisor = _Supervisor(workers)
        signal.signal(signal.SIGTERM, supervisor.requested)
        signal.signal(signal.SIGINT, supervisor.requested)
        for process in workers:
            process.start()
        if supervisor.stopping:  # asked while starting: reach the workers started since
            supervisor.terminate()
        if ready is not None:
            ready()
        return supervisor.run()


def exit_status(exitcode: int | None) -> int:
    """A process's exit code as a shell reports it: 128 + N for a process killed by signal N."""
    if exitcode is None:
        return 0
    return 128 - exitcode if exitcode < 0 else exitcode


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


_STOP_EXITS = (-signal.SIGTERM, -signal.SIGINT)


class _Supervisor:
    """Waits for the workers; when one ends before a stop was asked for, stops the rest."""

    stop_timeout = 30.0
    """How long workers may take to stop after one died before they are killed."""

    def __init__(self, workers: list[Any]) -> None:
        self.workers = workers
        self.stopping = False
        self.failure: int | None = None

    def requested(self, signum: int, _frame: Any) -> None:
        """SIGTERM/SIGINT to this process: a stop for every worker."""
        self.stopping = True
        self.terminate()

    def terminate(self) -> None:
        for process in self.workers:
            if process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def run(self) -> int:
        running = list(self.workers)
        deadline: float | None = None
        while running:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            multiprocessing.connection.wait([p.sentinel for p in running], timeout)
            for process in [p for p in running if p.exitcode is not None]:
                running.remove(process)
                self._ended(process, running)
                if not self.stopping:
                    self.stopping = True
                    deadline = time.monotonic() + self.stop_timeout
                    self.terminate()
            if deadline is not None and running and time.monotonic() >= deadline:
                for process in running:
                    log.error("worker %s (pid %d) did not stop: killing it", process.name, process.pid)
                    process.kill()
                deadline = None
        return self.failure or 0

    @staticmethod
    def _status(process: Any) -> int:
        """A worker's exit status, 0 for a stop: SIGTERM/SIGINT kill a worker that has not yet
        set up its handlers for them (one still starting)."""
        return 0 if process.exitcode in _STOP_EXITS else exit_status(process.exitcode)

    def _ended(self, process: Any, running: list[Any]) -> None:
        process.join()
        code = self._status(process)
        if code != 0 and self.failure is None:
            self.failure = code
        if self.stopping:
            if code != 0:
                log.error("worker %s (pid %d) %s while stopping", process.name, process.pid,
                          _describe_exit(process.exitcode))
            return
        if code == 0:
            # Only a SIGTERM/SIGINT sent to the worker itself ends it cleanly: a stop asked of
            # the whole process group (Ctrl-C) or of that worker alone. Either way, stop all.
            log.warning("worker %s (pid %d) was stopped; stopping the other %d worker(s)",
                        process.name, process.pid, len(running))
        else:
            log.error(
                "worker %s (pid %d) %s; stopping the other %d worker(s) so the service is"
                " restarted whole", process.name, process.pid, _describe_exit(process.exitcode),
                len(running),
            )
