"""Running the HTTP service: one process, or `workers` processes sharing the port.

Workers are independent replicas (SO_REUSEPORT): each loads the ring itself and computes the
same lifecycle, which is exactly how separate replicas behind a load balancer behave.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
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


def app_runner(service: Any) -> web.AppRunner:
    """The aiohttp runner for `service`'s app; on stop, requests in progress get
    `server.drain_timeout` to finish."""
    from keysvc.app import create_app

    drain = service.config.server.drain_timeout.total_seconds()
    return web.AppRunner(create_app(service), handle_signals=False, shutdown_timeout=drain)


async def serve_async(
    config: Config, *, reuse_port: bool = False, ready: Any = None, log_ring_changes: bool = True
) -> None:
    from keysvc.connections import listen
    from keysvc.service import Service

    service = Service(config, log_ring_changes=log_ring_changes)
    await service.start()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, _refresh, service)
    runner = app_runner(service)
    await runner.setup()
    listener = await listen(
        runner, config, ssl_context=ssl_context(config), reuse_port=reuse_port
    )
    metrics_runner, metrics_listener = await _metrics_listener(config, reuse_port)
    # Everything loaded so far (modules, config, keys) lives as long as the process: take it out
    # of the collector's generations so full collections walk only per-request garbage.
    gc.freeze()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    try:
        await stop.wait()
    finally:
        try:
            listener.close()
            if metrics_listener is not None:
                metrics_listener.close()
                await metrics_runner.cleanup()
            await runner.cleanup()
        finally:
            await service.stop()


async def _metrics_listener(config: Config, reuse_port: bool) -> tuple[Any, Any]:
    """(runner, listener) of `server.metrics_port` (plain HTTP: metrics hold no secret, and a
    scraper inside the cluster needs no certificate), or (None, None) without one."""
    port = config.server.metrics_port
    if port is None:
        return None, None
    from keysvc.app import create_metrics_app
    from keysvc.connections import listen

    runner = web.AppRunner(create_metrics_app(), handle_signals=False)
    await runner.setup()
    return runner, await listen(runner, config, port=port, reuse_port=reuse_port)


def _refresh(service: Any) -> None:
    log.info("SIGHUP: re-reading the key backends now")
    service.ring.refresh_soon()


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM when `parent` (the supervisor) dies, however it
    dies (SIGKILL and OOM kills included), so that no worker keeps serving on its own, outside
    what systemd or Kubernetes sees as the service. Linux only (prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("cannot follow the supervisor (prctl: %s)", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # it died before the request above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(data: dict[str, Any], supervisor: int, index: int) -> None:
    die_with_parent(supervisor)
    config = parse_config(data)
    logs.configure(config.log_level)
    # Every worker computes the same ring: one logs its changes, not N copies of each line.
    _run_loop(serve_async(config, reuse_port=True, log_ring_changes=index == 0))


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
    # SIGHUP asks for a refresh of the backends, which the event loop's handler does; until it is
    # installed (starting up), and in workers started before theirs is, it is ignored rather
    # than fatal (an ignored signal stays ignored across the workers' exec).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if config.server.workers == 1:
        _run_loop(serve_async(config, ready=ready))
        return 0
    with tempfile.TemporaryDirectory(prefix="keysvc-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        context = multiprocessing.get_context("spawn")
        workers = [
            context.Process(
                target=_worker, args=(data, os.getpid(), i), name=f"keysvc-worker-{i}"
            )
            for i in range(config.server.workers)
        ]
        supervisor = _Supervisor(workers)
        signal.signal(signal.SIGTERM, supervisor.requested)
        signal.signal(signal.SIGINT, supervisor.requested)
        for process in workers:
            process.start()
        if supervisor.stopping:  # asked while starting: reach the workers started since
            supervisor.terminate()
        signal.signal(signal.SIGHUP, supervisor.forward)
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

    def forward(self, signum: int, _frame: Any) -> None:
        """A signal for the workers to act on (SIGHUP: refresh the key ring)."""
        if not self.stopping:
            log.info("%s: passing it on to %d worker(s)", signal.Signals(signum).name,
                     len(self.workers))
            self._signal(signum)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> None:
        for process in self.workers:
            if process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

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
