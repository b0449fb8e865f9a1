"""Time a test moves: the key lifecycle's hours run in moments, on real servers and backends.

The key ring takes a `clock` (KeyRing, Service); a `VirtualClock` is real time plus an offset
that only the test advances, so everything the lifecycle computes from it (which key signs,
which stays published, Cache-Control as a verifier honours it) moves when the test says so. What
the clock cannot move is a backend's own stamp on a new version (OpenBao's, a KMS's): a version
created at real time t would look `offset` old at once. `stamped_by` moves each version by the
offset the clock had when the version was created, as if the backend stamped by this clock; the
backend itself, its versions and signatures stay real.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from keysvc.backends.base import CreatesVersions, KeyBackend, KeyVersion


class VirtualClock:
    """Real time plus an offset that only `advance` changes (so it never runs backwards)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> datetime:
        """The ring's clock (keysvc.keyring.Clock)."""
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        """For a verifier's cache (what time.monotonic() is to a real one)."""
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.offset += seconds


def stamped_by(clock: VirtualClock, backend: KeyBackend) -> KeyBackend:
    """`backend` (the same instance) listing each version with its creation time moved by the
    clock's offset when it was created (its `create_version`), or else when first listed: as if
    the backend stamped versions by the test's clock. Signing never reads created_at."""
    list_versions = backend.list_versions
    shifts: dict[str, timedelta] = {}

    def on_the_clock(version: KeyVersion) -> KeyVersion:
        shift = shifts.setdefault(version.version_id, timedelta(seconds=clock.offset))
        return replace(version, created_at=version.created_at + shift)

    async def listed_on_the_clock() -> list[KeyVersion]:
        return [on_the_clock(version) for version in await list_versions()]

    backend.list_versions = listed_on_the_clock  # type: ignore[method-assign]
    if isinstance(backend, CreatesVersions):
        create_version = backend.create_version

        async def created_on_the_clock() -> KeyVersion:
            return on_the_clock(await create_version())

        backend.create_version = created_on_the_clock  # type: ignore[method-assign]
    return backend
