"""A backend for simulated time: versions in memory, each new one created at the time of a
clock the test moves (the key ring takes the same clock). It lists and retires versions as a
real backend would, and never signs: the tests that use it check the lifecycle, not signatures
(those are every real backend's contract, tests/contract)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from keysvc import keygen
from keysvc.backends.base import (
    BackendSettings,
    CreatesVersions,
    DisablesVersions,
    KeyBackend,
    KeyVersion,
)
from keysvc.jose import Algorithm


class Clock:
    """A clock the test sets."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class SimBackend(KeyBackend, CreatesVersions, DisablesVersions):
    Settings = BackendSettings

    def __init__(
        self, name: str, clock: Callable[[], datetime], versions: list[KeyVersion] | None = None
    ) -> None:
        super().__init__(name, BackendSettings())
        self.clock = clock
        self.versions = list(versions or [])
        self.listed = list(self.versions)
        """The versions it was given: what it held before anything was retired."""
        self.created = 0

    async def list_versions(self) -> list[KeyVersion]:
        return list(self.versions)

    async def sign(self, version: KeyVersion, alg: Algorithm, message: bytes) -> bytes:
        raise AssertionError("a simulation checks the lifecycle, not signatures")

    async def create_version(self) -> KeyVersion:
        self.created += 1
        key = keygen.generate("ec-p256").public_key()
        version = KeyVersion(f"{self.name}-v{self.created}", self.clock(), key)  # type: ignore[arg-type]
        self.versions.append(version)
        return version

    async def disable_version(self, version: KeyVersion) -> None:
        self.versions = [v for v in self.versions if v.version_id != version.version_id]
