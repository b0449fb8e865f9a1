"""A third-party backend for testing the key ring: the memory backend (the reference for plugin
authors) with whatever versions, errors, delays or signature bytes a test sets. It is what a
plugin registered in the `keysvc.backends` entry-point group looks like to the ring."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from typing import Any

from keysvc import jose
from keysvc.backends.base import KeyVersion
from keysvc.backends.memory import MemoryBackend, MemorySettings

_REAL = object()


class PluginBackend(MemoryBackend):
    def __init__(self, name: str = "plugin", encoding: str = "raw") -> None:
        super().__init__(name, MemorySettings(initial_versions=0))
        self.signature_encoding = encoding  # type: ignore[misc]
        self.amended: dict[str, KeyVersion] = {}
        self.list_error: Exception | None = None
        self.list_delay = 0.0
        """Seconds list_versions() takes (a hung backend: far longer than the list timeout)."""
        self.signature: Any = _REAL
        """Bytes sign() returns instead of a real signature, when set."""
        self.sign_error: Exception | None = None
        self.close_error: Exception | None = None
        self.closed = False

    def add(
        self,
        created_at: datetime,
        key_type: str = "ec-p256",
        *,
        private_key: jose.PrivateKey | None = None,
        algorithms: frozenset[jose.Algorithm] | None = None,
    ) -> KeyVersion:
        version = self.store.add(key_type, created_at, private_key)  # type: ignore[arg-type]
        return version if algorithms is None else self.amend(version, algorithms=algorithms)

    def amend(self, version: KeyVersion, **changes: Any) -> KeyVersion:
        """From now on, list `version` with these fields changed (what a backend reports about a
        version can change: a creation time corrected, an algorithm restriction)."""
        amended = dataclasses.replace(version, **changes)
        self.amended[version.version_id] = amended
        return amended

    def private_key(self, version: KeyVersion) -> jose.PrivateKey:
        return self.store.entry(version.version_id).private_key

    async def list_versions(self) -> list[KeyVersion]:
        if self.list_delay:
            await asyncio.sleep(self.list_delay)
        if self.list_error is not None:
            raise self.list_error
        return [self.amended.get(v.version_id, v) for v in await super().list_versions()]

    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        if self.sign_error is not None:
            raise self.sign_error
        if self.signature is not _REAL:
            return self.signature
        signature = await super().sign(version, alg, message)
        if self.signature_encoding == "der" and alg.is_ecdsa:
            return jose.raw_to_der(signature)
        return signature

    async def close(self) -> None:
        self.closed = True
        await super().close()
        if self.close_error is not None:
            raise self.close_error
