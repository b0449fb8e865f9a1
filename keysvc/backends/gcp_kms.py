"""GCP Cloud KMS backend: the versions of one asymmetric-signing CryptoKey.

Each ENABLED CryptoKeyVersion is one key version of the ring: its `createTime` is the version's
creation time, its public key comes from GetPublicKey (fetched once per version and kept: a
version's key pair never changes), and tokens are signed by AsymmetricSign over the SHA-256 or
SHA-384 digest of the JWS signing input. Rotation creates a CryptoKeyVersion; revocation sets one
DISABLED; destroying one schedules its destruction.

Transport: google-cloud-kms's gRPC asyncio transport (`KeyManagementServiceAsyncClient` over a
`grpc.aio` channel). It is the library's native asyncio path, so no call blocks the event loop
and no thread pool caps concurrency: one HTTP/2 connection multiplexes every concurrent
signature. The async client over REST is broken (it blocks the loop, then fails), and the sync
client in an executor would spend a thread per in-flight signature. Blocking work that remains,
loading Application Default Credentials (which may probe the GCE metadata server), runs in a
thread during `open()`; token refreshes run in gRPC's own plugin threads.

Integrity: Google documents CRC32C checks for KMS calls. keysvc sends `digest_crc32c` and checks
`verified_digest_crc32c`, `signature_crc32c`, `pem_crc32c` and the `name` echoed back; any
mismatch is an error, never a token or a published key.

For tests against a local fake, `insecure = true` drops TLS and credentials; it is refused unless
`endpoint` is a loopback address, so it cannot be pointed at Google by accident.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import urlsplit

import google.auth
import google_crc32c
import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions
from google.cloud.kms_v1 import KeyManagementServiceAsyncClient
from google.cloud.kms_v1.services.key_management_service.transports import (
    KeyManagementServiceGrpcAsyncIOTransport,
)
from google.cloud.kms_v1.types import (
    AsymmetricSignRequest,
    CreateCryptoKeyVersionRequest,
    DestroyCryptoKeyVersionRequest,
    CryptoKeyVersion,
    Digest,
    GetPublicKeyRequest,
    ListCryptoKeyVersionsRequest,
    UpdateCryptoKeyVersionRequest,
)
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from pydantic import field_validator, model_validator

from keysvc import jose
from keysvc.backends.base import BackendSettings, KeyBackend, KeyVersion
from keysvc.backends.base import CreatesVersions, DestroysVersions, DisablesVersions
from keysvc.backends.failures import Failure, lookup
from keysvc.backends.retry import RetryPolicy, time_left
from keysvc.durations import Duration
from keysvc.errors import BackendError, BackendUnavailable, ConfigError
from keysvc.errors import NotFound, PermissionDenied, Unauthenticated
from keysvc.jose import Algorithm
from keysvc.loopback import is_loopback_url
from keysvc.secrets import InsecureFileError, check_private

log = logging.getLogger(__name__)

KmsAlgorithm = CryptoKeyVersion.CryptoKeyVersionAlgorithm
State = CryptoKeyVersion.CryptoKeyVersionState

DEFAULT_ENDPOINT = "cloudkms.googleapis.com:443"
SCOPES = ("https://www.googleapis.com/auth/cloudkms",)

# KMS algorithm → the one JWS algorithm it can produce. Each KMS version is fixed to one padding
# and digest, so an RSA version is either RS256 or PS256, never both.
JWS_ALGORITHM: dict[KmsAlgorithm, Algorithm] = {
    KmsAlgorithm.RSA_SIGN_PKCS1_2048_SHA256: Algorithm.RS256,
    KmsAlgorithm.RSA_SIGN_PKCS1_3072_SHA256: Algorithm.RS256,
    KmsAlgorithm.RSA_SIGN_PKCS1_4096_SHA256: Algorithm.RS256,
    KmsAlgorithm.RSA_SIGN_PSS_2048_SHA256: Algorithm.PS256,
    KmsAlgorithm.RSA_SIGN_PSS_3072_SHA256: Algorithm.PS256,
    KmsAlgorithm.RSA_SIGN_PSS_4096_SHA256: Algorithm.PS256,
    KmsAlgorithm.EC_SIGN_P256_SHA256: Algorithm.ES256,
    KmsAlgorithm.EC_SIGN_P384_SHA384: Algorithm.ES384,
}
_RSA_BITS = re.compile(r"_(2048|3072|4096)_")
_EC_CURVE = {
    KmsAlgorithm.EC_SIGN_P256_SHA256: "secp256r1",
    KmsAlgorithm.EC_SIGN_P384_SHA384: "secp384r1",
}

_SEGMENT = r"[A-Za-z0-9_-]{1,63}"
_KEY_NAME = re.compile(
    rf"^projects/[a-z0-9.:-]+/locations/[a-z0-9-]+/keyRings/{_SEGMENT}/cryptoKeys/{_SEGMENT}$"
)

# Transient failures: retried within `retry_budget`, then reported as 503 + Retry-After.
_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.TooManyRequests,  # RESOURCE_EXHAUSTED (quota) maps here
    gexc.InternalServerError,
    gexc.Unknown,
    gexc.Aborted,
)
_UNAVAILABLE = "Cloud KMS unavailable; could not {doing} {resource} ({status})"
FAILURES: dict[type[Exception], Failure] = {
    **dict.fromkeys(_TRANSIENT, Failure(BackendUnavailable, _UNAVAILABLE, retry=True)),
    # Reported as 503 without retrying here: a slow KMS is not made faster by asking twice.
    **dict.fromkeys(
        (gexc.DeadlineExceeded, gexc.GatewayTimeout, gexc.BadGateway),
        Failure(BackendUnavailable, _UNAVAILABLE),
    ),
    gexc.PermissionDenied: Failure(
        PermissionDenied,
        "Cloud KMS denied backend {name!r} permission to {doing} {resource} ({message});"
        " grant that permission to keysvc's identity on the key",
    ),
    gexc.NotFound: Failure(NotFound, "Cloud KMS: {resource} not found ({message})"),
    gexc.Unauthenticated: Failure(
        Unauthenticated, "Cloud KMS rejected the credentials of backend {name!r} ({message})"
    ),
    gexc.GoogleAPICallError: Failure(
        BackendError, "Cloud KMS refused to {doing} {resource} ({status})"
    ),
}
"""google.api_core's exceptions (one class per gRPC status) → keysvc's errors."""

# Reconnect at least every 5 s after an outage (gRPC's default backoff grows to 120 s), so a
# replica recovers within seconds of KMS coming back.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
)

_INTEGRITY_ATTEMPTS = 2
"""Google's advice on a CRC32C mismatch: discard the response and retry a limited number of
times. A mismatch that persists is reported as unavailable."""

_T = TypeVar("_T")


class GcpKmsSettings(BackendSettings):
    key: str
    """`projects/P/locations/L/keyRings/R/cryptoKeys/K`, an ASYMMETRIC_SIGN key."""
    credentials_file: Path | None = None
    """A credentials JSON (service-account key or workload-identity-federation config), mode
    0600. Without it, Application Default Credentials are used (GKE/GCE metadata server,
    `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user credentials)."""
    endpoint: str | None = None
    """gRPC endpoint `HOST[:PORT]` (port 443 by default) instead of cloudkms.googleapis.com,
    e.g. a Private Service Connect endpoint or a regional one."""
    ca_file: Path | None = None
    """PEM roots to trust for `endpoint` instead of the system's (a TLS-inspecting proxy)."""
    insecure: bool = False
    """Plaintext gRPC with no credentials, for local fakes only: refused unless `endpoint` is a
    loopback address."""
    timeout: Duration = timedelta(seconds=5)
    """Deadline of one KMS call."""
    retry_budget: Duration = timedelta(seconds=2)
    """How long UNAVAILABLE / RESOURCE_EXHAUSTED / INTERNAL answers are retried (with backoff)
    before the caller gets 503 + Retry-After. 0 disables retries."""
    generation_timeout: Duration = timedelta(minutes=5)
    """How long rotation waits for a new version to leave PENDING_GENERATION."""

    @field_validator("key")
    @classmethod
    def _key_name(cls, value: str) -> str:
        if "/cryptoKeyVersions/" in value:
            raise ValueError(
                "must name the CryptoKey, not one version: drop '/cryptoKeyVersions/...'"
            )
        if not _KEY_NAME.fullmatch(value):
            raise ValueError(
                "must be projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY"
            )
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "://" in value or "/" in value:
            raise ValueError("must be a gRPC endpoint HOST[:PORT], not a URL")
        try:
            parts = urlsplit("//" + value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("must be HOST[:PORT] with a numeric port") from None
        if not parts.hostname:
            raise ValueError("must be HOST[:PORT]")
        return value

    @model_validator(mode="after")
    def _insecure_only_on_loopback(self) -> GcpKmsSettings:
        if not self.insecure:
            return self
        if self.endpoint is None or not is_loopback_url("//" + self.endpoint):
            raise ValueError(
                "insecure = true (no TLS, no credentials) is only for local fakes: it needs an"
                " endpoint on a loopback address such as 127.0.0.1:PORT"
            )
        if self.credentials_file is not None or self.ca_file is not None:
            raise ValueError("insecure = true sends no credentials: drop credentials_file/ca_file")
        return self

    @property
    def target(self) -> str:
        """The gRPC target, with Google's default port when none is given."""
        endpoint = self.endpoint or DEFAULT_ENDPOINT
        return endpoint if urlsplit("//" + endpoint).port else f"{endpoint}:443"


def crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


def _created_at(version: CryptoKeyVersion) -> datetime:
    t = version.create_time
    return datetime(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond, tzinfo=UTC)


def _retry_delay(exc: gexc.GoogleAPICallError) -> float | None:
    """Google's RetryInfo delay when the error carries one."""
    for detail in getattr(exc, "details", None) or ():
        if isinstance(detail, error_details_pb2.RetryInfo):
            return detail.retry_delay.seconds + detail.retry_delay.nanos / 1e9
    return None


def _short(exc: gexc.GoogleAPICallError) -> str:
    return f"{exc.grpc_status_code.name if exc.grpc_status_code else exc.code}: {exc.message}"


class GcpKmsBackend(KeyBackend, CreatesVersions, DisablesVersions, DestroysVersions):
    Settings = GcpKmsSettings
    settings: GcpKmsSettings
    signature_encoding = "der"
    scheduled = True  # DESTROY_SCHEDULED: restorable for the key's destroy_scheduled_duration

    def __init__(self, name: str, settings: GcpKmsSettings) -> None:
        super().__init__(name, settings)
        self._client: KeyManagementServiceAsyncClient | None = None
        self._public_keys: dict[str, jose.PublicKey] = {}
        self._timeout = settings.timeout.total_seconds()
        self._retry = RetryPolicy.of(settings.retry_budget)

    # -- connection -------------------------------------------------------------------------

    def _credentials(self) -> Any:
        """Load credentials (blocking: file reads, maybe the GCE metadata server)."""
        path = self.settings.credentials_file
        where = f"backends.{self.name}"
        try:
            if path is not None:
                try:
                    check_private(path, "GCP credentials file")
                except FileNotFoundError:
                    raise ConfigError(f"{where}.credentials_file: {path} does not exist") from None
                except InsecureFileError as exc:
                    raise ConfigError(f"{where}.credentials_file: {exc}") from None
                credentials, _ = google.auth.load_credentials_from_file(str(path), scopes=SCOPES)
            else:
                credentials, _ = google.auth.default(scopes=SCOPES)
        except auth_exceptions.DefaultCredentialsError as exc:
            source = f"credentials_file {path}" if path else "Application Default Credentials"
            raise ConfigError(f"{where}: cannot load {source}: {exc}") from None
        return credentials

    def _ssl_credentials(self) -> grpc.ChannelCredentials | None:
        if self.settings.ca_file is None:
            return None
        try:
            roots = self.settings.ca_file.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"backends.{self.name}.ca_file: {self.settings.ca_file}: {exc.strerror}"
            ) from None
        return grpc.ssl_channel_credentials(root_certificates=roots)

    def _transport(self, credentials: Any) -> KeyManagementServiceGrpcAsyncIOTransport:
        target = self.settings.target
        options = list(_CHANNEL_OPTIONS)
        if self.settings.insecure:
            return KeyManagementServiceGrpcAsyncIOTransport(
                host=target, channel=grpc.aio.insecure_channel(target, options=options)
            )
        ssl_credentials = self._ssl_credentials()

        def channel(host: str, **kwargs: Any) -> grpc.aio.Channel:
            kwargs["options"] = [*kwargs.get("options", ()), *options]
            if ssl_credentials is not None:
                kwargs["ssl_credentials"] = ssl_credentials
            return KeyManagementServiceGrpcAsyncIOTransport.create_channel(host, **kwargs)

        return KeyManagementServiceGrpcAsyncIOTransport(
            host=target, credentials=credentials, channel=channel, always_use_jwt_access=True
        )

    async def open(self) -> None:
        credentials = None
        if not self.settings.insecure:
            credentials = await asyncio.to_thread(self._credentials)
        # The channel binds to the running loop: create it here, on the loop, not in a thread.
        self._client = KeyManagementServiceAsyncClient(transport=self._transport(credentials))

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.transport.close()

    @property
    def client(self) -> KeyManagementServiceAsyncClient:
        if self._client is None:
            raise BackendError(f"backend {self.name!r} is not open")
        return self._client

    # -- calls and errors -------------------------------------------------------------------

    def _error(self, exc: gexc.GoogleAPICallError, doing: str, resource: str) -> BackendError:
        """Turn a google.api_core error into the backend error a client or operator sees."""
        return lookup(FAILURES, exc, default=FAILURES[gexc.GoogleAPICallError])(
            retry_after=_retry_delay(exc),
            name=self.name,
            doing=doing,
            resource=resource,
            message=exc.message,
            status=_short(exc),
        )

    async def _call(
        self, doing: str, resource: str, method: Callable[..., Awaitable[_T]], request: Any
    ) -> _T:
        """One KMS call within `timeout` (less when the caller's deadline is nearer), retried
        by the backend's RetryPolicy; api_core's own retry is off (`retry=None`)."""

        async def attempt() -> _T:
            try:
                return await method(request=request, retry=None, timeout=time_left(self._timeout))
            except gexc.GoogleAPICallError as exc:
                raise self._error(exc, doing, resource) from exc

        return await self._retry.run(attempt)

    # -- listing ----------------------------------------------------------------------------

    async def _list(self, filter_: str = "") -> list[CryptoKeyVersion]:
        key = self.settings.key
        request = ListCryptoKeyVersionsRequest(parent=key, filter=filter_, page_size=100)
        try:
            pager = await self._call(
                "list the versions of", key, self.client.list_crypto_key_versions, request
            )
            return [version async for version in pager]
        except gexc.GoogleAPICallError as exc:  # later pages
            raise self._error(exc, "list the versions of", key) from exc

    def _jws_algorithm(self, version: CryptoKeyVersion) -> Algorithm:
        try:
            return JWS_ALGORITHM[KmsAlgorithm(version.algorithm)]
        except (KeyError, ValueError):
            algorithm = getattr(version.algorithm, "name", str(version.algorithm))
            supported = ", ".join(a.name for a in JWS_ALGORITHM)
            raise BackendError(
                f"Cloud KMS version {version.name} uses {algorithm}, which keysvc cannot publish"
                f" as a JWS key; use an ASYMMETRIC_SIGN key with one of {supported}"
            ) from None

    def _check_key_matches(self, name: str, algorithm: KmsAlgorithm, key: Any) -> None:
        if isinstance(key, rsa.RSAPublicKey):
            bits = _RSA_BITS.search(algorithm.name)
            if bits and int(bits.group(1)) == key.key_size:
                return
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if _EC_CURVE.get(algorithm) == key.curve.name:
                return
        raise BackendError(
            f"Cloud KMS returned a public key for {name} that is not {algorithm.name}"
        )

    async def _public_key(self, version: CryptoKeyVersion) -> jose.PublicKey:
        name = version.name
        cached = self._public_keys.get(name)
        if cached is not None:
            return cached
        for _ in range(_INTEGRITY_ATTEMPTS):
            response = await self._call(
                "read the public key of",
                name,
                self.client.get_public_key,
                GetPublicKeyRequest(name=name),
            )
            if response.name == name and response.pem_crc32c == crc32c(response.pem.encode()):
                break
            log.warning("Cloud KMS public key of %s failed its CRC32C/name check", name)
        else:
            raise BackendUnavailable(
                f"Cloud KMS public key of {name} failed its integrity check (CRC32C)"
            )
        algorithm = KmsAlgorithm(version.algorithm)
        if KmsAlgorithm(response.algorithm) != algorithm:
            raise BackendError(f"Cloud KMS public key of {name} is not {algorithm.name}")
        try:
            key = serialization.load_pem_public_key(response.pem.encode())
        except ValueError:
            raise BackendError(f"Cloud KMS returned an unreadable public key for {name}") from None
        self._check_key_matches(name, algorithm, key)
        self._public_keys[name] = key  # type: ignore[assignment]
        return key  # type: ignore[return-value]

    async def _key_version(self, version: CryptoKeyVersion) -> KeyVersion:
        alg = self._jws_algorithm(version)
        return KeyVersion(
            version_id=version.name,
            created_at=_created_at(version),
            public_key=await self._public_key(version),
            algorithms=frozenset({alg}),
            handle=alg,
        )

    async def list_versions(self) -> list[KeyVersion]:
        # The server-side filter keeps the answer small on keys with many destroyed versions;
        # the state check below is what keysvc relies on.
        listed = await self._list(filter_="state=ENABLED")
        enabled = [v for v in listed if v.state == State.ENABLED]
        for version in enabled:
            self._jws_algorithm(version)  # refuse before any further call
        versions = await asyncio.gather(*(self._key_version(v) for v in enabled))
        return sorted(versions, key=lambda v: v.created_at)

    # -- signing ----------------------------------------------------------------------------

    async def sign(self, version: KeyVersion, alg: Algorithm, message: bytes) -> bytes:
        name = version.version_id
        if version.handle is not alg:
            raise BackendError(
                f"Cloud KMS version {name} signs {getattr(version.handle, 'value', '?')},"
                f" not {alg.value}"
            )
        digest = alg.digest(message)
        field = "sha384" if alg is Algorithm.ES384 else "sha256"
        request = AsymmetricSignRequest(
            name=name, digest=Digest(**{field: digest}), digest_crc32c=crc32c(digest)
        )
        for _ in range(_INTEGRITY_ATTEMPTS):
            response = await self._call(
                "sign with", name, self.client.asymmetric_sign, request
            )
            signature = bytes(response.signature)
            if (
                response.verified_digest_crc32c
                and response.name == name
                and response.signature_crc32c == crc32c(signature)
            ):
                return signature
            log.warning("Cloud KMS signature from %s failed its CRC32C/name check", name)
        raise BackendUnavailable(
            f"Cloud KMS signature from {name} failed its integrity check (CRC32C)"
        )

    # -- rotation and revocation ------------------------------------------------------------

    async def create_version(self) -> KeyVersion:
        key = self.settings.key
        created = await self._call(
            "create a version of",
            key,
            self.client.create_crypto_key_version,
            CreateCryptoKeyVersionRequest(parent=key, crypto_key_version=CryptoKeyVersion()),
        )
        name = created.name
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.generation_timeout.total_seconds()
        delay = 0.2
        # Asymmetric versions start PENDING_GENERATION; poll with ListCryptoKeyVersions, which
        # the service account may already call (GetCryptoKeyVersion would need one more
        # permission).
        while created.state == State.PENDING_GENERATION:
            if loop.time() + delay > deadline:
                raise BackendError(
                    f"Cloud KMS created {name} but it is still PENDING_GENERATION after"
                    f" {self.settings.generation_timeout}; keysvc publishes it once it is ENABLED,"
                    " do not rotate again"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            found = [v for v in await self._list() if v.name == name]
            if not found:
                raise BackendError(f"Cloud KMS lost the new version {name}")
            created = found[0]
        if created.state != State.ENABLED:
            raise BackendError(f"Cloud KMS version {name} ended {State(created.state).name}")
        return await self._key_version(created)

    async def disable_version(self, version: KeyVersion) -> None:
        request = UpdateCryptoKeyVersionRequest(
            crypto_key_version=CryptoKeyVersion(name=version.version_id, state=State.DISABLED),
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        )
        await self._call(
            "disable", version.version_id, self.client.update_crypto_key_version, request
        )

    async def destroy_version(self, version: KeyVersion) -> None:
        """DestroyCryptoKeyVersion: the version is DESTROY_SCHEDULED at once (no longer listed
        or usable) and its key material is destroyed after the key's
        destroy_scheduled_duration (30 days by default), until when RestoreCryptoKeyVersion
        can still undo it."""
        await self._call(
            "destroy",
            version.version_id,
            self.client.destroy_crypto_key_version,
            DestroyCryptoKeyVersionRequest(name=version.version_id),
        )
