"""Configuration: a TOML file plus otfd-style flags, validated once at start.

Every problem is reported as a ConfigError naming the offending key (for example
`rotation.jwks_max_age`, or `backends[1]: path` for a backend's own setting), which the CLI prints
on one line before exiting with status 2. A `[[backends]]` table's own settings are validated by
its backend's model when the backends are built (BackendConfig.build), so reading a config needs
no backend's library. The rules a setting shares with the operator tools live beside what they
rule: the issuer's in issuer_url.py, the subject format's in run_identity.py, the clouds' limits
in clouds.py.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import ssl
import tomllib
from datetime import timedelta
from pathlib import Path
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUndefined

from keysvc import validation_errors
from keysvc.backends import KeyBackend, UnknownBackendType, available_types, load_backend_class
from keysvc.clouds import check_max_ttl
from keysvc.durations import Duration
from keysvc.errors import ConfigError
from keysvc.issuer_url import URL_CHARACTERS, check_issuer
from keysvc.jose import Algorithm
from keysvc.loopback import is_loopback_host
from keysvc.run_identity import DEFAULT_SUBJECT_FORMAT, check_subject_format
from keysvc.secrets import read_secret_file

Scope = Literal["tokens:issue", "sign", "keys:read", "keys:rotate"]
ALL_SCOPES: tuple[str, ...] = ("tokens:issue", "sign", "keys:read", "keys:rotate")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def check_token_lifetime(value: timedelta) -> timedelta:
    """A token lifetime (`tokens.default_ttl`, `tokens.max_ttl`): whole seconds, at least one,
    since a JWT's `iat` and `exp` are whole seconds (a 500ms lifetime would give exp == iat)."""
    if value < timedelta(seconds=1) or value % timedelta(seconds=1):
        raise ValueError("must be a whole number of seconds, at least 1s")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_connections: int = Field(1000, ge=1, le=1_000_000)
    """Open connections per worker. At the cap, the connection waiting longest for a request is
    closed to admit a new one (a new one is refused only when every connection is busy)."""
    header_timeout: Duration = timedelta(seconds=10)
    """How long a client may take to send a request's header: from connecting, or from the
    first byte of a request on a kept-alive connection. Past it: 408 and the connection closes."""
    body_timeout: Duration = timedelta(seconds=10)
    """How long a client may take to send a request's body once its header is in."""
    keepalive_timeout: Duration = timedelta(seconds=75)
    """How long an idle connection is kept open for the client's next request."""
    drain_timeout: Duration = timedelta(seconds=20)
    """On SIGTERM: how long requests in progress may take to finish before they are cut off.
    Must fit in the orchestrator's grace period (Kubernetes: 30s by default)."""
    metrics_port: int | None = Field(None, ge=1, le=65535)
    """Also serve GET /metrics alone, in plain HTTP, on this port of `host`: so that a network
    policy can let Prometheus reach the metrics and nothing else (policies filter by port,
    never by path). /metrics stays on the main port too."""

    @field_validator("header_timeout", "body_timeout", "keepalive_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(hours=1):
            raise ValueError("must be more than 0s and at most 1h")
        return value

    @field_validator("drain_timeout")
    @classmethod
    def _drain(cls, value: timedelta) -> timedelta:
        if value > timedelta(minutes=10):
            raise ValueError("must be at most 10m")
        return value

    @model_validator(mode="after")
    def _tls_pairs(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if self.client_ca is not None and self.tls_cert is None:
            raise ValueError("client_ca (mTLS) needs tls_cert and tls_key")
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError("metrics_port must differ from port")
        return self


RsaSigning = Literal["loop", "threads"]
DEFAULT_RSA_SIGNING: RsaSigning = "threads"
"""How in-process RSA keys sign unless `tokens.rsa_signing` says otherwise: chosen by the paired
`make bench` figures in docs/performance.md ("Where RSA signs"), where flipping it is explained."""


class TokensConfig(_Section):
    default_ttl: Duration = timedelta(hours=1)
    max_ttl: Duration = timedelta(hours=2)
    subject_format: str = DEFAULT_SUBJECT_FORMAT
    algorithm: Algorithm | None = None
    sign_timeout: Duration = timedelta(seconds=5)
    """How long a backend may take to sign before the client gets 503 + Retry-After."""
    rsa_signing: RsaSigning = DEFAULT_RSA_SIGNING
    """Where in-process RSA keys (file backend) sign: "threads", a pool of one thread per core
    beside the event loop; "loop", on the event loop itself, queued, one signature per loop
    iteration (keysvc/loop_signer.py), which needs a worker per core to use every core."""

    @field_validator("subject_format")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        return check_subject_format(value)

    @field_validator("max_ttl")
    @classmethod
    def _max_ttl(cls, value: timedelta) -> timedelta:
        return check_max_ttl(check_token_lifetime(value))

    @field_validator("default_ttl")
    @classmethod
    def _default_ttl(cls, value: timedelta) -> timedelta:
        return check_token_lifetime(value)

    @model_validator(mode="after")
    def _ttls(self) -> TokensConfig:
        if self.default_ttl > self.max_ttl:
            raise ValueError("default_ttl must not exceed max_ttl")
        return self


class RotationConfig(_Section):
    publish_lead: Duration = timedelta(hours=24)
    jwks_max_age: Duration = timedelta(minutes=15)
    refresh_interval: Duration = timedelta(seconds=30)
    period: Duration | None = None
    """How old a backend's newest version may get before `keys rotate --if-older-than` (given
    no DURATION) creates the next one: the schedule's period. Unset: no default."""
    prune_margin: Duration = timedelta(hours=1)
    """How long after a key leaves the JWKS (`published_until`) `keys prune` may disable it:
    room for clocks that disagree and for replicas that have not refreshed yet."""

    @model_validator(mode="after")
    def _verifiers_see_new_keys_first(self) -> RotationConfig:
        if self.jwks_max_age <= timedelta(0) or self.refresh_interval <= timedelta(0):
            raise ValueError("jwks_max_age and refresh_interval must be positive")
        if self.refresh_interval + self.jwks_max_age >= self.publish_lead:
            raise ValueError(
                "refresh_interval + jwks_max_age must be shorter than publish_lead, or a verifier"
                " could meet a token signed by a key it has not fetched yet"
            )
        if self.period is not None and self.period <= self.publish_lead:
            raise ValueError(
                "period must be longer than publish_lead: otherwise each new key is created"
                " before the previous one signs, and several keys wait in the JWKS at once"
                " (see docs/runbooks/rotation.md, choosing the period)"
            )
        return self


class ClientConfig(_Section):
    name: str
    token_sha256: str | None = None
    token_file: Path | None = None
    scopes: list[Scope] = Field(min_length=1)
    organizations: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    @field_validator("token_sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _HEX64.fullmatch(value.lower()):
            raise ValueError("must be the 64-digit hex SHA-256 of the bearer token")
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _one_token_source(self) -> ClientConfig:
        if (self.token_sha256 is None) == (self.token_file is None):
            raise ValueError("set exactly one of token_sha256 or token_file")
        return self

    def token_digest(self) -> bytes:
        """SHA-256 of the client's bearer token (the file is read here, never kept)."""
        if self.token_sha256 is not None:
            return bytes.fromhex(self.token_sha256)
        assert self.token_file is not None
        token = read_secret_file(self.token_file, what="client token file").strip()
        if not token:
            raise ConfigError(f"clients: token file {self.token_file} is empty")
        return hashlib.sha256(token).digest()

    def allows_organization(self, organization: str) -> bool:
        return organization_allowed(self.organizations, organization)


def organization_allowed(patterns: list[str], organization: str) -> bool:
    """Whether `organization` matches one of the glob `patterns` (case-sensitive, as OTF's
    organization names are): `[[clients]] organizations` and `[otf] organizations`."""
    if "*" in patterns:  # the common case, without fnmatch's per-call work
        return True
    return any(fnmatch.fnmatchcase(organization, p) for p in patterns)


class OtfConfig(_Section):
    """`[otf]`: serve OTF's runner endpoint (keysvc.otf), authenticating each caller's job
    token through otfd at `url`. keysvc never holds otfd's secret."""

    url: str
    """otfd's base URL, as otf-agent's --url (keysvc appends /otfapi/... and /api/v2/...)."""
    allow_http: bool = False
    """Plain http to a host other than loopback (inside a cluster, as OTF's own job pods do)."""
    ca_file: Path | None = None
    """PEM CA certificates otfd's https certificate is checked against (default: the system's)."""
    timeout: Duration = timedelta(seconds=10)
    """Per request to otfd; slower (or unreachable) gives the runner 503 + Retry-After."""
    organizations: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    """Glob patterns of the organizations whose jobs may get tokens."""
    workspace_cache: Duration = timedelta(seconds=30)
    """How long a job's workspace lookup is reused for that job's next tokens ("0s": never).
    The job itself is looked up for every token (keysvc.otf.endpoint says why that is enough)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not URL_CHARACTERS.fullmatch(value):
            raise ValueError("must be a URL of printable ASCII characters without spaces")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            raise ValueError("is not a valid URL") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host, such as https://otf.example.com")
        if "@" in parts.netloc:
            raise ValueError("must not hold a user name or password")
        if parts.query or parts.fragment or "?" in value or "#" in value:
            raise ValueError("must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                ssl.create_default_context(cafile=str(value))
            except FileNotFoundError:
                raise ValueError(f"{value} does not exist") from None
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ValueError(f"{value} cannot be read as PEM CA certificates ({exc})") from None
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(minutes=5):
            raise ValueError("must be more than 0s and at most 5m")
        return value

    @field_validator("workspace_cache")
    @classmethod
    def _workspace_cache(cls, value: timedelta) -> timedelta:
        if not timedelta(0) <= value <= timedelta(minutes=10):
            raise ValueError("must be from 0s (no cache) to 10m")
        return value

    @model_validator(mode="after")
    def _https(self) -> OtfConfig:
        parts = urlsplit(self.url)
        if parts.scheme == "http" and not (self.allow_http or is_loopback_host(parts.hostname)):
            raise ValueError(
                "url must be https (http only on loopback, or with allow_http = true: job tokens"
                " travel to otfd in every request)"
            )
        return self


class BackendConfig(_Section):
    """One `[[backends]]` table: `name`, `type`, and the type's own settings as written.

    Reading a config checks that `type` is registered (an entry point in `keysvc.backends`) but
    loads no backend: the settings are validated by the backend's own model when the backend is
    built (`build`, at the service's or command's start), so reading a config needs no cloud
    library."""

    name: str
    type: str
    settings: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _split_settings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        name, type_ = data.pop("name", None), data.pop("type", None)
        if not isinstance(type_, str):
            raise ValueError(f"type is required ({', '.join(available_types())})")
        if type_ not in available_types():
            raise ValueError(str(UnknownBackendType.named(type_)))
        return {"name": name if name is not None else type_, "type": type_, "settings": data}

    def build(self, index: int) -> KeyBackend:
        """The backend this table describes (the table is `backends[index]`): its class loaded
        from the entry point, its settings validated by the class's own Settings model. No I/O.
        Raises ConfigError naming the key, as reading the config does."""
        where = f"backends[{index}]"
        try:
            backend_class = load_backend_class(self.type)
        except UnknownBackendType as exc:
            raise ConfigError(f"{where}: {exc}") from None
        try:
            settings = backend_class.Settings.model_validate(self.settings)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {_first_error(exc)}") from None
        return backend_class(self.name, settings)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("name must be 1-64 characters of letters, digits, '.', '_' or '-'")
        return value


Issuer = Annotated[str, AfterValidator(check_issuer)]


class Config(_Section):
    """The whole config. A top-level setting's rules are in its type (Issuer), never in a
    field_validator here, so that read_settings applies them to that setting alone."""

    issuer: Issuer
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    server: ServerConfig = ServerConfig()
    tokens: TokensConfig = TokensConfig()
    rotation: RotationConfig = RotationConfig()
    clients: list[ClientConfig] = Field(default_factory=list)
    backends: list[BackendConfig] = Field(min_length=1)
    otf: OtfConfig | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        for kind, names in (
            ("backends", [b.name for b in self.backends]),
            ("clients", [c.name for c in self.clients]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind}: duplicate name {dupes[0]!r}")
        return self


def _first_error(exc: ValidationError) -> str:
    """The first problem, in plain words, naming its key (keysvc.validation_errors)."""
    return validation_errors.describe(exc.errors(include_url=False)[0])


def parse_config(data: dict[str, Any]) -> Config:
    """Validate a config mapping; ConfigError names the first offending key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None


class SettingError(ConfigError):
    """A setting read by read_settings is refused: `key` (dotted, or the table holding it) and
    the `problem` in plain words."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def read_settings(data: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """Some settings of a config mapping, by dotted key (`issuer`, `tokens.max_ttl`), as the
    service would run with them: the value the mapping gives, checked by the same models as
    parse_config, or the service's default when it gives none (None where the service has no
    default). Only what holds the keys is read: a top-level setting alone, or the whole table a
    key is in (a table's settings are judged together: default_ttl <= max_ttl). So a copy of the
    service's config serves the operator tools (setup, doctor) on a machine without its key
    files, CA files, backends or their libraries. Raises SettingError."""
    read: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for key in keys:
        top, _, leaf = key.partition(".")
        if top not in read:
            field = Config.model_fields[top]
            if top not in data:
                read[top] = field.get_default(call_default_factory=True, validated_data={})
            else:
                rule = TypeAdapter(field.rebuild_annotation())
                try:
                    read[top] = rule.validate_python(data[top])
                except ValidationError as exc:
                    error = exc.errors(include_url=False)[0]
                    where = validation_errors.location([top, *error["loc"]])
                    raise SettingError(where, validation_errors.problem(error)) from None
        value = read[top]
        if value is PydanticUndefined:
            value = None
        values[key] = getattr(value, leaf) if leaf and value is not None else value
    return values


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two config mappings; values in `override` (from flags) win."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
