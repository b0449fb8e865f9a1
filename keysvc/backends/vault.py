"""Vault Transit backend: the private key never leaves Vault (or OpenBao).

Each Transit key version is one keysvc key version: `GET <mount>/keys/<key>` lists them with
their creation times and public keys, `POST <mount>/sign/<key>` signs with an explicit
`key_version` (never "latest": the ring decides which version signs), and
`POST <mount>/keys/<key>/rotate` creates a new version.

Signing coalesces: concurrent sign requests for the same version and algorithm that arrive
within `batch_window` (up to `max_batch`) are sent as one `batch_input` call, and each caller
gets its own signature or its own error back (see batching.py). The sign call goes over aiohttp
(vault_http.py); hvac only logs in and renews the token, on its own thread (vault_auth.py).

Revocation: Transit cannot delete one version in the middle of a key. `disable_version(v)` sets
the key's `min_decryption_version` (and `min_encryption_version`) to v+1, so Vault itself will
no longer sign or verify with v or any older version, and keysvc stops publishing every version
below `min_decryption_version`. It therefore revokes v *and all older versions*, and refuses to
revoke the newest version (rotate first, so something is left to sign with).
"""

from __future__ import annotations

import base64
import logging
import re
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from keysvc import jose
from keysvc.backends.base import KeyBackend, KeyVersion
from keysvc.backends.base import CreatesVersions, DisablesVersions
from keysvc.backends.batching import Coalescer, CoalescerClosed
from keysvc.backends.vault_auth import VaultAuth
from keysvc.backends.vault_http import VaultHTTP
from keysvc.backends.vault_settings import VaultSettings
from keysvc.errors import BackendError, BackendUnavailable, ConfigError
from keysvc.errors import NotFound, OperationNotSupported
from keysvc.loopback import is_loopback_url

log = logging.getLogger("keysvc.backends.vault")

SUPPORTED_KEY_TYPES = frozenset(
    {"rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256", "ecdsa-p384", "ed25519"}
)
_HASH_NAMES = {jose.Algorithm.ES384: "sha2-384"}
ROTATE_TIMEOUT = 60.0
_FRACTION = re.compile(r"(\.\d{6})\d+")

SignGroup = tuple[int, jose.Algorithm]
"""What one Transit batch call shares: the key version and the signing parameters."""


def parse_creation_time(value: str) -> datetime:
    """Vault's RFC 3339 time with nanoseconds → a UTC datetime (microsecond precision)."""
    text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_public_key(text: str) -> jose.PublicKey:
    """A Transit public key: PEM for RSA and ECDSA, raw base64 for Ed25519."""
    if text.lstrip().startswith("-----BEGIN"):
        return serialization.load_pem_public_key(text.encode())  # type: ignore[return-value]
    return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


def sign_parameters(alg: jose.Algorithm) -> dict[str, Any]:
    """The Transit sign parameters for a JWS algorithm. RSA and ECDSA sign a digest computed
    here (`prehashed`), so only 32-48 bytes per token travel to Vault; `jws` marshaling returns
    ECDSA signatures as raw r‖s, base64url, exactly as JWS wants them."""
    if alg is jose.Algorithm.EdDSA:
        return {"marshaling_algorithm": "jws"}
    params: dict[str, Any] = {
        "hash_algorithm": _HASH_NAMES.get(alg, "sha2-256"),
        "prehashed": True,
        "marshaling_algorithm": "jws",
    }
    if alg is jose.Algorithm.RS256:
        params["signature_algorithm"] = "pkcs1v15"
    elif alg is jose.Algorithm.PS256:
        params.update(signature_algorithm="pss", salt_length="hash")
    return params


def decode_signature(value: str, version: int) -> bytes:
    """`vault:v<N>:<base64url or base64>` → signature bytes, checking the version."""
    prefix = f"vault:v{version}:"
    if not value.startswith(prefix):
        raise BackendError(f"Vault signed with another key version than v{version}")
    body = value[len(prefix):]
    if "+" in body or "/" in body:
        return base64.b64decode(body + "=" * (-len(body) % 4))
    return jose.b64url_decode(body)


class VaultBackend(KeyBackend, CreatesVersions, DisablesVersions):
    Settings = VaultSettings
    settings: VaultSettings
    signature_encoding = "raw"

    def __init__(self, name: str, settings: VaultSettings) -> None:
        super().__init__(name, settings)
        self.auth = VaultAuth(settings, name)
        self.http = VaultHTTP(settings, self.auth, name)
        self.coalescer: Coalescer[SignGroup, bytes, bytes] = Coalescer(
            self._sign_batch,
            window=settings.batch_window.total_seconds(),
            max_batch=settings.max_batch,
        )
        self._keys: dict[tuple[int, str], jose.PublicKey] = {}
        self._algorithms: dict[int, frozenset[jose.Algorithm]] = {}
        """What each listed version can sign, computed once per version (sign() runs per token)."""
        self._key_path = f"{settings.mount}/keys/{settings.key}"

    def _where(self) -> str:
        return f"Transit key {self.settings.key!r} at mount {self.settings.mount!r}"

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        address = self.settings.endpoint
        if address.startswith("http://") and not is_loopback_url(address):
            log.warning("vault backend %s sends its Vault token over plain http", self.name)
        if self.settings.insecure:
            log.warning("vault backend %s does not verify Vault's TLS certificate", self.name)
        await self.http.open()
        await self.auth.start()

    async def close(self) -> None:
        await self.coalescer.close()
        await self.auth.close()
        await self.http.close()

    # -- listing ------------------------------------------------------------------------------

    async def read_key(self) -> dict[str, Any]:
        """The Transit key's description (`data` of GET <mount>/keys/<key>), type-checked."""
        try:
            body = await self.http.request("GET", self._key_path)
        except NotFound:
            raise ConfigError(
                f"backends.{self.name}: {self._where()} does not exist in Vault"
                f" (create it: vault write -f {self._key_path} type=ecdsa-p256)"
            ) from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
            raise BackendUnavailable(f"{self._where()}: unexpected answer from Vault")
        key_type = data.get("type")
        if key_type not in SUPPORTED_KEY_TYPES:
            raise ConfigError(
                f"backends.{self.name}: {self._where()} has type {key_type!r}, which no JWS"
                f" verifier accepts; use one of {', '.join(sorted(SUPPORTED_KEY_TYPES))}"
            )
        if data.get("derived"):
            raise ConfigError(
                f"backends.{self.name}: {self._where()} is a derived key (it needs a context per"
                " signature); create a key without derivation"
            )
        return data

    def _versions_from(self, data: dict[str, Any]) -> list[KeyVersion]:
        floor = max(int(data.get("min_available_version") or 0),
                    int(data.get("min_decryption_version") or 0))
        versions = []
        for number_text, entry in data["keys"].items():
            number = int(number_text)
            if number < floor or not isinstance(entry, dict):
                continue
            try:
                versions.append(self._version(number, entry))
            except (KeyError, TypeError, ValueError) as exc:
                raise BackendError(
                    f"{self._where()} version {number}: Vault's description cannot be read"
                    f" ({type(exc).__name__}: {exc})"
                ) from None
        return sorted(versions, key=lambda v: v.handle)

    def _version(self, number: int, entry: dict[str, Any]) -> KeyVersion:
        public_text = entry["public_key"]
        public_key = self._keys.get((number, public_text))
        if public_key is None:
            public_key = parse_public_key(public_text)
            self._keys[(number, public_text)] = public_key
            self._algorithms[number] = jose.algorithms_for(public_key)
        return KeyVersion(
            version_id=str(number),
            created_at=parse_creation_time(entry["creation_time"]),
            public_key=public_key,
            handle=number,
        )

    async def list_versions(self) -> list[KeyVersion]:
        return self._versions_from(await self.read_key())

    # -- signing ------------------------------------------------------------------------------

    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        number = int(version.version_id)
        allowed = self._algorithms.get(number) or jose.algorithms_for(version.public_key)
        if alg not in allowed:
            raise BackendError(
                f"{alg.value} does not fit {jose.describe_key(version.public_key)} version"
                f" {version.version_id} of {self._where()}"
            )
        data = message if alg is jose.Algorithm.EdDSA else alg.digest(message)
        return await self.sign_input(number, alg, data)

    async def sign_input(self, version: int, alg: jose.Algorithm, data: bytes) -> bytes:
        """Sign exactly the bytes Transit should see (a digest, or the message for EdDSA),
        coalesced with concurrent requests for the same version and algorithm."""
        try:
            return await self.coalescer.submit((version, alg), data)
        except CoalescerClosed:
            raise BackendUnavailable(f"backend {self.name!r} is closing") from None

    async def _sign_batch(self, group: SignGroup, inputs: list[bytes]) -> list[bytes | BaseException]:
        version, alg = group
        body = {
            **sign_parameters(alg),
            "key_version": version,
            "batch_input": [{"input": base64.b64encode(item).decode("ascii")} for item in inputs],
        }
        reply = await self.http.request("POST", f"{self.settings.mount}/sign/{self.settings.key}", body)
        results = ((reply or {}).get("data") or {}).get("batch_results")
        if not isinstance(results, list) or len(results) != len(inputs):
            raise BackendUnavailable(f"{self._where()}: Vault's batch answer does not match the request")
        out: list[bytes | BaseException] = []
        for result in results:
            if not isinstance(result, dict):
                out.append(BackendError(f"{self._where()}: malformed batch result"))
            elif result.get("error"):
                out.append(BackendError(f"{self._where()} refused to sign: {result['error']}"))
            else:
                try:
                    out.append(decode_signature(str(result.get("signature", "")), version))
                except (BackendError, ValueError) as exc:
                    out.append(exc if isinstance(exc, BackendError) else
                               BackendError(f"{self._where()}: undecodable signature"))
        return out

    # -- rotation and revocation --------------------------------------------------------------

    async def create_version(self) -> KeyVersion:
        """Transit rotate, then the new (highest) version."""
        await self.read_key()  # refuse an unsupported key type before changing anything
        # Transit generates the key inside the call: RSA-4096 can take seconds.
        await self.http.request("POST", f"{self._key_path}/rotate", timeout=ROTATE_TIMEOUT)
        versions = await self.list_versions()
        if not versions:
            raise BackendError(f"{self._where()} lists no versions after rotation")
        return versions[-1]

    async def disable_version(self, version: KeyVersion) -> None:
        """Revoke `version` and every older one (see the module docstring)."""
        number = int(version.version_id)
        data = await self.read_key()
        latest = int(data.get("latest_version") or 0)
        if number >= latest:
            raise OperationNotSupported(
                f"version {number} is the newest version of {self._where()}: rotate first, then"
                " revoke it (Transit revokes a version together with every older one)"
            )
        floor = number + 1
        config: dict[str, Any] = {"min_decryption_version": floor}
        min_encryption = int(data.get("min_encryption_version") or 0)
        if min_encryption < floor:
            config["min_encryption_version"] = floor
        await self.http.request("POST", f"{self._key_path}/config", config)
        log.warning(
            "vault backend %s: revoked versions below %d of %s", self.name, floor, self._where()
        )
