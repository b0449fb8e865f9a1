"""Settings of the `vault` backend: where Transit is, which key, how to log in, how to batch.

Three ways to log in, chosen by which settings are present (or named by `auth`):
- `token`: a token from `token_file` (re-read on renewal, so a Vault Agent sink works) or from
  the `VAULT_TOKEN` environment variable;
- `approle`: `role_id` plus `secret_id_file`;
- `kubernetes`: `role` plus the pod's service-account token (`service_account_token_file`).
Secrets are only ever named by file here, never given inline, so a config file can be shown.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from keysvc.backends.base import BackendSettings
from keysvc.durations import Duration

AuthMethod = Literal["token", "approle", "kubernetes"]
DEFAULT_SA_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
_MOUNT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./")


class VaultSettings(BackendSettings):
    endpoint: str = Field(validation_alias="address")
    """Vault's URL, e.g. https://vault.example.com:8200 (formerly `address`)."""
    mount: str = "transit"
    key: str
    namespace: str | None = None
    """Vault Enterprise / OpenBao namespace (sent as X-Vault-Namespace)."""

    auth: AuthMethod | None = None
    """Inferred when absent: role_id → approle, role → kubernetes, otherwise token."""
    token_file: Path | None = None
    role_id: str | None = None
    secret_id_file: Path | None = None
    role: str | None = None
    service_account_token_file: Path = DEFAULT_SA_TOKEN
    auth_mount: str | None = None
    """Where the auth method is mounted; default `approle` or `kubernetes`."""

    ca_file: Path | None = Field(None, validation_alias="ca_cert")
    """PEM roots to trust for Vault's certificate (formerly `ca_cert`)."""
    insecure: bool = Field(False, validation_alias="tls_skip_verify")
    """Do not verify Vault's TLS certificate: for test servers only; keysvc warns at start
    (formerly `tls_skip_verify`)."""

    timeout: Duration = Field(timedelta(seconds=3), validation_alias="request_timeout")
    """Bound on every call to Vault: a slow or hung Vault becomes 503 after this long
    (formerly `request_timeout`)."""
    retry_budget: Duration = timedelta(seconds=1)
    """How long, in all, a call answered 429 or 5xx (not sealed) may wait between tries
    (Vault's Retry-After, else backoff from 0.1 s); never past tokens.sign_timeout. 0s: none."""
    batch_window: Duration = timedelta(milliseconds=2)
    max_batch: int = Field(100, ge=1, le=1000)
    max_connections: int = Field(16, ge=1, le=256)

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://vault.example.com:8200")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be Vault's base URL, without a path (no /v1)")
        return value.rstrip("/")

    @field_validator("mount", "auth_mount")
    @classmethod
    def _mount(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip("/")
        if not value or not set(value) <= _MOUNT_CHARS or ".." in value:
            raise ValueError("must be a Vault mount path such as 'transit'")
        return value

    @field_validator("key")
    @classmethod
    def _key_name(cls, value: str) -> str:
        if not value or "/" in value or not set(value) <= _MOUNT_CHARS:
            raise ValueError("must be a Transit key name (letters, digits, '-', '_', '.')")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    @field_validator("batch_window")
    @classmethod
    def _window(cls, value: timedelta) -> timedelta:
        if value > timedelta(seconds=1):
            raise ValueError("must be at most 1s (it delays every signature)")
        return value

    @model_validator(mode="after")
    def _one_auth_method(self) -> VaultSettings:
        method = self.auth_method
        approle_fields = self.role_id is not None or self.secret_id_file is not None
        if method == "approle":
            if self.role_id is None or self.secret_id_file is None:
                raise ValueError("AppRole auth needs both role_id and secret_id_file")
        elif approle_fields:
            raise ValueError(f"role_id/secret_id_file belong to AppRole auth, not {method}")
        if method == "kubernetes" and self.role is None:
            raise ValueError("Kubernetes auth needs role")
        if method != "kubernetes" and self.role is not None:
            raise ValueError(f"role belongs to Kubernetes auth, not {method}")
        if method != "token" and self.token_file is not None:
            raise ValueError(f"token_file belongs to token auth, not {method}")
        if self.insecure and self.ca_file is not None:
            raise ValueError(
                "set ca_file or insecure (formerly ca_cert, tls_skip_verify), not both"
            )
        return self

    @property
    def auth_method(self) -> AuthMethod:
        if self.auth is not None:
            return self.auth
        if self.role_id is not None or self.secret_id_file is not None:
            return "approle"
        if self.role is not None:
            return "kubernetes"
        return "token"

    @property
    def auth_mount_point(self) -> str:
        return self.auth_mount or {"approle": "approle", "kubernetes": "kubernetes"}.get(
            self.auth_method, "token"
        )
