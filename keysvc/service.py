"""Wiring: from a validated Config to backends, key ring, token issuer and authenticator.

Used by the HTTP service and by every CLI command that works on keys locally, so they all see
the same ring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from keysvc.auth import Authenticator
from keysvc.backends import KeyBackend, load_backend_class
from keysvc.backends.base import BackendUnavailable
from keysvc.config import Config
from keysvc.errors import ConfigError
from keysvc.keyring import KeyRing, Lifecycle
from keysvc.tokens import TokenIssuer

log = logging.getLogger("keysvc.service")


def build_backends(config: Config) -> list[KeyBackend]:
    return [load_backend_class(b.type)(b.name, b.settings) for b in config.backends]


def build_ring(config: Config, backends: list[KeyBackend] | None = None) -> KeyRing:
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
    )


class Service:
    """Everything a running keysvc holds: config, ring, issuer, authenticator."""

    def __init__(self, config: Config, backends: list[KeyBackend] | None = None) -> None:
        self.config = config
        self.ring = build_ring(config, backends)
        self.issuer = TokenIssuer(self.ring, config.issuer, config.tokens)
        self.auth = Authenticator(config.clients)
        self._refresher: asyncio.Task[None] | None = None

    async def start(self, *, refresh_loop: bool = True) -> None:
        """Open the backends and load the ring once.

        A ConfigError (a world-readable key, a mismatched pair, an unsupported key) stops the
        start; an unreachable backend does not: the service starts unready and keeps trying."""
        await open_backends(self.ring.backends)
        errors = await self.ring.refresh(quiet=True)
        for name, exc in errors.items():
            if isinstance(exc, ConfigError):
                raise exc
            log.warning("backend %s not available at start: %s", name, exc)
        if refresh_loop:
            interval = self.config.rotation.refresh_interval.total_seconds()
            self._refresher = asyncio.create_task(self.ring.run(interval), name="ring-refresh")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.ring.close()


async def open_backends(backends: list[KeyBackend]) -> None:
    for backend in backends:
        try:
            await backend.open()
        except BackendUnavailable as exc:
            log.warning("backend %s not reachable at start: %s", backend.name, exc)


@contextlib.asynccontextmanager
async def local_ring(config: Config) -> AsyncIterator[KeyRing]:
    """A ring for one CLI command: opened, loaded (errors raised), closed afterwards."""
    ring = build_ring(config)
    try:
        for backend in ring.backends:
            await backend.open()
        await ring.refresh(raise_errors=True, quiet=True)
        yield ring
    finally:
        await ring.close()
