"""Azure Key Vault backend: one Key Vault key, whose enabled versions are keysvc's key versions.

Everything goes through Microsoft's own aio clients (azure-keyvault-keys over aiohttp, credentials
from azure-identity): versions come from the key's version list, each version's public JWK is
fetched once (key material of a version never changes), signatures come from
`CryptographyClient.sign` over the JWS digest, and rotation is the key's own `rotate` operation.
Key Vault returns ECDSA signatures as raw r‖s, which is already the JWS form.

Every call is bounded in time. azure-core's retry policy is switched off (it would honour any
Retry-After a throttled vault sends, holding a signing request for as long as the vault asks);
instead the shared RetryPolicy (retry.py) retries 429 answers after their Retry-After within
`retry_budget` and the token request's deadline, and every other fault (unreachable, 5xx, too
slow) becomes `BackendUnavailable`, which the service answers with 503 and Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.policies import AsyncRetryPolicy
from azure.core.pipeline.transport import AioHttpTransport
from azure.keyvault.keys import KeyVaultKey
from azure.keyvault.keys.aio import KeyClient
from azure.keyvault.keys.crypto import SignatureAlgorithm
from azure.keyvault.keys.crypto.aio import CryptographyClient
from pydantic import Field, field_validator, model_validator

from keysvc import jose
from keysvc.backends.azure_jwk import UnsupportedAzureKey, public_key_from_jwk
from keysvc.backends.base import BackendSettings, KeyBackend, KeyVersion
from keysvc.backends.base import CreatesVersions, DisablesVersions
from keysvc.backends.failures import Failure, lookup, status_class
from keysvc.backends.retry import RetryPolicy, time_left
from keysvc.durations import Duration
from keysvc.errors import BackendError, BackendUnavailable, ConfigError
from keysvc.errors import NotFound, PermissionDenied, Unauthenticated
from keysvc.loopback import is_loopback_url
from keysvc.secrets import read_secret_file

log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRY_AFTER_PARSER = AsyncRetryPolicy()
_DEFAULT_RETRY_AFTER = 1.0

_UNREACHABLE = Failure(BackendUnavailable, "cannot reach Azure Key Vault at {vault} ({what})")
_NOT_FOUND = Failure(
    NotFound, "key {key!r} (or this version of it) does not exist in {vault} ({what})"
)
_FAILED = Failure(BackendUnavailable, "Azure Key Vault failed {what} ({detail})")
FAILURES: dict[object, Failure] = {
    TimeoutError: Failure(
        BackendUnavailable, "Azure Key Vault did not answer within {seconds:g}s ({what})"
    ),
    ServiceRequestError: _UNREACHABLE,
    ServiceResponseError: _UNREACHABLE,
    # The token endpoint (Entra ID), not the vault, refused or failed.
    ("entra", "5xx"): Failure(
        BackendUnavailable, "Entra ID failed to issue a token ({what}, HTTP {status})"
    ),
    "entra": Failure(
        Unauthenticated, "cannot get an Entra ID token for Azure Key Vault ({what}): {message}"
    ),
    429: Failure(
        BackendUnavailable,
        "Azure Key Vault is throttling requests ({what}); retry later",
        retry=True,
    ),
    401: Failure(
        Unauthenticated,
        "Azure Key Vault rejected the Entra ID token for {what} ({detail}): is the identity in"
        " the vault's tenant?",
    ),
    403: Failure(
        PermissionDenied,
        "Azure Key Vault refused {what} on key {key!r} ({detail}): the identity needs the"
        " 'Key Vault Crypto User' role (or the keys get, list and sign permissions; rotate and"
        " update to rotate and revoke), and the version must be enabled",
    ),
    404: _NOT_FOUND,
    ResourceNotFoundError: _NOT_FOUND,
    408: _FAILED,
    "5xx": _FAILED,
}
"""What azure-core raises (by class), Key Vault's HTTP status, or the token endpoint's failure
→ keysvc's errors. Looked up by status first, then by class."""
REFUSED = Failure(BackendError, "Azure Key Vault refused {what} ({detail})")


class AzureKeyVaultSettings(BackendSettings):
    endpoint: str = Field(validation_alias="vault_url")
    """The vault's URL, e.g. https://my-vault.vault.azure.net (formerly `vault_url`)."""
    key: str
    """The key's name in the vault (not its URL)."""
    tenant_id: str | None = None
    client_id: str | None = None
    """With a secret or certificate: the app registration. Otherwise the user-assigned managed
    identity or workload identity to use (DefaultAzureCredential)."""
    client_secret_file: Path | None = None
    client_certificate_path: Path | None = None
    """PEM file holding the app's certificate and its private key."""
    authority_host: str | None = None
    """Entra ID authority for sovereign clouds, e.g. https://login.microsoftonline.us."""
    ca_file: Path | None = Field(None, validation_alias="ca_cert")
    """Extra CA certificate (PEM) to trust for the vault and the authority (formerly
    `ca_cert`)."""
    timeout: Duration = timedelta(seconds=4)
    """Upper bound for one call to the vault, authentication included (and never past
    `tokens.sign_timeout`, so this backend's clearer message wins)."""
    retry_budget: Duration = Field(timedelta(seconds=2), validation_alias="throttle_budget")
    """How long one operation may wait in total on 429 Retry-After before giving up (503)
    (formerly `throttle_budget`)."""

    @field_validator("endpoint")
    @classmethod
    def _https_vault(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be the vault's https URL, e.g. https://my-vault.vault.azure.net")
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ValueError("must be the vault's URL only (the key's name goes in `key`)")
        return value.rstrip("/")

    @field_validator("key")
    @classmethod
    def _key_name(cls, value: str) -> str:
        if "/" in value:
            raise ValueError("must be the key's name (e.g. 'keysvc-signing'), not its URL")
        if not value or len(value) > 127 or not all(c.isalnum() or c == "-" for c in value):
            raise ValueError("an Azure key name is 1-127 letters, digits and dashes")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AzureKeyVaultSettings:
        if self.client_secret_file is not None and self.client_certificate_path is not None:
            raise ValueError("set client_secret_file or client_certificate_path, not both")
        if (self.client_secret_file or self.client_certificate_path) and not (
            self.tenant_id and self.client_id
        ):
            raise ValueError("a client secret or certificate needs tenant_id and client_id")
        if self.timeout <= timedelta(0):
            raise ValueError("timeout must be positive")
        return self


class AzureKeyVaultBackend(KeyBackend, CreatesVersions, DisablesVersions):
    Settings = AzureKeyVaultSettings
    settings: AzureKeyVaultSettings
    signature_encoding = "raw"

    def __init__(
        self,
        name: str,
        settings: AzureKeyVaultSettings,
        *,
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        """`credential` replaces the one the settings describe (the caller keeps ownership)."""
        super().__init__(name, settings)
        self._given_credential = credential
        self._credential: AsyncTokenCredential | None = None
        self._session: aiohttp.ClientSession | None = None
        self._client_kwargs: dict[str, Any] = {}
        self._keys: KeyClient | None = None
        self._versions: dict[str, KeyVersion] = {}
        self._signers: dict[str, CryptographyClient] = {}
        self._last_failure: str | None = None
        self._retry = RetryPolicy.of(settings.retry_budget)

    # -- connection ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._keys is not None:
            return
        s = self.settings
        _quiet_azure_loggers()
        context = ssl.create_default_context()
        if s.ca_file is not None:
            context.load_verify_locations(cafile=str(s.ca_file))
        # One aiohttp session (one TLS context, one connection pool) behind every client:
        # the key client, one CryptographyClient per version and the credential.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=True,
        )
        seconds = s.timeout.total_seconds()
        transport = AioHttpTransport(
            session=self._session,
            session_owner=False,
            connection_timeout=seconds,
            read_timeout=seconds,
        )
        self._client_kwargs = {
            "transport": transport,
            "retry_total": 0,
            # The challenge names https://vault.azure.net; the SDK checks that the vault's host is
            # under it, which only a loopback test vault cannot be.
            "verify_challenge_resource": not is_loopback_url(s.endpoint),
        }
        try:
            self._credential = self._given_credential or _credential_for(s, transport)
        except BaseException:
            await self._session.close()
            self._session = None
            raise
        self._keys = KeyClient(s.endpoint, self._credential, **self._client_kwargs)

    async def close(self) -> None:
        clients = [*self._signers.values(), *([self._keys] if self._keys else [])]
        self._signers.clear()
        self._keys = None
        for client in clients:
            await client.close()
        if self._credential is not None and self._credential is not self._given_credential:
            await self._credential.close()
        self._credential = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _key_client(self) -> KeyClient:
        if self._keys is None:
            await self.open()
        assert self._keys is not None
        return self._keys

    # -- bounded calls --------------------------------------------------------------------------

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one Key Vault operation: each try within `timeout` (less when the caller's
        deadline is nearer), a 429 tried again after the vault's Retry-After by the backend's
        RetryPolicy, as long as the waits fit in `retry_budget`."""

        async def attempt() -> T:
            seconds = time_left(self.settings.timeout.total_seconds())
            try:
                async with asyncio.timeout(seconds):
                    return await operation()
            except (AzureError, TimeoutError) as exc:
                raise self._failure(what, exc, seconds) from None

        result = await self._retry.run(attempt)
        self._last_failure = None
        return result

    def _failure(self, what: str, exc: AzureError | TimeoutError, seconds: float) -> BackendError:
        """Turn an Azure error into a message safe to show: the status and Key Vault's error
        code, never the request's token or the credential's secrets."""
        s = self.settings
        status = getattr(exc, "status_code", None)
        code = _error_code(exc) if isinstance(exc, AzureError) else None
        detail = f"HTTP {status}" + (f" {code}" if code else "")
        if isinstance(exc, TimeoutError):
            summary = f"no answer within {seconds:g}s"
        elif isinstance(exc, (ServiceRequestError, ServiceResponseError)):
            summary = type(exc).__name__
        elif status == 429:
            summary = f"throttled (429, Retry-After {_retry_after(exc):g}s)"
        else:
            # Key Vault's own message (which may name the caller's object id) goes to the
            # operator's log only; it never carries the token or the credential's secret.
            said = _first_line(_error_message(exc))
            summary = f"{detail if status else type(exc).__name__}: {said}"
        self._log_failure(what, summary)
        if isinstance(exc, ClientAuthenticationError) and not _from_vault(exc, s.endpoint):
            keys: tuple[object, ...] = (("entra", status_class(status)), "entra")
        else:
            keys = (status, status_class(status), exc)
        failure = lookup(FAILURES, *keys, default=REFUSED)
        return failure(
            retry_after=_retry_after(exc) if isinstance(exc, HttpResponseError) else None,
            what=what,
            key=s.key,
            vault=s.endpoint,
            status=status,
            detail=detail if status else type(exc).__name__,
            seconds=seconds,
            message=_first_line(getattr(exc, "message", None)),
        )

    def _log_failure(self, what: str, summary: str) -> None:
        """Warn once per kind of failure, not once per request: during an outage every signing
        request fails the same way (the metrics count them)."""
        level = logging.DEBUG if summary == self._last_failure else logging.WARNING
        self._last_failure = summary
        log.log(level, "backend %s: azure key vault %s failed: %s", self.name, what, summary)

    # -- versions -------------------------------------------------------------------------------

    async def list_versions(self) -> list[KeyVersion]:
        keys = await self._key_client()

        async def all_versions() -> list[Any]:
            return [p async for p in keys.list_properties_of_key_versions(self.settings.key)]

        listed = await self._call("list key versions", all_versions)
        if not listed:  # Key Vault answers an empty list, not 404, for a key that does not exist
            raise NotFound(
                f"key {self.settings.key!r} does not exist in {self.settings.endpoint}"
                " (create it with: az keyvault key create --kty RSA-HSM --size 2048 ...)"
            )
        await self._forget({p.version for p in listed})
        now = datetime.now(UTC)
        enabled = sorted((p for p in listed if _usable(p, now)), key=lambda p: p.created_on)
        new = [p.version for p in enabled if p.version not in self._versions]
        fetched = await asyncio.gather(
            *(
                self._call(f"get key version {v}", partial(keys.get_key, self.settings.key, v))
                for v in new
            )
        )
        for key in fetched:
            self._remember(key)
        return [self._versions[p.version] for p in enabled]

    def _remember(self, key: KeyVaultKey) -> KeyVersion:
        """Public keys of a version never change: convert each once and keep it."""
        version_id = key.properties.version
        assert version_id is not None and key.properties.created_on is not None
        where = f"backend {self.name!r}: Azure key {self.settings.key!r} version {version_id}"
        # Both are for the operator to fix in the vault: ConfigError stops a start, and a ring
        # refresh that meets one keeps its last good keys.
        try:
            public_key = public_key_from_jwk(key.key)
        except UnsupportedAzureKey as exc:
            raise ConfigError(f"{where}: {exc}") from None
        ops = key.key.key_ops
        if ops is not None and "sign" not in ops:
            raise ConfigError(
                f"{where} does not allow the sign operation (key_ops: {', '.join(ops)})"
            )
        version = KeyVersion(
            version_id=version_id,
            created_at=key.properties.created_on.astimezone(UTC),
            public_key=public_key,
            handle=key,
        )
        self._versions[version_id] = version
        return version

    async def _forget(self, keep: set[str | None]) -> None:
        """Drop cached versions (and their signing clients) not in `keep`."""
        for version_id in [v for v in self._versions if v not in keep]:
            del self._versions[version_id]
            signer = self._signers.pop(version_id, None)
            if signer is not None:
                await signer.close()

    # -- signing --------------------------------------------------------------------------------

    def _signer(self, version: KeyVersion) -> CryptographyClient:
        signer = self._signers.get(version.version_id)
        if signer is None:
            assert self._credential is not None
            key = (
                version.handle
                if isinstance(version.handle, KeyVaultKey)
                else (f"{self.settings.endpoint}/keys/{self.settings.key}/{version.version_id}")
            )
            signer = CryptographyClient(key, self._credential, **self._client_kwargs)
            self._signers[version.version_id] = signer
        return signer

    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        if alg not in jose.algorithms_for(version.public_key):
            raise BackendError(
                f"key {self.settings.key!r} version {version.version_id} cannot sign {alg.value}"
            )
        await self._key_client()
        signer = self._signer(version)
        digest = alg.digest(message)
        result = await self._call(
            f"sign with version {version.version_id}",
            lambda: signer.sign(SignatureAlgorithm(alg.value), digest),
        )
        signature = result.signature
        if alg.is_ecdsa and len(signature) != 2 * alg.ec_coordinate_size:
            raise BackendError(f"Azure Key Vault returned a malformed {alg.value} signature")
        return signature

    # -- rotation -------------------------------------------------------------------------------

    async def create_version(self) -> KeyVersion:
        keys = await self._key_client()
        key = await self._call("rotate key", lambda: keys.rotate_key(self.settings.key))
        return self._remember(key)

    async def disable_version(self, version: KeyVersion) -> None:
        keys = await self._key_client()
        await self._call(
            f"disable version {version.version_id}",
            lambda: keys.update_key_properties(
                self.settings.key, version.version_id, enabled=False
            ),
        )
        await self._forget({v for v in self._versions if v != version.version_id})


def _credential_for(s: AzureKeyVaultSettings, transport: AioHttpTransport) -> AsyncTokenCredential:
    """The azure-identity credential the settings describe: an app's secret or certificate,
    else DefaultAzureCredential (workload identity, managed identity, Azure CLI, ...)."""
    from azure.identity.aio import (
        CertificateCredential,
        ClientSecretCredential,
        DefaultAzureCredential,
    )

    kwargs: dict[str, Any] = {"transport": transport}
    if s.authority_host is not None:
        kwargs["authority"] = s.authority_host
    if s.client_secret_file is not None:
        assert s.tenant_id and s.client_id
        secret = read_secret_file(s.client_secret_file, "Azure client secret file").strip()
        if not secret:
            raise ConfigError(f"Azure client secret file {s.client_secret_file} is empty")
        return ClientSecretCredential(s.tenant_id, s.client_id, secret.decode(), **kwargs)
    if s.client_certificate_path is not None:
        assert s.tenant_id and s.client_id
        pem = read_secret_file(s.client_certificate_path, "Azure client certificate")
        try:
            return CertificateCredential(s.tenant_id, s.client_id, certificate_data=pem, **kwargs)
        except ValueError as exc:  # azure-identity's message describes the file, never its key
            raise ConfigError(
                f"Azure client certificate {s.client_certificate_path}: {_first_line(str(exc))}"
                " (a PEM file holding the certificate and its unencrypted RSA private key)"
            ) from None
    if s.client_id is not None:
        kwargs["managed_identity_client_id"] = s.client_id
        kwargs["workload_identity_client_id"] = s.client_id
    if s.tenant_id is not None:
        kwargs["workload_identity_tenant_id"] = s.tenant_id
    return DefaultAzureCredential(**kwargs)


def _usable(properties: Any, now: datetime) -> bool:
    """Enabled, and inside its not-before/expiry window: Key Vault signs with nothing else."""
    return bool(properties.enabled) and not (
        (properties.not_before is not None and properties.not_before > now)
        or (properties.expires_on is not None and properties.expires_on <= now)
    )


def _retry_after(exc: HttpResponseError) -> float:
    headers = exc.response.headers if exc.response is not None else {}
    for name, scale in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001)):
        if headers.get(name):
            try:
                return max(float(headers[name]) * scale, 0.0)
            except ValueError:
                pass
    value = headers.get("Retry-After")
    if value:
        try:
            return max(_RETRY_AFTER_PARSER.parse_retry_after(value), 0.0)
        except (ValueError, TypeError):
            pass
    return _DEFAULT_RETRY_AFTER


def _error_code(exc: AzureError) -> str | None:
    """Key Vault's `error.code` ("Forbidden", "KeyNotFound", "Throttled", ...), if any."""
    model = getattr(exc, "model", None)
    code = getattr(getattr(model, "error", None), "code", None)
    if code is None:
        code = getattr(getattr(exc, "error", None), "code", None)
    if code is None and getattr(exc, "response", None) is not None:
        try:
            body = exc.response.json()  # type: ignore[union-attr]
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        except (ValueError, AttributeError):
            code = None
    return str(code) if code else None


def _from_vault(exc: AzureError, vault_url: str) -> bool:
    """Whether the failed response came from the vault (not from the token endpoint)."""
    response = getattr(exc, "response", None)
    url = str(getattr(getattr(response, "request", None), "url", ""))
    return url.startswith(vault_url + "/keys/")


def _error_message(exc: AzureError) -> str | None:
    model = getattr(exc, "model", None)
    message = getattr(getattr(model, "error", None), "message", None)
    return str(message) if message else exc.message


def _first_line(text: str | None) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else "no details"
    return line[:300]


def _quiet_azure_loggers() -> None:
    """azure-core logs every request at INFO; keep the signing path quiet unless asked."""
    azure_logger = logging.getLogger("azure")
    if azure_logger.level == logging.NOTSET:
        azure_logger.setLevel(logging.WARNING)
