"""A small, faithful Cloud KMS fake for tests: the real google-cloud-kms client talks to it.

No Cloud KMS emulator exists, so this is a `grpc.aio` server speaking the real wire protocol of
`google.cloud.kms.v1.KeyManagementService` over HTTP/2: generic method handlers decode requests
with the library's own request types (`deserialize`) and encode answers with its response types
(`serialize`), so whatever the client sends and parses is exactly what Google's servers see.

It holds real key pairs (cryptography), signs for real (PKCS#1 v1.5, PSS with a digest-long salt,
DER ECDSA), computes real CRC32Cs and verifies the client's `digest_crc32c`, walks versions
through PENDING_GENERATION → ENABLED, pages list results, and answers failures the way Cloud KMS
does: gRPC status codes with `google.rpc` details (ErrorInfo for IAM denials, RetryInfo for
throttling). Only the methods keysvc calls are served; any other gets UNIMPLEMENTED, as from a
server that does not know it.

Faults for tests: `stop()`/`start()` (down, then back on the same port), `fail()` (any status,
optionally with RetryInfo and for a number of calls), `delay` (slow answers), `corrupt` (damage a
field after its CRC32C was computed, as a bad link would), `deny()` (IAM permission missing).

With `service_accounts` (email → public key) every call must carry a service account's
self-signed JWT, checked like Google does for the `authorization` metadata; without it the fake
accepts anonymous calls (keysvc's `insecure = true` mode).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Awaitable, Callable

import google_crc32c
import grpc
import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from google.cloud.kms_v1.types import (
    AsymmetricSignRequest,
    AsymmetricSignResponse,
    CreateCryptoKeyVersionRequest,
    CryptoKeyVersion,
    DestroyCryptoKeyVersionRequest,
    GetCryptoKeyVersionRequest,
    GetPublicKeyRequest,
    ListCryptoKeyVersionsRequest,
    ListCryptoKeyVersionsResponse,
    ProtectionLevel,
    PublicKey,
    UpdateCryptoKeyVersionRequest,
)
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

SERVICE = "google.cloud.kms.v1.KeyManagementService"
Alg = CryptoKeyVersion.CryptoKeyVersionAlgorithm
State = CryptoKeyVersion.CryptoKeyVersionState

# RPC → the IAM permission Cloud KMS checks for it.
PERMISSIONS = {
    "ListCryptoKeyVersions": "cloudkms.cryptoKeyVersions.list",
    "GetCryptoKeyVersion": "cloudkms.cryptoKeyVersions.get",
    "GetPublicKey": "cloudkms.cryptoKeyVersions.viewPublicKey",
    "AsymmetricSign": "cloudkms.cryptoKeyVersions.useToSign",
    "CreateCryptoKeyVersion": "cloudkms.cryptoKeyVersions.create",
    "UpdateCryptoKeyVersion": "cloudkms.cryptoKeyVersions.update",
    "DestroyCryptoKeyVersion": "cloudkms.cryptoKeyVersions.destroy",
}
CORRUPTIONS = frozenset({"signature", "pem", "verified_digest", "name"})
_FILTER = re.compile(r"^\s*state\s*=\s*([A-Z_]+)\s*$")


def crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


def generate_private_key(algorithm: Alg) -> Any:
    """A real key pair for a signing algorithm (RSA size and EC curve taken from its name)."""
    name = algorithm.name
    if name.startswith("RSA_SIGN_"):
        bits = int(re.search(r"_(2048|3072|4096)", name).group(1))  # type: ignore[union-attr]
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if name == "EC_SIGN_P256_SHA256":
        return ec.generate_private_key(ec.SECP256R1())
    if name == "EC_SIGN_P384_SHA384":
        return ec.generate_private_key(ec.SECP384R1())
    if name == "EC_SIGN_SECP256K1_SHA256":
        return ec.generate_private_key(ec.SECP256K1())
    raise ValueError(f"the fake cannot generate {name}")


def _algorithm(algorithm: str | Alg) -> Alg:
    return Alg[algorithm] if isinstance(algorithm, str) else algorithm


def _digest_algorithm(algorithm: Alg) -> tuple[str, hashes.HashAlgorithm]:
    name = algorithm.name
    if name.endswith("SHA512"):
        return "sha512", hashes.SHA512()
    if name.endswith("SHA384"):
        return "sha384", hashes.SHA384()
    return "sha256", hashes.SHA256()


def sign_digest(key: Any, algorithm: Alg, digest: bytes) -> bytes:
    """Sign a digest as Cloud KMS does for this algorithm."""
    _, hash_ = _digest_algorithm(algorithm)
    prehashed = utils.Prehashed(hash_)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(digest, ec.ECDSA(prehashed))
    if "_PSS_" in algorithm.name:
        pad = padding.PSS(mgf=padding.MGF1(hash_), salt_length=hash_.digest_size)
        return key.sign(digest, pad, prehashed)
    return key.sign(digest, padding.PKCS1v15(), prehashed)


class Abort(Exception):
    """A gRPC error answer: code, message and google.rpc details."""

    def __init__(self, code: int, message: str, *details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def status(self) -> grpc.Status:
        packed = []
        for detail in self.details:
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
        return rpc_status.to_status(
            status_pb2.Status(code=self.code, message=self.message, details=packed)
        )


@dataclass
class FakeVersion:
    name: str
    algorithm: Alg
    private_key: Any
    state: State
    create_time: datetime
    generate_time: datetime | None = None

    def message(self) -> CryptoKeyVersion:
        return CryptoKeyVersion(
            name=self.name,
            state=self.state,
            algorithm=self.algorithm,
            protection_level=ProtectionLevel.SOFTWARE,
            create_time=self.create_time,
            generate_time=self.generate_time,
        )


@dataclass
class FakeKey:
    name: str
    algorithm: Alg
    """The version template's algorithm: what new versions get."""
    versions: list[FakeVersion] = field(default_factory=list)


@dataclass
class Failure:
    code: int
    message: str
    retry_after: float | None
    methods: frozenset[str] | None
    remaining: int | None


class FakeCloudKms:
    """In-memory Cloud KMS on 127.0.0.1, served over gRPC (plaintext, or TLS with `tls`)."""

    def __init__(
        self,
        *,
        generation_delay: float | None = 0.05,
        page_size: int = 2,
        tls: tuple[bytes, bytes] | None = None,
        service_accounts: dict[str, Any] | None = None,
    ) -> None:
        self.generation_delay = generation_delay
        """Seconds a new version stays PENDING_GENERATION; None: forever."""
        self.page_size = page_size
        """Most versions in one ListCryptoKeyVersions page (small, so paging is exercised)."""
        self.tls = tls
        """(certificate chain PEM, private key PEM) to serve TLS."""
        self.service_accounts = service_accounts
        self.keys: dict[str, FakeKey] = {}
        self.calls: Counter[str] = Counter()
        self.delay = 0.0
        """Seconds every answer is held back (a slow KMS)."""
        self.in_flight = 0
        self.most_in_flight = 0
        """The most calls being served at once (held by `delay`): concurrency, observed."""
        self.corrupt: set[str] = set()
        """Fields damaged after their CRC32C was computed: see CORRUPTIONS."""
        self.denied: set[str] = set()
        self.authenticated: list[str] = []
        self._failure: Failure | None = None
        self._server: grpc.aio.Server | None = None
        self._port = 0
        self._timers: list[asyncio.TimerHandle] = []

    # -- set-up -----------------------------------------------------------------------------

    def add_key(
        self,
        name: str,
        algorithm: str | Alg,
        versions: int = 1,
        created: list[datetime] | None = None,
    ) -> FakeKey:
        """Create a CryptoKey with `versions` ENABLED versions (created now unless given)."""
        key = FakeKey(name=name, algorithm=_algorithm(algorithm))
        self.keys[name] = key
        for i in range(versions):
            self.add_version(name, created_at=created[i] if created else None)
        return key

    def add_version(
        self,
        key_name: str,
        *,
        state: State = State.ENABLED,
        algorithm: str | Alg | None = None,
        created_at: datetime | None = None,
    ) -> FakeVersion:
        key = self.keys[key_name]
        alg = key.algorithm if algorithm is None else _algorithm(algorithm)
        now = created_at or datetime.now(UTC)
        symmetric = alg.name == "GOOGLE_SYMMETRIC_ENCRYPTION"
        private_key = None if symmetric else generate_private_key(alg)
        version = FakeVersion(
            name=f"{key_name}/cryptoKeyVersions/{len(key.versions) + 1}",
            algorithm=alg,
            private_key=private_key,
            state=state,
            create_time=now,
            generate_time=now if state != State.PENDING_GENERATION else None,
        )
        key.versions.append(version)
        return version

    def version(self, name: str) -> FakeVersion:
        key_name, _, _ = name.rpartition("/cryptoKeyVersions/")
        for version in self.keys[key_name].versions:
            if version.name == name:
                return version
        raise KeyError(name)

    # -- faults -----------------------------------------------------------------------------

    def fail(
        self,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        message: str = "The service is currently unavailable.",
        *,
        retry_after: float | None = None,
        methods: set[str] | None = None,
        times: int | None = None,
    ) -> None:
        """Answer every call (or `times` calls, of `methods`) with this gRPC status."""
        self._failure = Failure(
            code=code.value[0],
            message=message,
            retry_after=retry_after,
            methods=frozenset(methods) if methods else None,
            remaining=times,
        )

    def throttle(self, retry_after: float = 2.0, times: int | None = None) -> None:
        """RESOURCE_EXHAUSTED as Cloud KMS sends it when a per-minute quota is used up."""
        self.fail(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Quota exceeded for quota metric 'Cryptographic requests' and limit"
            " 'Cryptographic requests per minute' of service 'cloudkms.googleapis.com'.",
            retry_after=retry_after,
            times=times,
        )

    def deny(self, permission: str) -> None:
        self.denied.add(permission)

    def heal(self) -> None:
        """Clear every injected fault (the server keeps running or stays stopped)."""
        self._failure = None
        self.delay = 0.0
        self.corrupt.clear()
        self.denied.clear()

    # -- server -----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Serve on 127.0.0.1 (a free port the first time, the same port after a stop)."""
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self._handlers(),))
        address = f"127.0.0.1:{self._port}"
        if self.tls is not None:
            chain, key = self.tls
            port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, chain)]))
        else:
            port = server.add_insecure_port(address)
        if not port:
            raise RuntimeError(f"fake Cloud KMS cannot bind {address}")
        self._port = port
        await server.start()
        self._server = server

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace=None)

    async def __aenter__(self) -> FakeCloudKms:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _handlers(self) -> grpc.GenericRpcHandler:
        methods: dict[str, tuple[Callable[..., Awaitable[Any]], Any, Any]] = {
            "ListCryptoKeyVersions": (
                self._list_versions, ListCryptoKeyVersionsRequest, ListCryptoKeyVersionsResponse
            ),
            "GetCryptoKeyVersion": (
                self._get_version, GetCryptoKeyVersionRequest, CryptoKeyVersion
            ),
            "GetPublicKey": (self._get_public_key, GetPublicKeyRequest, PublicKey),
            "AsymmetricSign": (self._sign, AsymmetricSignRequest, AsymmetricSignResponse),
            "CreateCryptoKeyVersion": (
                self._create_version, CreateCryptoKeyVersionRequest, CryptoKeyVersion
            ),
            "UpdateCryptoKeyVersion": (
                self._update_version, UpdateCryptoKeyVersionRequest, CryptoKeyVersion
            ),
            "DestroyCryptoKeyVersion": (
                self._destroy_version, DestroyCryptoKeyVersionRequest, CryptoKeyVersion
            ),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                method: grpc.unary_unary_rpc_method_handler(
                    self._serve(method, impl),
                    request_deserializer=request_type.deserialize,
                    response_serializer=response_type.serialize,
                )
                for method, (impl, request_type, response_type) in methods.items()
            },
        )

    def _serve(self, method: str, impl: Callable[[Any], Awaitable[Any]]) -> Callable[..., Any]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.calls[method] += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                if self.delay:
                    await asyncio.sleep(self.delay)
                self._authenticate(context)
                self._injected_failure(method)
                return await impl(request)
            except Abort as abort:
                await context.abort_with_status(abort.status())
            finally:
                self.in_flight -= 1

        return handle

    # -- checks shared by every call --------------------------------------------------------

    def _authenticate(self, context: grpc.aio.ServicerContext) -> None:
        if self.service_accounts is None:
            return
        metadata = dict(context.invocation_metadata() or ())
        header = metadata.get("authorization", "")
        unauthenticated = Abort(
            code_pb2.UNAUTHENTICATED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token,"
            " login cookie or other valid authentication credential.",
        )
        if not header.startswith("Bearer "):
            raise unauthenticated
        token = header.removeprefix("Bearer ")
        try:
            issuer = jwt.decode(token, options={"verify_signature": False})["iss"]
            public_key = self.service_accounts[issuer]
            jwt.decode(
                token,
                public_key,
                algorithms=["RS256"],
                options={"require": ["iss", "sub", "iat", "exp"], "verify_aud": False},
            )
        except (jwt.PyJWTError, KeyError):
            raise unauthenticated from None
        self.authenticated.append(issuer)

    def _injected_failure(self, method: str) -> None:
        failure = self._failure
        if failure is None or (failure.methods and method not in failure.methods):
            return
        if failure.remaining is not None:
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failure = None
        details = []
        if failure.retry_after is not None:
            seconds = int(failure.retry_after)
            nanos = int((failure.retry_after - seconds) * 1e9)
            details.append(
                error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)
                )
            )
        raise Abort(failure.code, failure.message, *details)

    def _authorize(self, method: str, resource: str) -> None:
        permission = PERMISSIONS[method]
        if permission in self.denied:
            raise Abort(
                code_pb2.PERMISSION_DENIED,
                f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).",
                error_details_pb2.ErrorInfo(
                    reason="IAM_PERMISSION_DENIED",
                    domain="cloudkms.googleapis.com",
                    metadata={"permission": permission, "resource": resource},
                ),
            )

    def _key(self, name: str) -> FakeKey:
        key = self.keys.get(name)
        if key is None:
            raise Abort(code_pb2.NOT_FOUND, f"CryptoKey {name} not found.")
        return key

    def _version(self, name: str) -> FakeVersion:
        try:
            return self.version(name)
        except KeyError:
            raise Abort(code_pb2.NOT_FOUND, f"CryptoKeyVersion {name} not found.") from None

    @staticmethod
    def _require_enabled(version: FakeVersion) -> None:
        if version.state != State.ENABLED:
            raise Abort(
                code_pb2.FAILED_PRECONDITION,
                f"{version.name} is not enabled, current state is: {State(version.state).name}.",
            )

    @staticmethod
    def _require_signing(version: FakeVersion) -> None:
        if not version.algorithm.name.startswith(("RSA_SIGN_", "EC_SIGN_")):
            raise Abort(
                code_pb2.FAILED_PRECONDITION,
                f"{version.name} does not have purpose ASYMMETRIC_SIGN.",
            )

    # -- methods ----------------------------------------------------------------------------

    async def _list_versions(
        self, request: ListCryptoKeyVersionsRequest
    ) -> ListCryptoKeyVersionsResponse:
        self._authorize("ListCryptoKeyVersions", request.parent)
        key = self._key(request.parent)
        versions = key.versions
        if request.filter:
            match = _FILTER.match(request.filter)
            if not match or match.group(1) not in State.__members__:
                raise Abort(code_pb2.INVALID_ARGUMENT, f"Invalid filter: {request.filter!r}.")
            versions = [v for v in versions if State(v.state).name == match.group(1)]
        if not 0 <= request.page_size <= 1000:
            raise Abort(code_pb2.INVALID_ARGUMENT, "page_size must be between 0 and 1000.")
        # Like Cloud KMS, never more than the server's own page limit, whatever was asked.
        size = min(request.page_size or self.page_size, self.page_size)
        try:
            start = int(request.page_token or 0)
        except ValueError:
            raise Abort(code_pb2.INVALID_ARGUMENT, "Invalid page_token.") from None
        page = versions[start : start + size]
        more = start + size < len(versions)
        return ListCryptoKeyVersionsResponse(
            crypto_key_versions=[v.message() for v in page],
            next_page_token=str(start + size) if more else "",
            total_size=len(versions),
        )

    async def _get_version(self, request: GetCryptoKeyVersionRequest) -> CryptoKeyVersion:
        self._authorize("GetCryptoKeyVersion", request.name)
        return self._version(request.name).message()

    async def _get_public_key(self, request: GetPublicKeyRequest) -> PublicKey:
        self._authorize("GetPublicKey", request.name)
        version = self._version(request.name)
        self._require_signing(version)
        self._require_enabled(version)
        pem = (
            version.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        pem_crc = crc32c(pem.encode())
        if "pem" in self.corrupt:
            pem = pem.replace("A", "B", 1)
        return PublicKey(
            pem=pem,
            algorithm=version.algorithm,
            pem_crc32c=pem_crc,
            name=version.name if "name" not in self.corrupt else version.name + "0",
            protection_level=ProtectionLevel.SOFTWARE,
        )

    async def _sign(self, request: AsymmetricSignRequest) -> AsymmetricSignResponse:
        self._authorize("AsymmetricSign", request.name)
        version = self._version(request.name)
        self._require_signing(version)
        self._require_enabled(version)
        field_name, hash_ = _digest_algorithm(version.algorithm)
        digest = getattr(request.digest, field_name)
        if not digest or len(digest) != hash_.digest_size:
            raise Abort(
                code_pb2.INVALID_ARGUMENT,
                f"The requested digest type does not match the algorithm of {version.name}:"
                f" expected a {field_name} digest.",
            )
        if "digest_crc32c" in request and request.digest_crc32c != crc32c(digest):
            raise Abort(
                code_pb2.INVALID_ARGUMENT,
                "The checksum in field digest_crc32c did not match the data in field digest.",
            )
        signature = sign_digest(version.private_key, version.algorithm, digest)
        signature_crc = crc32c(signature)
        if "signature" in self.corrupt:
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        return AsymmetricSignResponse(
            signature=signature,
            signature_crc32c=signature_crc,
            verified_digest_crc32c=(
                "digest_crc32c" in request and "verified_digest" not in self.corrupt
            ),
            name=version.name if "name" not in self.corrupt else version.name + "0",
            protection_level=ProtectionLevel.SOFTWARE,
        )

    async def _create_version(self, request: CreateCryptoKeyVersionRequest) -> CryptoKeyVersion:
        self._authorize("CreateCryptoKeyVersion", request.parent)
        key = self._key(request.parent)
        version = self.add_version(key.name, state=State.PENDING_GENERATION)
        if self.generation_delay is not None:
            loop = asyncio.get_running_loop()
            self._timers.append(loop.call_later(self.generation_delay, self._generated, version))
        return version.message()

    @staticmethod
    def _generated(version: FakeVersion) -> None:
        if version.state == State.PENDING_GENERATION:
            version.state = State.ENABLED
            version.generate_time = datetime.now(UTC)

    async def _update_version(self, request: UpdateCryptoKeyVersionRequest) -> CryptoKeyVersion:
        wanted = request.crypto_key_version
        self._authorize("UpdateCryptoKeyVersion", wanted.name)
        version = self._version(wanted.name)
        if list(request.update_mask.paths) != ["state"]:
            raise Abort(code_pb2.INVALID_ARGUMENT, "update_mask may only contain 'state'.")
        if wanted.state not in (State.ENABLED, State.DISABLED):
            raise Abort(
                code_pb2.INVALID_ARGUMENT, "CryptoKeyVersion.state may only be ENABLED or DISABLED."
            )
        if version.state not in (State.ENABLED, State.DISABLED):
            raise Abort(
                code_pb2.FAILED_PRECONDITION,
                f"{version.name} is in state {State(version.state).name} and cannot be updated.",
            )
        version.state = State(wanted.state)
        return version.message()

    async def _destroy_version(self, request: DestroyCryptoKeyVersionRequest) -> CryptoKeyVersion:
        """As Cloud KMS does: the version is DESTROY_SCHEDULED (its material goes when the
        key's destroy_scheduled_duration has passed), from ENABLED or DISABLED only."""
        self._authorize("DestroyCryptoKeyVersion", request.name)
        version = self._version(request.name)
        if version.state not in (State.ENABLED, State.DISABLED):
            raise Abort(
                code_pb2.FAILED_PRECONDITION,
                f"{version.name} is in state {State(version.state).name} and cannot be destroyed.",
            )
        version.state = State.DESTROY_SCHEDULED
        return version.message()
