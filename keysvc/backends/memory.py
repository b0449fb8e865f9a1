"""Memory backend: key versions held in this process. For demos, tests, and as the reference
for authors of new backends.

    [[backends]]
    name = "demo"
    type = "memory"
    key_type = "ec-p256"  # of versions made on demand: rsa-2048..4096, ec-p256, ec-p384, ed25519

It is the smallest backend that does everything a backend may do, so it reads as a checklist:
- settings are a pydantic model (`MemorySettings`); unknown keys are refused;
- `open()` is where I/O would happen (here: the first version is created on demand);
- `list_versions()` returns every usable version, each with a time-zoned creation time;
- `sign()` signs with exactly the version asked for, in the declared `signature_encoding`;
- capabilities are declared by inheritance (`CreatesVersions`, `DisablesVersions`,
  `DestroysVersions`), never as methods that raise;
- failures are keysvc's typed errors: an outage is `BackendUnavailable` with a retry hint,
  a version that is gone is `NotFound`.
It passes keysvc.testing.backend_contract like every other backend (tests/contract).

Keys live as long as the process: every replica and every restart has keys of its own, so
tokens do not verify across them. Never use it where that matters. Backends that name the
same `store` share their keys within the process (two "replicas" in one test), and a store can
simulate an outage (`MemoryStore.fail`) to show what a 503 and a recovery look like.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import Field

from keysvc import jose, keygen
from keysvc.backends.base import BackendSettings, KeyBackend, KeyVersion
from keysvc.backends.base import CreatesVersions, DestroysVersions, DisablesVersions
from keysvc.errors import BackendError, BackendUnavailable, NotFound


class MemorySettings(BackendSettings):
    key_type: keygen.KeyType = "ec-p256"
    """Type of the versions created on demand (the first one, and each rotation)."""
    initial_versions: int = Field(1, ge=0, le=16)
    """Versions created when the backend first finds its store empty: 1 signs at once."""
    store: str | None = None
    """Share keys with every memory backend of this process naming the same store; by default
    each backend has a store of its own."""


@dataclass
class _Entry:
    version: KeyVersion
    private_key: jose.PrivateKey = field(repr=False)
    enabled: bool = True


class MemoryStore:
    """The key versions of one or more memory backends, and a switch to simulate an outage."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self._entries: dict[str, _Entry] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self.seeded = False
        """Whether versions were ever added (the initial versions are created once)."""
        self._outage: BackendUnavailable | None = None

    # -- simulated outage -------------------------------------------------------------------

    def fail(self, retry_after: float = 1.0) -> None:
        """Every call on this store raises BackendUnavailable until `recover()`."""
        self._outage = BackendUnavailable(
            f"memory store {self.name or '(private)'} is unavailable (simulated outage)",
            retry_after=retry_after,
        )

    def recover(self) -> None:
        self._outage = None

    def check(self) -> None:
        if self._outage is not None:
            raise BackendUnavailable(str(self._outage), self._outage.retry_after)

    # -- versions ---------------------------------------------------------------------------

    def add(
        self,
        key_type: keygen.KeyType = "ec-p256",
        created_at: datetime | None = None,
        private_key: jose.PrivateKey | None = None,
    ) -> KeyVersion:
        """Add a version (a new key of `key_type`, or `private_key`), created now unless
        `created_at` says otherwise (taken as given: a test may hand the ring a bad time)."""
        key = private_key if private_key is not None else keygen.generate(key_type)
        with self._lock:
            version = KeyVersion(
                version_id=f"v{next(self._numbers)}",
                created_at=created_at or datetime.now(UTC),
                public_key=key.public_key(),
            )
            self._entries[version.version_id] = _Entry(version, key)
            self.seeded = True
        return version

    def enabled(self) -> list[KeyVersion]:
        with self._lock:
            return [e.version for e in self._entries.values() if e.enabled]

    def entry(self, version_id: str) -> _Entry:
        entry = self._entries.get(version_id)
        if entry is None or not entry.enabled:
            state = "destroyed" if entry is None else "disabled"
            raise NotFound(f"memory key version {version_id} does not exist or is {state}")
        return entry

    def disable(self, version_id: str) -> None:
        with self._lock:
            self.entry(version_id).enabled = False

    def destroy(self, version_id: str) -> None:
        with self._lock:
            self.entry(version_id)
            del self._entries[version_id]


_shared: weakref.WeakValueDictionary[str, MemoryStore] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def shared_store(name: str) -> MemoryStore:
    """The store called `name` in this process (created on first use, dropped with its last
    user)."""
    with _shared_lock:
        store = _shared.get(name)
        if store is None:
            store = _shared[name] = MemoryStore(name)
        return store


class MemoryBackend(KeyBackend, CreatesVersions, DisablesVersions, DestroysVersions):
    """Key versions in this process's memory (see the module docstring)."""

    Settings = MemorySettings
    settings: MemorySettings
    signature_encoding = "raw"  # jose.sign_local returns the JWS form (r‖s for ECDSA)

    def __init__(self, name: str, settings: MemorySettings) -> None:
        super().__init__(name, settings)
        self.store = shared_store(settings.store) if settings.store else MemoryStore()

    def _seed(self) -> None:
        """Versions on demand: the first call that finds the store never used fills it."""
        store = self.store
        if not store.seeded:
            for _ in range(self.settings.initial_versions):
                store.add(self.settings.key_type)
            store.seeded = True

    async def open(self) -> None:
        self.store.check()
        self._seed()

    async def list_versions(self) -> list[KeyVersion]:
        self.store.check()
        self._seed()
        return self.store.enabled()

    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        self.store.check()
        entry = self.store.entry(version.version_id)
        if entry.version.public_key is not version.public_key:
            raise NotFound(f"key version {version.version_id} is not from backend {self.name!r}")
        if alg not in jose.algorithms_for(version.public_key):
            raise BackendError(
                f"{alg.value} does not fit {jose.describe_key(version.public_key)}"
                f" version {version.version_id}"
            )
        # RSA takes a millisecond on the event loop: acceptable for demos and tests. A backend
        # that signs locally in production moves it to a thread (see file.py).
        return jose.sign_local(entry.private_key, alg, message)

    async def create_version(self) -> KeyVersion:
        self.store.check()
        return self.store.add(self.settings.key_type)

    async def disable_version(self, version: KeyVersion) -> None:
        self.store.check()
        self.store.disable(version.version_id)

    async def destroy_version(self, version: KeyVersion) -> None:
        self.store.check()
        self.store.destroy(version.version_id)
