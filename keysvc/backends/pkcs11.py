"""PKCS#11 backend: signing keys on an HSM (or SoftHSM2), found by label.

A key version is a key pair on the token: a private key object and a public key object with the
same CKA_LABEL and CKA_ID. The ring is the keys listed in `key_labels` plus, with
`label_prefix`, every key labelled `<prefix>` or `<prefix>-...`. Rotation generates a new pair
labelled `<prefix>-<UTC creation time>` (e.g. `keysvc-20261127T145700.123456Z`); that timestamp is
the key's creation time on every replica. A key without one counts as created on its
CKA_START_DATE, and without that at the Unix epoch. Revocation relabels both objects
`<label>.revoked`: no replica lists them again and they stay on the token for the record.

Every library call runs in a thread pool as large as the session pool, never on the event loop.
See docs/backends/pkcs11.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import pkcs11
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pydantic import Field, field_validator, model_validator

from keysvc import jose, keygen
from keysvc.backends.base import BackendSettings, Capability, KeyBackend, KeyVersion, require
from keysvc.backends.base import CreatesVersions, DestroysVersions, DisablesVersions
from keysvc.backends.pkcs11_keys import (
    PUBLIC_ATTRIBUTES,
    REVOKED_SUFFIX,
    check_key_type,
    created_at_of,
    generation_for,
    key_templates,
    label_for,
    matches_prefix,
    public_key_from,
    sign_recipe,
    signable,
)
from keysvc.backends.pkcs11_library import (
    LoadedModule,
    acquire_module,
    describe_error,
    reinitialise,
    release_module,
)
from keysvc.backends.pkcs11_sessions import (
    PIN_REFUSED,
    SESSION_LOST,
    LoginLost,
    PoolClosed,
    TokenSessions,
)
from keysvc.errors import BackendError, BackendUnavailable, ConfigError
from keysvc.secrets import read_secret_file

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_KEY_TYPE: keygen.KeyType = "rsa-4096"
_RECONNECT: tuple[type[BaseException], ...] = (*SESSION_LOST, PoolClosed, LoginLost)
_PREFIX = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Pkcs11Settings(BackendSettings):
    module: Path
    """The PKCS#11 module (.so) of the HSM vendor, e.g. /usr/lib/softhsm/libsofthsm2.so."""
    token_label: str = Field(min_length=1)
    pin_file: Path | None = None
    """File holding the CKU_USER PIN (mode 0600 or stricter; surrounding whitespace ignored)."""
    pin_env: str | None = None
    """Name of the environment variable holding the PIN (instead of pin_file)."""
    key_labels: list[str] = Field(default_factory=list)
    label_prefix: str | None = None
    key_type: keygen.KeyType | None = None
    """Type of keys created by rotation; by default the type of the newest existing key."""
    sessions: int = Field(4, ge=1, le=64)
    """Sessions kept open (and threads calling the module): the most signatures in flight."""

    @field_validator("label_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None and not _PREFIX.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '.', '_', ':' or '-'")
        return value

    @field_validator("key_labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        if any(not label for label in value):
            raise ValueError("labels must not be empty")
        if len(set(value)) != len(value):
            raise ValueError("labels must be unique")
        return value

    @field_validator("pin_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError("must be the name of an environment variable (not the PIN itself)")
        return value

    @model_validator(mode="after")
    def _sources(self) -> Pkcs11Settings:
        if (self.pin_file is None) == (self.pin_env is None):
            raise ValueError("set exactly one of pin_file or pin_env")
        if not self.key_labels and self.label_prefix is None:
            raise ValueError("set key_labels, label_prefix or both")
        return self


@dataclass(frozen=True)
class KeyRef:
    """What `KeyVersion.handle` holds: enough to find the private key again in any session."""

    label: str
    key_id: bytes


class Pkcs11Backend(KeyBackend, CreatesVersions, DisablesVersions, DestroysVersions):
    Settings = Pkcs11Settings
    settings: Pkcs11Settings
    signature_encoding = "raw"  # CKM_ECDSA returns r‖s, as JWS wants it

    def __init__(self, name: str, settings: Pkcs11Settings) -> None:
        super().__init__(name, settings)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.sessions, thread_name_prefix=f"pkcs11-{name}"
        )
        self._lock = threading.Lock()
        self._module: LoadedModule | None = None
        self._sessions: TokenSessions | None = None
        self._pin_refused: str | None = None
        self._warned: set[str] = set()

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    @property
    def _token(self) -> str:
        return f"PKCS#11 token {self.settings.token_label!r}"

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )
        except RuntimeError as exc:
            if "shutdown" in str(exc):
                raise BackendUnavailable(f"backend {self.name!r} is closed") from None
            raise

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("backend %s: %s", self.name, message)

    def _read_pin(self) -> str:
        """The PIN, read at each login (so a changed PIN file needs no restart). It is kept
        nowhere else and never appears in a message."""
        where = f"backends.{self.name}"
        if self.settings.pin_file is not None:
            path = self.settings.pin_file
            data = read_secret_file(path, what="PKCS#11 PIN file")
            try:
                pin = data.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise ConfigError(f"{where}.pin_file: {path} is not UTF-8 text") from None
            if not pin:
                raise ConfigError(f"{where}.pin_file: {path} is empty")
            return pin
        assert self.settings.pin_env is not None
        pin = os.environ.get(self.settings.pin_env, "").strip()
        if not pin:
            raise ConfigError(
                f"{where}.pin_env: environment variable {self.settings.pin_env} is not set or empty"
            )
        return pin

    def _connect(self) -> TokenSessions:
        """The current connection, opening one (module, login, pool) when there is none or the
        last one broke."""
        with self._lock:
            current = self._sessions
            if current is not None and not current.broken:
                return current
            if current is not None:
                current.close()
                self._sessions = None
            if self._pin_refused is not None:
                raise ConfigError(self._pin_refused)
            pin = self._read_pin()
            if self._module is None:
                self._module = acquire_module(self.settings.module)
            try:
                sessions = self._log_in(self._module, pin)
            except BackendUnavailable:
                # A token that vanished and came back is not found again until the module is
                # initialised afresh (SoftHSM2, HSM clients): do that (rate-limited), retry once.
                if not reinitialise(self._module):
                    raise
                sessions = self._log_in(self._module, pin)
            if self.settings.key_type is not None:
                try:
                    check_key_type(
                        self.settings.key_type, sessions.mechanisms, self.settings.token_label
                    )
                except ConfigError:
                    sessions.close()
                    raise
            log.info(
                "backend %s: logged in to %s (%d sessions at most)",
                self.name,
                self._token,
                self.settings.sessions,
            )
            self._sessions = sessions
            return sessions

    def _log_in(self, module: LoadedModule, pin: str) -> TokenSessions:
        try:
            return TokenSessions(module, self.settings.token_label, pin, self.settings.sessions)
        except p11.NoSuchToken:
            raise BackendUnavailable(
                f"{self._token} is not present in module {self.settings.module}",
                retry_after=5.0,
            ) from None
        except PIN_REFUSED as exc:
            self._pin_refused = self._pin_message(exc)
            raise ConfigError(self._pin_refused) from None
        except pkcs11.PKCS11Error as exc:
            raise BackendUnavailable(
                f"{self._token}: cannot log in ({describe_error(exc)})", retry_after=5.0
            ) from None

    def _pin_message(self, exc: BaseException) -> str:
        if isinstance(exc, p11.PinLocked):
            why = "the user PIN is locked; the token's security officer must unlock it"
        elif isinstance(exc, (p11.PinExpired, p11.UserPinNotInitialized)):
            why = "the user PIN is expired or was never set; set it with the token's tools"
        else:
            why = "check the PIN source"
        return (
            f"backends.{self.name}: {self._token} refused the PIN ({type(exc).__name__}); {why}. "
            "keysvc will not try it again until restarted: tokens lock after a few wrong PINs"
        )

    def _mark_broken(self, sessions: TokenSessions) -> None:
        with self._lock:
            sessions.broken = True

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(f"{self._token} failed: {describe_error(exc)}")

    def _with_connection(self, fn: Callable[..., T], *args: Any, retry: bool = True) -> T:
        """Run `fn(sessions, *args)` on the current connection. When the token lost the session
        (an HSM client restart, a dropped idle session), reconnect and try once more if the
        operation may be repeated; a token that stays lost is unavailable (HTTP 503)."""
        attempts = 2 if retry else 1
        for attempt in range(1, attempts + 1):
            sessions = self._connect()
            try:
                return fn(sessions, *args)
            except _RECONNECT as exc:
                self._mark_broken(sessions)
                if attempt == attempts:
                    if isinstance(exc, (PoolClosed, LoginLost)):
                        raise BackendUnavailable(f"{self._token}: {exc}") from None
                    raise self._unavailable(exc) from None
                log.info(
                    "backend %s: %s lost its session (%s); reconnecting",
                    self.name,
                    self._token,
                    describe_error(exc),
                )
            except PIN_REFUSED as exc:
                raise ConfigError(self._pin_message(exc)) from None
            except TimeoutError as exc:
                raise BackendUnavailable(f"{self._token}: {exc}") from None
            except (
                p11.MechanismInvalid,
                p11.MechanismParamInvalid,
                p11.KeyTypeInconsistent,
            ) as exc:
                raise BackendError(
                    f"{self._token} refused the operation: {describe_error(exc)}"
                ) from None
            except pkcs11.PKCS11Error as exc:
                raise self._unavailable(exc) from None
        raise AssertionError("unreachable")

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Load the module and log in, so a wrong PIN, a missing module or a key type the
        token cannot make stops the start; a token not (yet) present does not."""
        await self._run(self._connect)

    def _disconnect(self) -> None:
        with self._lock:
            if self._sessions is not None:
                self._sessions.close()
                self._sessions = None
            if self._module is not None:
                release_module(self._module)
                self._module = None

    async def close(self) -> None:
        """Let running calls finish, then close every session and release the module."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self._disconnect)

    # -- listing --------------------------------------------------------------------------------

    def _wanted(self, label: str) -> bool:
        if label in self.settings.key_labels:
            return True
        prefix = self.settings.label_prefix
        return prefix is not None and matches_prefix(label, prefix)

    @staticmethod
    def _start_date(obj: Any) -> date | None:
        """CKA_START_DATE of the public key object (SoftHSM2 fails to read dates from private
        objects, and the public object is where keysvc reads everything else)."""
        try:
            value = obj[Attribute.START_DATE]
        except (ValueError, pkcs11.PKCS11Error):  # absent, or present but empty
            return None
        return value if isinstance(value, date) else None

    def _version(
        self, session: Any, private: Any, label: str, mechanisms: frozenset[Any]
    ) -> KeyVersion | None:
        key_id = bytes(private[Attribute.ID])
        query: dict[Attribute, Any] = {
            Attribute.CLASS: ObjectClass.PUBLIC_KEY,
            Attribute.LABEL: label,
        }
        if key_id:
            query[Attribute.ID] = key_id
        public_objects = list(session.get_objects(query))
        if len(public_objects) != 1:
            self._warn_once(
                f"key {label!r} skipped: {len(public_objects)} public key objects carry its "
                "label and ID (keysvc reads the public key from exactly one)"
            )
            return None
        public = public_objects[0]
        try:
            key_type = public[Attribute.KEY_TYPE]  # ValueError for a vendor-defined type
            needed = PUBLIC_ATTRIBUTES.get(key_type)
            if needed is None:
                raise ValueError(f"key type {getattr(key_type, 'name', key_type)} is not supported")
            public_key = public_key_from(
                {Attribute.KEY_TYPE: key_type, **public.get_attributes(list(needed))}
            )
        except ValueError as exc:
            self._warn_once(f"key {label!r} skipped: {exc}")
            return None
        try:
            algorithms: frozenset[jose.Algorithm] | None = signable(public_key, mechanisms)
        except jose.UnsupportedKeyError:
            algorithms = None  # the key ring refuses it with the reason
        if algorithms is not None and not algorithms:
            self._warn_once(f"key {label!r} skipped: the token offers no mechanism to sign with it")
            return None
        return KeyVersion(
            version_id=label,
            created_at=created_at_of(label, self._start_date(public)),
            public_key=public_key,
            algorithms=algorithms,
            handle=KeyRef(label, key_id),
        )

    def _list(self, sessions: TokenSessions) -> list[KeyVersion]:
        with sessions.module.calls(), sessions.pool.session() as pooled:
            session = pooled.session
            if not sessions.module.logged_in(session):
                raise LoginLost("the login was lost")
            candidates = []
            # Finish the search before reading attributes (one operation per session at a time).
            for private in list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})):
                label = private[Attribute.LABEL]
                if self._wanted(label):
                    candidates.append((label, private))
            counts = Counter(label for label, _ in candidates)
            versions = []
            for label, private in candidates:
                if counts[label] > 1:
                    self._warn_once(
                        f"key {label!r} skipped: {counts[label]} private keys carry that label"
                    )
                    continue
                version = self._version(session, private, label, sessions.mechanisms)
                if version is not None:
                    versions.append(version)
        for missing in sorted(set(self.settings.key_labels) - set(counts)):
            self._warn_once(f"key label {missing!r} (key_labels) is not on {self._token}")
        return sorted(versions, key=lambda v: (v.created_at, v.version_id))

    async def list_versions(self) -> list[KeyVersion]:
        return await self._run(self._with_connection, self._list)

    # -- signing --------------------------------------------------------------------------------

    def _private_key(self, sessions: TokenSessions, session: Any, ref: KeyRef) -> Any:
        try:
            return session.get_key(ObjectClass.PRIVATE_KEY, label=ref.label, id=ref.key_id or None)
        except p11.NoSuchKey:
            if not sessions.module.logged_in(session):
                raise LoginLost("the login was lost") from None
            raise BackendUnavailable(
                f"key {ref.label!r} is no longer on {self._token} (revoked elsewhere?)"
            ) from None
        except p11.MultipleObjectsReturned:
            raise BackendError(
                f"several private keys on {self._token} match {ref.label!r}"
            ) from None

    def _ref(self, version: KeyVersion) -> KeyRef:
        if not isinstance(version.handle, KeyRef):
            raise BackendError(
                f"key version {version.version_id!r} is not from backend {self.name!r}"
            )
        return version.handle

    def _sign(
        self, sessions: TokenSessions, ref: KeyRef, alg: jose.Algorithm, message: bytes
    ) -> bytes:
        recipe = sign_recipe(alg, sessions.mechanisms)
        if recipe is None:
            raise BackendError(f"{self._token} offers no mechanism for {alg.value}")
        with sessions.module.calls(), sessions.pool.session() as pooled:
            key = pooled.keys.get(ref.label)
            if key is None:
                key = pooled.keys[ref.label] = self._private_key(sessions, pooled.session, ref)
            signature = key.sign(
                recipe.data(alg, message), mechanism=recipe.mechanism, mechanism_param=recipe.param
            )
        if alg.is_ecdsa and len(signature) != 2 * alg.ec_coordinate_size:
            raise BackendError(f"{self._token} returned a malformed {alg.value} signature")
        return bytes(signature)

    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        ref = self._ref(version)
        return await self._run(self._with_connection, self._sign, ref, alg, message)

    # -- rotation and revocation ----------------------------------------------------------------

    def limitation(self, capability: Capability) -> str | None:
        if capability is CreatesVersions and self.settings.label_prefix is None:
            return (
                "it lists its keys by key_labels only; set label_prefix so that rotation can"
                " name new keys (and find them again)"
            )
        return None

    def _create(self, sessions: TokenSessions) -> KeyVersion:
        require(self, CreatesVersions)
        prefix = self.settings.label_prefix
        assert prefix is not None
        key_type = self.settings.key_type
        if key_type is None:
            existing = self._list(sessions)
            key_type = keygen.key_type_of(existing[-1].public_key) if existing else DEFAULT_KEY_TYPE
        check_key_type(key_type, sessions.mechanisms, self.settings.token_label)
        created = datetime.now(UTC)
        label = label_for(prefix, created)
        key_id = os.urandom(16)
        generation = generation_for(key_type)
        public_template, private_template = key_templates(label, key_id, created)
        options: dict[str, Any] = {
            "store": True,
            "label": label,
            "id": key_id,
            "capabilities": MechanismFlag.SIGN | MechanismFlag.VERIFY,
            "mechanism": generation.mechanism,
            "public_template": public_template,
            "private_template": private_template,
        }
        with sessions.module.calls(), sessions.read_write() as session:
            if generation.key_type == KeyType.RSA:
                public, _ = session.generate_keypair(KeyType.RSA, generation.bits, **options)
            else:
                params = session.create_domain_parameters(
                    generation.key_type, {Attribute.EC_PARAMS: generation.ec_params}, local=True
                )
                public, _ = params.generate_keypair(**options)
            key_type_attr = public[Attribute.KEY_TYPE]
            attrs = public.get_attributes(list(PUBLIC_ATTRIBUTES[key_type_attr]))
        public_key = public_key_from({Attribute.KEY_TYPE: key_type_attr, **attrs})
        log.info("backend %s: generated %s key %s on %s", self.name, key_type, label, self._token)
        return KeyVersion(
            version_id=label,
            created_at=created_at_of(label, None),
            public_key=public_key,
            algorithms=signable(public_key, sessions.mechanisms),
            handle=KeyRef(label, key_id),
        )

    async def create_version(self) -> KeyVersion:
        """Generate a new key pair on the token (not retried: a generation that failed halfway
        must not leave two keys)."""
        return await self._run(self._with_connection, self._create, retry=False)

    def _key_objects(self, session: Any, ref: KeyRef) -> list[Any]:
        """The private and public key objects of `ref` (a BackendError when there are none)."""
        query: dict[Attribute, Any] = {Attribute.LABEL: ref.label}
        if ref.key_id:
            query[Attribute.ID] = ref.key_id
        objects = [
            obj
            for obj in session.get_objects(query)
            if obj[Attribute.CLASS] in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY)
        ]
        if not objects:
            raise BackendError(f"key {ref.label!r} is not on {self._token}")
        return objects

    def _disable(self, sessions: TokenSessions, ref: KeyRef) -> None:
        with sessions.module.calls(), sessions.read_write() as session:
            objects = self._key_objects(session, ref)
            try:
                for obj in objects:
                    obj[Attribute.LABEL] = ref.label + REVOKED_SUFFIX
            except p11.AttributeReadOnly as exc:
                raise BackendError(
                    f"{self._token} does not let keysvc relabel {ref.label!r} "
                    f"({type(exc).__name__}); destroy the key with the token's own tools"
                ) from None
        log.warning(
            "backend %s: revoked key %s (relabelled %s%s)",
            self.name,
            ref.label,
            ref.label,
            REVOKED_SUFFIX,
        )

    def _destroy(self, sessions: TokenSessions, ref: KeyRef) -> None:
        with sessions.module.calls(), sessions.read_write() as session:
            for obj in self._key_objects(session, ref):
                obj.destroy()
        log.warning("backend %s: destroyed key %s on %s", self.name, ref.label, self._token)

    async def disable_version(self, version: KeyVersion) -> None:
        """Relabel the key pair `<label>.revoked`: never listed again by any replica, still on
        the token for the incident record (destroy it with the token's tools when done)."""
        ref = self._ref(version)
        await self._run(self._with_connection, self._disable, ref, retry=False)

    async def destroy_version(self, version: KeyVersion) -> None:
        """C_DestroyObject on the key pair: gone from the token for good."""
        ref = self._ref(version)
        await self._run(self._with_connection, self._destroy, ref, retry=False)
