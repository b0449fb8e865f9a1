"""Vault's HTTP API over aiohttp: the async path every Transit call takes.

Why not hvac here: hvac is synchronous, so each call would hold a thread for a full round trip.
At 20 ms RTT a pool of N threads caps signing at N × 50 calls/s and a hung Vault can exhaust the
pool; aiohttp keeps any number of calls in flight on the event loop, bounded only by
`max_connections` and `request_timeout`. hvac keeps the rarely used, more varied auth calls
(see vault_auth.py).

Every failure is mapped here, once, to what the key ring understands:
- unreachable, timed out, sealed (503), 429, other 5xx, and 403 after one re-login →
  `BackendUnavailable` (→ HTTP 503 with Retry-After);
- other 4xx → `BackendError` with Vault's own error text.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp

from keysvc.backends.base import BackendError, BackendUnavailable
from keysvc.backends.vault_auth import VaultAuth
from keysvc.backends.vault_settings import VaultSettings
from keysvc.errors import ConfigError

UNREACHABLE_RETRY = 2.0
SEALED_RETRY = 5.0
DENIED_RETRY = 2.0
SERVER_ERROR_RETRY = 1.0


class VaultNotFound(BackendError):
    """Vault answered 404 (a missing key or mount)."""


def _errors(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        texts = [str(e) for e in body["errors"] if e]
        if texts:
            return "; ".join(texts)[:500]
    return ""


def _retry_after(response: aiohttp.ClientResponse, default: float) -> float:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else default


class VaultHTTP:
    """A small async Vault client: one aiohttp session, Vault's headers, error mapping."""

    def __init__(self, settings: VaultSettings, auth: VaultAuth, backend_name: str) -> None:
        self.settings = settings
        self.auth = auth
        self.backend_name = backend_name
        self.requests_sent = 0
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.settings.tls_skip_verify:
            return False
        if self.settings.ca_cert is not None:
            return ssl.create_default_context(cafile=str(self.settings.ca_cert))
        return True

    async def open(self) -> None:
        if self._session is not None:
            return
        try:
            ssl_setting = self._ssl()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"backends.{self.backend_name}.ca_cert: {self.settings.ca_cert} cannot be used: {exc}"
            ) from None
        connector = aiohttp.TCPConnector(
            limit=self.settings.max_connections, ssl=ssl_setting, keepalive_timeout=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout.total_seconds()),
            json_serialize=lambda obj: json.dumps(obj, separators=(",", ":")),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _where(self) -> str:
        return f"Vault at {self.settings.address}"

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *,
        timeout: float | None = None,
    ) -> Any:
        """Call `/v1/<path>` and return the parsed JSON body (None for 204). After a 403 the
        token is refreshed once and the call retried if that produced a new token. `timeout`
        overrides `request_timeout` for calls known to be slow (key generation)."""
        token = self.auth.token
        status, payload, response = await self._send(method, path, body, token, timeout)
        if status == 403 and await self.auth.reauthenticate(token):
            status, payload, response = await self._send(
                method, path, body, self.auth.token, timeout
            )
        return self._result(method, path, status, payload, response)

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None, token: str,
        timeout: float | None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        if self._session is None:
            raise BackendUnavailable(f"backend {self.backend_name!r} is not open")
        headers = {"X-Vault-Token": token, "X-Vault-Request": "true"}
        if self.settings.namespace:
            headers["X-Vault-Namespace"] = self.settings.namespace
        url = f"{self.settings.address}/v1/{path}"
        limit = self.settings.request_timeout.total_seconds() if timeout is None else timeout
        self.requests_sent += 1
        try:
            async with self._session.request(
                method, url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=limit)
            ) as response:
                raw = await response.read()
        except TimeoutError:
            raise BackendUnavailable(
                f"{self._where()} did not answer within {limit:g}s",
                retry_after=UNREACHABLE_RETRY,
            ) from None
        except aiohttp.ClientSSLError:
            raise BackendUnavailable(
                f"{self._where()}: TLS verification failed (check ca_cert)",
                retry_after=UNREACHABLE_RETRY,
            ) from None
        except (aiohttp.ClientError, OSError):
            raise BackendUnavailable(
                f"{self._where()} is unreachable", retry_after=UNREACHABLE_RETRY
            ) from None
        payload: Any = None
        if raw:
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
        return response.status, payload, response

    def _result(
        self, method: str, path: str, status: int, payload: Any, response: aiohttp.ClientResponse
    ) -> Any:
        if 200 <= status < 300:
            if status != 204 and not isinstance(payload, dict):
                raise BackendUnavailable(
                    f"{self._where()} answered {method} {path} with a body that is not JSON",
                    retry_after=SERVER_ERROR_RETRY,
                )
            return payload
        detail = _errors(payload)
        suffix = f": {detail}" if detail else ""
        if status == 503 and "sealed" in detail.lower():
            raise BackendUnavailable(
                f"{self._where()} is sealed", retry_after=_retry_after(response, SEALED_RETRY)
            )
        if status == 403:
            raise BackendUnavailable(
                f"{self._where()} denied {method} {path} (HTTP 403: the token expired or was"
                f" revoked, or its policy lacks this capability){suffix}",
                retry_after=DENIED_RETRY,
            )
        if status == 429 or status >= 500:
            raise BackendUnavailable(
                f"{self._where()} answered {method} {path} with HTTP {status}{suffix}",
                retry_after=_retry_after(response, SERVER_ERROR_RETRY),
            )
        if status == 404:
            raise VaultNotFound(f"{self._where()}: {method} {path} not found (HTTP 404){suffix}")
        raise BackendError(f"{self._where()} refused {method} {path} (HTTP {status}){suffix}")
