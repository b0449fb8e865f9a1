"""Vault's JWT login, as HCP Terraform performs it for a run: the keysvc token is exchanged for
a Vault token at `auth/<path>/login`, and that token is revoked when the run's credentials are
discarded. Plain HTTP(S) through the standard library."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from keysvc.creds.checks import is_token68
from keysvc.creds.errors import VaultLoginError
from keysvc.creds.http import RetryPolicy, Unreachable, error_detail, post_json

REVOKE_TIMEOUT = 5.0


@dataclass(frozen=True)
class VaultEndpoint:
    address: str
    namespace: str | None
    ca_pem: str | None
    timeout: float

    def headers(self, token: str | None = None) -> dict[str, str]:
        headers = {"X-Vault-Request": "true"}
        if self.namespace:
            headers["X-Vault-Namespace"] = self.namespace
        if token is not None:
            headers["X-Vault-Token"] = token
        return headers

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.address.startswith("https:"):
            return None
        return ssl.create_default_context(cadata=self.ca_pem) if self.ca_pem else None

    def url(self, path: str) -> str:
        return f"{self.address.rstrip('/')}/v1/{path}"


def login(endpoint: VaultEndpoint, auth_path: str, role: str, jwt: str) -> str:
    """A Vault token for `role`, or VaultLoginError naming the address, path and role."""
    where = f"Vault JWT login at {endpoint.address} (auth path {auth_path!r}, role {role!r})"
    try:
        reply = post_json(
            endpoint.url(f"auth/{auth_path}/login"),
            {"role": role, "jwt": jwt},
            endpoint.headers(),
            timeout=endpoint.timeout,
            ssl_context=endpoint.ssl_context(),
        )
    except Unreachable as exc:
        raise VaultLoginError(f"{where} failed: {exc}") from None
    body = reply.body if isinstance(reply.body, dict) else {}
    auth = body.get("auth")
    token = auth.get("client_token") if isinstance(auth, dict) else None
    if reply.status != 200 or not isinstance(token, str) or not token:
        raise VaultLoginError(f"{where} failed: {error_detail(reply)}")
    if not is_token68(token):  # it goes into a file, VAULT_TOKEN and the X-Vault-Token header
        raise VaultLoginError(f"{where} failed: Vault answered with a malformed token")
    return token


def revoke(endpoint: VaultEndpoint, token: str) -> str | None:
    """Revoke `token` (best effort). Returns a warning when that failed, else None."""
    try:
        reply = post_json(
            endpoint.url("auth/token/revoke-self"),
            {},
            endpoint.headers(token),
            timeout=min(endpoint.timeout, REVOKE_TIMEOUT),
            retry=RetryPolicy(attempts=2, backoff=0.2),
            ssl_context=endpoint.ssl_context(),
        )
    except Unreachable as exc:
        return f"could not revoke the Vault token at {endpoint.address}: {exc}"
    if reply.status not in (200, 204):
        return f"could not revoke the Vault token at {endpoint.address}: {error_detail(reply)}"
    return None
