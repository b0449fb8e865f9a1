"""The narrow interface every key backend implements.

A backend knows how to list the versions of its key(s) and sign bytes with one version. It knows
nothing of HTTP, the CLI, JWKs or lifecycles: the key ring turns versions into published and
signing keys, and the JOSE layer turns public keys and signatures into their JWS form. That split
is what lets one small module per backend carry all the cloud-specific code.

What a backend can do beyond listing and signing it declares by inheriting a capability:
`CreatesVersions` (rotation), `DisablesVersions` (revocation), `DestroysVersions` (deleting key
material for good). A backend that lacks one simply does not inherit it, so the CLI can say
"backend X cannot rotate" before it tries, instead of catching a stub's exception. Where a
capability depends on the configuration (a single key file cannot rotate), `limitation()` says
why; `refusal()` turns both into the operator's one-line message.

keysvc/backends/memory.py is the smallest complete backend, and the reference for authors of
new ones; keysvc/testing/backend_contract.py is the contract every backend must pass.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from keysvc.errors import (
    BackendError,
    BackendUnavailable,
    NotFound,
    OperationNotSupported,
    PermissionDenied,
    Unauthenticated,
)
from keysvc.jose import Algorithm, PublicKey

__all__ = [
    "BackendError",
    "BackendSettings",
    "BackendUnavailable",
    "Capability",
    "CreatesVersions",
    "DestroysVersions",
    "DisablesVersions",
    "ListsDisabledVersions",
    "KeyBackend",
    "KeyVersion",
    "NotFound",
    "OperationNotSupported",
    "PermissionDenied",
    "Unauthenticated",
    "refusal",
    "require",
]


class BackendSettings(BaseModel):
    """Base for each backend's own settings (the keys of its `[[backends]]` table after `name`
    and `type`). Unknown keys are refused so that a typo names itself at start.

    A setting that was renamed keeps its former name as an accepted spelling: declare it with
    `Field(validation_alias="former_name")`. Both spellings at once are refused, naming both."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, info in cls.model_fields.items():
                former = info.validation_alias
                if isinstance(former, str) and name in data and former in data:
                    raise ValueError(f"set {name} or its former name {former}, not both")
        return data


@dataclass(frozen=True)
class KeyVersion:
    """One signing key version as its backend reports it.

    `version_id` is whatever the backend needs to address the version again (a file name, a
    Vault version number, a KMS resource name). `created_at` is the backend's own creation time
    (time-zoned) and the only input, with the config, to the key's lifecycle, so every replica
    agrees. `algorithms` narrows what the version may sign with (a KMS key fixed to PSS, say);
    None means every algorithm that fits the key type. `handle` is backend-private (a loaded
    private key, a PKCS#11 object handle) and never shown.
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

    Failures are keysvc's typed errors (keysvc.errors): BackendUnavailable, with a retry hint,
    for anything a retry may cure (the service answers 503 + Retry-After and keeps serving the
    last good JWKS); NotFound, PermissionDenied, Unauthenticated or BackendError otherwise;
    ConfigError for what only the operator can fix. Messages never carry secrets.
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
        """True when `version`'s private key is in this process and `sign_now` signs with it on
        the caller's thread, with no I/O or one-time preparation to wait for (a key loaded from
        a file or held in memory; asked per signature, so a key can become ready, as a file key
        does once checked). The key ring then decides when and where to call it: microsecond
        signatures (EC, Ed25519) in a batch with the others of the same event-loop iteration,
        without a timer; RSA's milliseconds by `tokens.rsa_signing`, queued on the loop one per
        iteration ("loop", keysvc/loop_signer.py) or through `sign` ("threads": the backend
        signs in a thread of its own, so `sign` must never sign RSA on the caller's thread).
        Otherwise (a KMS, an HSM, a key not ready yet) the ring awaits `sign` under its sign
        timeout. Optional: by default nothing signs at once.

        Why: a signature that cannot wait needs no timer (arming one per token cost a quarter
        of an ES256 signature), signatures made back to back find OpenSSL's tables in the
        caches, and RSA signed on the loop saves the thread hand-off."""
        return False

    def sign_now(self, version: KeyVersion, alg: Algorithm, message: bytes) -> bytes:
        """Sign on the caller's thread; called only when `signs_at_once` is True."""
        raise OperationNotSupported(f"backend {self.name!r} does not sign at once")

    def limitation(self, capability: Capability) -> str | None:
        """Why this backend, as configured, cannot do what `capability` promises after all (a
        single key file cannot rotate); None when it can. Optional: by default no limitation."""
        return None

    async def close(self) -> None:
        """Release connections, sessions and executors. Calling it twice is harmless."""


# -- capabilities ------------------------------------------------------------------------------


class CreatesVersions(abc.ABC):
    """Capability: the backend creates new key versions (`keysvc keys rotate`)."""

    verb: ClassVar[str] = "rotate"

    @abc.abstractmethod
    async def create_version(self) -> KeyVersion:
        """Create a new key version and return it as `list_versions` will list it."""

    def rotation_lock(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held around "is the newest version old enough? then create one" (`keys rotate
        --if-older-than`), so that rotations started at once (two CronJob pods, a retry) create
        at most one version. Optional: by default nothing is held, and two rotations that both
        list the backend before either creates may both create; the extra version is harmless
        (docs/runbooks/rotation.md says why). The file backend locks a file in its directory."""
        return contextlib.nullcontext()


class DisablesVersions(abc.ABC):
    """Capability: the backend stops a version from being listed again, keeping its key
    material where it can (`keysvc keys revoke`, an emergency; `keys prune`)."""

    verb: ClassVar[str] = "revoke"

    @abc.abstractmethod
    async def disable_version(self, version: KeyVersion) -> None:
        """Disable `version`: no replica lists it again."""


class ListsDisabledVersions(abc.ABC):
    """Capability: the backend lists the versions it disabled and still keeps (revoked or
    pruned), so that `keysvc keys list --all` can name them for an operator to destroy."""

    verb: ClassVar[str] = "list the disabled versions of"

    @abc.abstractmethod
    async def list_disabled_versions(self) -> list[KeyVersion]:
        """Every disabled version still held, with its public key (never used to sign)."""


class DestroysVersions(abc.ABC):
    """Capability: the backend deletes one version's key material for good (after the
    backend's own grace period where it has one). Declared only where a single version can
    really be destroyed."""

    verb: ClassVar[str] = "destroy"
    scheduled: ClassVar[bool] = False
    """True when `destroy_version` schedules the destruction after a grace period in which the
    backend's own tools can still cancel it (Cloud KMS's DESTROY_SCHEDULED, AWS KMS's
    PendingDeletion); False when the key material is gone at once (a file, an HSM object).
    `keys prune` schedules destruction by itself, and destroys at once only when asked."""

    @abc.abstractmethod
    async def destroy_version(self, version: KeyVersion) -> None:
        """Destroy `version`'s key material (once the backend's grace period, if any, has
        passed; a KMS schedules it): it is never listed again."""


Capability = (
    type[CreatesVersions]
    | type[DisablesVersions]
    | type[DestroysVersions]
    | type[ListsDisabledVersions]
)


def refusal(backend: KeyBackend, capability: Capability) -> str | None:
    """None when `backend` can do what `capability` promises; otherwise the operator's one-line
    reason, "backend 'x' cannot rotate: ...", which the CLI prints instead of trying."""
    if not isinstance(backend, capability):
        return (
            f"backend {backend.name!r} cannot {capability.verb}: {type(backend).__name__} has"
            f" no {capability.__name__} capability"
        )
    why = backend.limitation(capability)
    return f"backend {backend.name!r} cannot {capability.verb}: {why}" if why else None


def require(backend: KeyBackend, capability: Capability) -> None:
    """Raise OperationNotSupported with `refusal`'s reason when the backend cannot do it: what a
    capability's method calls first when the configuration may forbid it."""
    why = refusal(backend, capability)
    if why is not None:
        raise OperationNotSupported(why)
