"""Wiring: from a validated Config to backends, key ring, token issuer and authenticator.

Used by the HTTP service and by every CLI command that works on keys locally, so they all see
the same ring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from keysvc.auth import Authenticator
from keysvc.backends import KeyBackend
from keysvc.backends.base import BackendError, BackendUnavailable
from keysvc.config import Config
from keysvc.errors import ConfigError
from keysvc.keyring import Clock, KeyRing, Lifecycle, describe_unexpected, open_backend, utcnow
from keysvc.ring_events import RingWatcher
from keysvc.tokens import TokenIssuer

if TYPE_CHECKING:
    from keysvc.otf.otfd import OtfdClient

log = logging.getLogger("keysvc.service")


def build_backends(config: Config) -> list[KeyBackend]:
    """The configured backends, each table's settings validated now by its backend's own model
    (a bad one is a ConfigError naming the key: `backends[1]: path: is required`)."""
    return [table.build(index) for index, table in enumerate(config.backends)]


def build_ring(
    config: Config, backends: list[KeyBackend] | None = None, *, clock: Clock = utcnow
) -> KeyRing:
    lifecycle = Lifecycle(
        publish_lead=config.rotation.publish_lead,
        jwks_max_age=config.rotation.jwks_max_age,
        max_ttl=config.tokens.max_ttl,
    )
    return KeyRing(
        backends if backends is not None else build_backends(config),
        lifecycle,
        config.tokens.algorithm,
        sign_timeout=config.tokens.sign_timeout.total_seconds(),
        rsa_signing=config.tokens.rsa_signing,
        clock=clock,
    )


class Service:
    """Everything a running keysvc holds: config, ring, issuer, authenticator."""

    def __init__(
        self,
        config: Config,
        backends: list[KeyBackend] | None = None,
        *,
        log_ring_changes: bool = True,
        clock: Clock = utcnow,
    ) -> None:
        """`backends`: instances to use instead of the config's (an embedding program's);
        `clock`: the key lifecycle's time (a test's, to run hours of rotations in moments)."""
        self.config = config
        self.ring = build_ring(config, backends, clock=clock)
        self.watcher = RingWatcher(self.ring) if log_ring_changes else None
        """Logs each change of the ring (keysvc.ring_events); off in all workers but one."""
        self.issuer = TokenIssuer(self.ring, config.issuer, config.tokens)
        self.auth = Authenticator(config.clients)
        self.otfd = build_otfd_client(config)
        """The client of otfd for OTF's runner endpoint (keysvc.otf), when [otf] is set."""
        self._refresher: asyncio.Task[None] | None = None

    async def start(self, *, refresh_loop: bool = True) -> None:
        """Open the backends and load the ring once.

        A ConfigError (a world-readable key, a mismatched pair, an unsupported key) stops the
        start; an unreachable backend does not: the service starts unready and keeps trying."""
        await open_backends(self.ring)
        if self.otfd is not None:
            await self.otfd.start()
        errors = await self.ring.refresh(quiet=True)
        for name, exc in errors.items():
            if isinstance(exc, ConfigError):
                raise exc
            # The ring's own account: a library's raw text may carry request details.
            message = self.ring.last_errors.get(name) or f"unexpected {type(exc).__name__}"
            log.warning("backend %s not available at start: %s", name, message)
        self._check_rsa_signing()
        observe = self.watcher.observe if self.watcher is not None else None
        if observe is not None:
            observe()
        if refresh_loop:
            interval = self.config.rotation.refresh_interval.total_seconds()
            self._refresher = asyncio.create_task(
                self.ring.run(interval, observe), name="ring-refresh"
            )

    def _check_rsa_signing(self) -> None:
        """Warn when `tokens.rsa_signing = "loop"` leaves cores unused: each worker signs RSA on
        its event loop's one thread, so RS256 needs a worker per core to use them all."""
        workers = self.config.server.workers
        cores = len(os.sched_getaffinity(0))
        if self.ring.rsa_on_loop and workers < cores:
            log.warning(
                'tokens.rsa_signing = "loop" signs RSA on each worker\'s event loop, one core'
                " per worker: %d worker(s) leave %d of this machine's %d cores to other work;"
                ' set server.workers = %d, or rsa_signing = "threads"',
                workers,
                cores - workers,
                cores,
                cores,
            )

    async def stop(self) -> None:
        """Stop the refresh loop and close the backends, whatever state the loop is in."""
        refresher, self._refresher = self._refresher, None
        try:
            if refresher is not None:
                refresher.cancel()
                await asyncio.wait([refresher])  # never raises the task's own exception
                if not refresher.cancelled() and refresher.exception() is not None:
                    log.error(
                        "the key ring refresh loop had stopped: %s",
                        describe_unexpected(refresher.exception()),
                    )
        finally:
            try:
                await self.ring.close()
            finally:
                if self.otfd is not None:
                    await self.otfd.close()


def build_otfd_client(config: Config) -> OtfdClient | None:
    if config.otf is None:
        return None
    from keysvc.otf.otfd import OtfdClient

    otf = config.otf
    return OtfdClient(otf.url, otf.timeout.total_seconds(), otf.ca_file)


async def open_backends(ring: KeyRing) -> None:
    """Open every backend of the ring; one that cannot open now is left to the ring's refreshes,
    which keep retrying it, so the service starts (unready if no key is usable) instead of
    exiting. An unreachable backend keeps trying by itself (BackendUnavailable's contract); one
    whose open() failed otherwise (a plugin's bug) is opened again by each refresh, and has no
    keys in the ring until that succeeds."""
    for backend in ring.backends:
        try:
            await backend.open()
        except BackendUnavailable as exc:
            log.warning("backend %s not reachable at start: %s", backend.name, exc)
        except (ConfigError, BackendError):
            raise
        except Exception as exc:  # a plugin's bug: its text may carry request details
            log.warning("backend %s failed to open: %s", backend.name, describe_unexpected(exc))
            log.debug("backend %s failed to open", backend.name, exc_info=True)
            ring.open_later(backend)


@contextlib.asynccontextmanager
async def local_ring(
    config: Config, backends: list[KeyBackend] | None = None
) -> AsyncIterator[KeyRing]:
    """A ring for one CLI command: opened, loaded (errors raised), closed afterwards.
    `backends` as for Service: instances instead of the config's (an embedding program's)."""
    ring = build_ring(config, backends)
    try:
        for backend in ring.backends:
            await open_backend(backend)  # a plugin's bug: a one-line error, not a traceback
        await ring.refresh(raise_errors=True, quiet=True)
        yield ring
    finally:
        await ring.close()
