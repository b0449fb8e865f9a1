"""A small, faithful Azure Key Vault fake for the real azure-keyvault-keys / azure-identity clients.

No Key Vault emulator exists, so the tests run the real Azure SDK against this server over real
HTTPS on 127.0.0.1. It follows the documented REST API (api-version 7.x / 2025-07-01) for the
operations keysvc uses, with Key Vault's own behaviour where the SDK depends on it:

- the authentication challenge: a request without a bearer token gets 401 and
  `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"`, which is how the SDK learns tenant and scope;
- `api-version` is required on every vault call;
- keys: GET latest (`/keys/<name>` or `/keys/<name>/`), GET one version, GET the version list
  (pages of `maxresults`, at most 25, chained by an absolute `nextLink`), PATCH a version's
  attributes, POST rotate, POST sign (over a digest; ECDSA signatures are raw r‖s, as JWS wants);
- errors in Key Vault's shape `{"error": {"code", "message"}}`, permissions per token
  (403 Forbidden naming the missing `keys/<op>` permission), disabled versions refusing to sign;
- an Entra ID (Azure AD) token endpoint, `POST /<tenant>/oauth2/v2.0/token`, for the client
  credentials grant with a client secret, a certificate assertion or a federated (workload
  identity) assertion, so azure-identity's own credentials can be exercised too.

The keys are real (cryptography) and every signature is real. Faults are injected per test:
`down()` closes the listener and every open connection, `inject(...)` answers with a status
(5xx, 429 with Retry-After) or slowly.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jwt
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

RESOURCE = "https://vault.azure.net"
SCOPE = RESOURCE + "/.default"
MAX_PAGE = 25
OPERATIONS = frozenset({"get", "list", "update", "rotate", "sign"})

_API_VERSION = re.compile(r"^(7\.\d+|\d{4}-\d{2}-\d{2})(-preview(\.\d+)?)?$")
_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
    "P-256K": ec.SECP256K1(),
}
# JWS algorithm → (key family, digest length, curve for ECDSA)
_SIGN_ALGORITHMS: dict[str, tuple[str, int, str | None]] = {
    "RS256": ("RSA", 32, None),
    "RS384": ("RSA", 48, None),
    "RS512": ("RSA", 64, None),
    "PS256": ("RSA", 32, None),
    "PS384": ("RSA", 48, None),
    "PS512": ("RSA", 64, None),
    "ES256": ("EC", 32, "P-256"),
    "ES384": ("EC", 48, "P-384"),
    "ES512": ("EC", 64, "P-521"),
    "ES256K": ("EC", 32, "P-256K"),
}
_HASHES = {32: hashes.SHA256(), 48: hashes.SHA384(), 64: hashes.SHA512()}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


class VaultError(Exception):
    """An error answered in Key Vault's shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message}}
        return web.json_response(body, status=self.status, headers=self.headers)


@dataclass
class FakeKeyVersion:
    version: str
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    kty: str
    created: int
    updated: int
    enabled: bool = True
    key_ops: list[str] = field(default_factory=lambda: ["sign", "verify"])
    nbf: int | None = None
    exp: int | None = None

    @property
    def crv(self) -> str | None:
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            return next(n for n, c in _CURVES.items() if c.name == self.private_key.curve.name)
        return None

    def jwk(self, kid: str) -> dict[str, Any]:
        out: dict[str, Any] = {"kid": kid, "kty": self.kty, "key_ops": list(self.key_ops)}
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            out.update(n=b64url(_int_bytes(numbers.n)), e=b64url(_int_bytes(numbers.e)))
        else:
            numbers = public.public_numbers()
            size = (public.curve.key_size + 7) // 8
            out.update(
                crv=self.crv,
                x=b64url(numbers.x.to_bytes(size, "big")),
                y=b64url(numbers.y.to_bytes(size, "big")),
            )
        return out

    def attributes(self) -> dict[str, Any]:
        window = {name: value for name, value in (("nbf", self.nbf), ("exp", self.exp)) if value}
        return {
            **window,
            "enabled": self.enabled,
            "created": self.created,
            "updated": self.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
            "exportable": False,
        }


@dataclass
class Fault:
    """How the fake misbehaves: `status` answers with that HTTP status (429 adds Retry-After),
    `slow` waits `delay` seconds before answering normally. `remaining` counts the requests still
    affected (None: until cleared); `operations` limits it to some (None: every vault call)."""

    kind: Literal["status", "slow"]
    status: int = 500
    retry_after: int | None = None
    delay: float = 0.0
    remaining: int | None = None
    operations: frozenset[str] | None = None


@dataclass
class _Client:
    secret: str | None = None
    certificate: x509.Certificate | None = None
    federated_assertion: str | None = None
    operations: frozenset[str] = OPERATIONS


class FakeKeyVault:
    """One fake vault (and its tenant's token endpoint) on https://127.0.0.1:<port>."""

    def __init__(
        self,
        ca: trustme.CA,
        *,
        tenant_id: str = "72f988bf-0000-4000-8000-2d7cd011db47",
        page_size: int = MAX_PAGE,
    ) -> None:
        self.tenant_id = tenant_id
        self.page_size = page_size
        self._server_cert = ca.issue_cert("127.0.0.1")
        self._keys: dict[str, list[FakeKeyVersion]] = {}
        self._tokens: dict[str, frozenset[str]] = {}
        self._clients: dict[str, _Client] = {}
        self._fault: Fault | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.calls: Counter[str] = Counter()
        """Authenticated vault calls per operation (get, list, update, rotate, sign), faulty
        ones included."""
        self.tokens_issued = 0
        self._handed_out: Counter[str] = Counter()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_cert.configure_cert(ctx)
        return ctx

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get("/keys/{name}/versions", self._list_versions)
        app.router.add_post("/keys/{name}/rotate", self._rotate)
        app.router.add_get("/keys/{name}", self._get)
        app.router.add_get("/keys/{name}/", self._get)
        app.router.add_get("/keys/{name}/{version}", self._get)
        app.router.add_patch("/keys/{name}/{version}", self._update)
        app.router.add_post("/keys/{name}/{version}/sign", self._sign)
        return app

    async def start(self) -> None:
        """Listen (again, on the same port after `down()`)."""
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl_context())
        await site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def down(self) -> None:
        """The vault becomes unreachable: listener and every open connection are closed."""
        await self.stop()

    async def up(self) -> None:
        await self.start()

    # -- test controls -----------------------------------------------------------------------

    def issue_token(self, operations: frozenset[str] = OPERATIONS) -> str:
        """A bearer token the vault accepts, allowed the given key operations."""
        token = "fake-aad-" + secrets.token_urlsafe(24)
        self._tokens[token] = frozenset(operations)
        return token

    def issued_tokens(self) -> list[str]:
        return list(self._tokens)

    def add_client(
        self,
        client_id: str,
        *,
        secret: str | None = None,
        certificate: x509.Certificate | None = None,
        federated_assertion: str | None = None,
        operations: frozenset[str] = OPERATIONS,
    ) -> None:
        """Register an app (service principal) with the tenant's token endpoint, allowed the
        given key operations on this vault (its role assignment)."""
        self._clients[client_id] = _Client(secret, certificate, federated_assertion, operations)

    def inject(self, fault: Fault | None) -> None:
        self._fault = fault

    def create_key(
        self,
        name: str,
        kty: str = "RSA-HSM",
        *,
        size: int = 2048,
        crv: str = "P-256",
        created: int | None = None,
        key_ops: list[str] | None = None,
    ) -> str:
        """Create a key, or a new version of it (as `az keyvault key create` does)."""
        if kty.startswith("RSA"):
            kind = f"rsa-{size}"
        elif kty.startswith("EC"):
            kind = crv
        else:
            raise ValueError(f"the fake does not create {kty} keys")
        private = _pooled_key(kind, self._handed_out[kind])
        self._handed_out[kind] += 1
        stamp = int(time.time()) if created is None else created
        version = FakeKeyVersion(secrets.token_hex(16), private, kty, stamp, stamp)
        if key_ops is not None:
            version.key_ops = list(key_ops)
        self._keys.setdefault(name, []).append(version)
        return version.version

    def version(self, name: str, version: str) -> FakeKeyVersion:
        return next(v for v in self._keys[name] if v.version == version)

    def versions(self, name: str) -> list[FakeKeyVersion]:
        return list(self._keys.get(name, []))

    # -- plumbing ----------------------------------------------------------------------------

    def _challenge(self, code: str, message: str) -> web.Response:
        header = (
            f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", '
            f'resource="{RESOURCE}"'
        )
        return VaultError(401, code, message, {"WWW-Authenticate": header}).response()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.endswith("/oauth2/v2.0/token"):
            return await handler(request)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return self._challenge(
                "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."
            )
        allowed = self._tokens.get(auth.removeprefix("Bearer "))
        if allowed is None:
            return self._challenge("Unauthorized", "AKV10032: Invalid issuer or token.")
        operation = _operation(request)
        self.calls[operation] += 1
        try:
            if not _API_VERSION.match(request.query.get("api-version", "")):
                raise VaultError(
                    400,
                    "BadParameter",
                    "The request URI contains an invalid or missing api-version query parameter.",
                )
            await self._apply_fault(operation)
            if operation not in allowed:
                raise VaultError(
                    403,
                    "Forbidden",
                    "The user, group or application does not have"
                    f" keys {operation} permission on key vault 'fake'.",
                )
            return await handler(request)
        except VaultError as exc:
            return exc.response()

    async def _apply_fault(self, operation: str) -> None:
        fault = self._fault
        if fault is None or (fault.operations is not None and operation not in fault.operations):
            return
        if fault.remaining is not None:
            if fault.remaining <= 0:
                return
            fault.remaining -= 1
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            return
        if fault.status == 429:
            headers = {
                "Retry-After": str(fault.retry_after if fault.retry_after is not None else 1)
            }
            raise VaultError(
                429,
                "Throttled",
                "Request was not processed because too many"
                " requests were received. Reason: VaultRequestTypeLimitReached",
                headers,
            )
        codes = {
            500: "InternalServerError",
            502: "BadGateway",
            503: "ServiceUnavailable",
            504: "GatewayTimeout",
        }
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        raise VaultError(
            fault.status,
            codes.get(fault.status, "InternalServerError"),
            "The service is temporarily unavailable.",
            headers,
        )

    def _find(self, request: web.Request, version: str | None = None) -> FakeKeyVersion:
        name = request.match_info["name"]
        versions = self._keys.get(name)
        if not versions:
            raise VaultError(
                404,
                "KeyNotFound",
                f"A key with (name/id) {name} was not found in"
                " this key vault. If you recently deleted this key you may be able to"
                " recover it using the correct recovery command.",
            )
        version = version if version is not None else request.match_info.get("version", "")
        if not version:
            return versions[-1]
        for candidate in versions:
            if candidate.version == version:
                return candidate
        raise VaultError(
            404,
            "KeyNotFound",
            f"A key with (name/id) {name}/{version} was not found in this key vault.",
        )

    def _kid(self, request: web.Request, name: str, version: FakeKeyVersion) -> str:
        return f"{self.url}/keys/{name}/{version.version}"

    def _bundle(self, request: web.Request, version: FakeKeyVersion) -> dict[str, Any]:
        kid = self._kid(request, request.match_info["name"], version)
        return {"key": version.jwk(kid), "attributes": version.attributes()}

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise VaultError(400, "BadParameter", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise VaultError(400, "BadParameter", "The request body must be a JSON object.")
        return body

    # -- key operations ----------------------------------------------------------------------

    async def _get(self, request: web.Request) -> web.Response:
        version = self._find(request)
        if not version.enabled:
            raise VaultError(403, "Forbidden", "Operation get is not allowed on a disabled key.")
        return web.json_response(self._bundle(request, version))

    async def _list_versions(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        # Key Vault lists versions in the order of their ids, not of their creation; an unknown
        # key is an empty list (200), not a 404.
        versions = sorted(self._keys.get(name, []), key=lambda v: v.version)
        try:
            size = int(request.query.get("maxresults", self.page_size))
            start = int(request.query.get("$skiptoken", "0"))
        except ValueError:
            raise VaultError(400, "BadParameter", "invalid maxresults or $skiptoken") from None
        if not 1 <= size <= MAX_PAGE:
            raise VaultError(400, "BadParameter", "invalid maxresults: must be between 1 and 25")
        size = min(size, self.page_size)
        page = versions[start : start + size]
        body: dict[str, Any] = {
            "value": [
                {"kid": self._kid(request, name, v), "attributes": v.attributes()} for v in page
            ],
            "nextLink": None,
        }
        if start + size < len(versions):
            body["nextLink"] = (
                f"{self.url}/keys/{name}/versions?api-version="
                f"{request.query['api-version']}&$skiptoken={start + size}"
                f"&maxresults={size}"
            )
        return web.json_response(body)

    async def _update(self, request: web.Request) -> web.Response:
        version = self._find(request)
        body = await self._json_body(request)
        attributes = body.get("attributes") or {}
        if "enabled" in attributes:
            version.enabled = bool(attributes["enabled"])
        if "key_ops" in body:
            version.key_ops = list(body["key_ops"])
        version.updated = int(time.time())
        return web.json_response(self._bundle(request, version))

    async def _rotate(self, request: web.Request) -> web.Response:
        latest = self._find(request, "")
        private = latest.private_key
        if isinstance(private, rsa.RSAPrivateKey):
            new = self.create_key(request.match_info["name"], latest.kty, size=private.key_size)
        else:
            new = self.create_key(request.match_info["name"], latest.kty, crv=latest.crv or "P-256")
        return web.json_response(self._bundle(request, self._find(request, new)))

    async def _sign(self, request: web.Request) -> web.Response:
        version = self._find(request)
        body = await self._json_body(request)
        alg, value = body.get("alg"), body.get("value")
        if alg not in _SIGN_ALGORITHMS or not isinstance(value, str):
            raise VaultError(400, "BadParameter", "Invalid algorithm or value.")
        if not version.enabled:
            raise VaultError(403, "Forbidden", "Operation sign is not allowed on a disabled key.")
        now = time.time()
        if (version.exp is not None and version.exp <= now) or (
            version.nbf is not None and version.nbf > now
        ):
            raise VaultError(
                403,
                "Forbidden",
                "Operation sign is not allowed on a key outside its nbf/exp validity period.",
            )
        if "sign" not in version.key_ops:
            raise VaultError(403, "Forbidden", "Operation sign is not permitted on this key.")
        family, digest_size, curve = _SIGN_ALGORITHMS[alg]
        if not version.kty.startswith(family) or (curve is not None and curve != version.crv):
            raise VaultError(
                400,
                "BadParameter",
                f"Key and signing algorithm are incompatible."
                f" Key type: {version.kty}. Algorithm: {alg}.",
            )
        digest = b64url_decode(value)
        if len(digest) != digest_size:
            raise VaultError(400, "BadParameter", "Invalid length of the digest.")
        signature = _sign_digest(version.private_key, alg, digest)
        kid = self._kid(request, request.match_info["name"], version)
        return web.json_response({"kid": kid, "value": b64url(signature)})

    # -- Entra ID token endpoint -------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        client = self._clients.get(str(form.get("client_id", "")))
        if request.match_info["tenant"] != self.tenant_id:
            return _aad_error(400, "invalid_request", "AADSTS90002: Tenant not found.")
        if form.get("grant_type") != "client_credentials" or client is None:
            return _aad_error(
                400, "unauthorized_client", "AADSTS700016: Application not found in the directory."
            )
        if form.get("scope") != SCOPE:
            return _aad_error(
                400, "invalid_scope", "AADSTS70011: The provided value for scope is not valid."
            )
        if not self._client_authenticates(client, form):
            return _aad_error(
                401, "invalid_client", "AADSTS7000215: Invalid client secret or assertion provided."
            )
        self.tokens_issued += 1
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": self.issue_token(client.operations),
            }
        )

    def _client_authenticates(self, client: _Client, form: Any) -> bool:
        if "client_secret" in form:
            return client.secret is not None and secrets.compare_digest(
                str(form["client_secret"]), client.secret
            )
        assertion = str(form.get("client_assertion", ""))
        if (
            form.get("client_assertion_type")
            != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return False
        if client.federated_assertion is not None:
            return secrets.compare_digest(assertion, client.federated_assertion)
        if client.certificate is None:
            return False
        try:
            jwt.decode(
                assertion,
                client.certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["RS256", "PS256"],
                audience=f"{self.url}/{self.tenant_id}/oauth2/v2.0/token",
            )
        except jwt.InvalidTokenError:
            return False
        return True


_KEY_POOL: dict[str, list[Any]] = {}


def _pooled_key(kind: str, index: int) -> Any:
    """The index-th real private key of a kind ("rsa-2048", "P-256", ...). Keys are generated
    once per test session and handed out once per vault, so a vault's versions all differ while
    the suite does not pay for fresh RSA keys in every test."""
    pool = _KEY_POOL.setdefault(kind, [])
    while len(pool) <= index:
        if kind.startswith("rsa-"):
            pool.append(rsa.generate_private_key(public_exponent=65537, key_size=int(kind[4:])))
        else:
            pool.append(ec.generate_private_key(_CURVES[kind]))
    return pool[index]


def _operation(request: web.Request) -> str:
    if request.method == "PATCH":
        return "update"
    if request.method == "POST":
        return "sign" if request.path.endswith("/sign") else "rotate"
    return "list" if request.path.endswith("/versions") else "get"


def _aad_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response(
        {
            "error": error,
            "error_description": description,
            "error_codes": [int(description[6 : description.index(":")])],
        },
        status=status,
    )


def _sign_digest(private: Any, alg: str, digest: bytes) -> bytes:
    hash_ = _HASHES[len(digest)]
    prehashed = utils.Prehashed(hash_)
    if isinstance(private, rsa.RSAPrivateKey):
        if alg.startswith("PS"):
            pad: padding.AsymmetricPadding = padding.PSS(
                padding.MGF1(hash_), salt_length=len(digest)
            )
        else:
            pad = padding.PKCS1v15()
        return private.sign(digest, pad, prehashed)
    der = private.sign(digest, ec.ECDSA(prehashed))
    r, s = utils.decode_dss_signature(der)
    size = (private.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def write_ca(ca: trustme.CA, path: Path) -> Path:
    ca.cert_pem.write_to_path(str(path))
    return path
