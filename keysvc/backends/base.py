"""The narrow interface every key backend implements.

A backend knows how to list the versions of its key(s), sign bytes with one version and create a
new version. It knows nothing of HTTP, the CLI, JWKs or lifecycles: the key ring turns versions
into published and signing keys, and the JOSE layer turns public keys and signatures into their
JWS form. That split is what lets one small module per backend carry all the cloud-specific code.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from keysvc.errors import BackendError, BackendUnavailable, OperationNotSupported
from keysvc.jose import Algorithm, PublicKey

__all__ = [
    "BackendError",
    "BackendSettings",
    "BackendUnavailable",
    "KeyBackend",
    "KeyVersion",
    "OperationNotSupported",
]


class BackendSettings(BaseModel):
    """Base for each backend's own settings (the keys of its `[[backends]]` table after `name`
    and `type`). Unknown keys are refused so that a typo names itself at start."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class KeyVersion:
    """One signing key version as its backend reports it.

    `version_id` is whatever the backend needs to address the version again (a file name, a
    Vault version number, a KMS resource name). `created_at` is the backend's own creation time
    and the only input, with the config, to the key's lifecycle, so every replica agrees.
    `algorithms` narrows what the version may sign with (a KMS key fixed to PSS, say); None means
    every algorithm that fits the key type. `handle` is backend-private (a loaded private key,
    a PKCS#11 object handle) and never shown.
    """

    version_id: str
    created_at: datetime
    public_key: PublicKey
    algorithms: frozenset[Algorithm] | None = None
    handle: Any = field(default=None, repr=False, compare=False)


class KeyBackend(abc.ABC):
    """Base class of all key backends.

    Subclasses set `Settings` to their pydantic settings model and implement the abstract
    methods. Construction must not do I/O; `open()` may (and is awaited once before use).
    Signatures are returned in `signature_encoding`: "raw" (JWS form: r‖s for ECDSA) or "der"
    (ASN.1 DER for ECDSA, as most KMSs return it); the key ring converts DER once, generically.
    """

    Settings: ClassVar[type[BackendSettings]]
    signature_encoding: ClassVar[Literal["raw", "der"]] = "raw"

    def __init__(self, name: str, settings: BackendSettings) -> None:
        self.name = name
        self.settings = settings

    async def open(self) -> None:
        """Connect and authenticate, before the first other call. A remote that cannot be
        reached now raises BackendUnavailable (and the backend keeps trying by itself); a
        ConfigError or BackendError stops the start. Anything else raised here leaves the
        backend without keys in the ring, and the ring calls open() again at each refresh
        until it returns."""

    @abc.abstractmethod
    async def list_versions(self) -> list[KeyVersion]:
        """Every version that may be published now (enabled, not destroyed or revoked)."""

    @abc.abstractmethod
    async def sign(self, version: KeyVersion, alg: Algorithm, message: bytes) -> bytes:
        """Sign a JWS signing input with exactly this version (never 'the latest')."""

    def signs_at_once(self, version: KeyVersion, alg: Algorithm) -> bool:
        """True when signing with `version` takes microseconds on the caller's thread (an
        in-process EC or Ed25519 key): the ring then calls `sign_now`, in a batch with the other
        signatures of the same event-loop iteration and without a timer. Otherwise (I/O, a
        thread, an RSA key's milliseconds) it awaits `sign` under its sign timeout. Optional: by
        default nothing signs at once.

        Why: a signature that cannot wait needs no timer (arming one per token cost a quarter
        of an ES256 signature), and signatures made back to back find OpenSSL's tables in the
        caches (keysvc/sign_batch.py)."""
        return False

    def sign_now(self, version: KeyVersion, alg: Algorithm, message: bytes) -> bytes:
        """Sign at once on the caller's thread; called only when `signs_at_once` is True."""
        raise OperationNotSupported(f"backend {self.name!r} does not sign at once")

    @abc.abstractmethod
    async def create_version(self) -> KeyVersion:
        """Create a new key version (rotation) and return it."""

    async def disable_version(self, version: KeyVersion) -> None:
        """Stop a version from being listed again (emergency revocation)."""
        raise OperationNotSupported(f"backend {self.name!r} cannot revoke key versions")

    async def close(self) -> None:
        """Release connections, sessions and executors."""
