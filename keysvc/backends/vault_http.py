"""Vault's HTTP API over aiohttp: the async path every Transit call takes.

Why not hvac here: hvac is synchronous, so each call would hold a thread for a full round trip.
At 20 ms RTT a pool of N threads caps signing at N × 50 calls/s and a hung Vault can exhaust the
pool; aiohttp keeps any number of calls in flight on the event loop, bounded only by
`max_connections` and `timeout`. hvac keeps the rarely used, more varied auth calls
(see vault_auth.py).

Every failure is mapped here, once, by one table (FAILURES), to what the key ring understands:
- unreachable, timed out, sealed (503), 429, other 5xx, and 403 after one re-login →
  `BackendUnavailable` (→ HTTP 503 with Retry-After);
- 404 → `NotFound`; other 4xx → `BackendError` with Vault's own error text.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp

from keysvc.backends.base import BackendError, BackendUnavailable, NotFound
from keysvc.backends.failures import Failure, lookup, status_class
from keysvc.backends.retry import RetryPolicy, time_left
from keysvc.backends.vault_auth import VaultAuth
from keysvc.backends.vault_settings import VaultSettings
from keysvc.errors import ConfigError

UNREACHABLE_RETRY = 2.0
SEALED_RETRY = 5.0
DENIED_RETRY = 2.0
SERVER_ERROR_RETRY = 1.0

_TIMED_OUT = Failure(
    BackendUnavailable, "{where} did not answer within {seconds:g}s", retry_after=UNREACHABLE_RETRY
)
_UNREACHABLE = Failure(BackendUnavailable, "{where} is unreachable", retry_after=UNREACHABLE_RETRY)
_ANSWERED = Failure(
    BackendUnavailable,
    "{where} answered {method} {path} with HTTP {status}{suffix}",
    retry_after=SERVER_ERROR_RETRY,
    retry=True,
)
FAILURES: dict[object, Failure] = {
    # No answer (by class, most specific first).
    TimeoutError: _TIMED_OUT,
    aiohttp.ServerTimeoutError: _TIMED_OUT,
    aiohttp.ClientSSLError: Failure(
        BackendUnavailable,
        "{where}: TLS verification failed (check ca_file)",
        retry_after=UNREACHABLE_RETRY,
    ),
    aiohttp.ClientError: _UNREACHABLE,
    OSError: _UNREACHABLE,
    # An answer (by what it says, then its status).
    "sealed": Failure(BackendUnavailable, "{where} is sealed", retry_after=SEALED_RETRY),
    "not json": Failure(
        BackendUnavailable,
        "{where} answered {method} {path} with a body that is not JSON",
        retry_after=SERVER_ERROR_RETRY,
    ),
    # A 403 that one re-login did not cure: most likely an expired or revoked token that an
    # agent or a renewal will replace, so it is retried by clients, not refused for good.
    403: Failure(
        BackendUnavailable,
        "{where} denied {method} {path} (HTTP 403: the token expired or was revoked, or its"
        " policy lacks this capability){suffix}",
        retry_after=DENIED_RETRY,
    ),
    429: _ANSWERED,
    "5xx": _ANSWERED,
    404: Failure(NotFound, "{where}: {method} {path} not found (HTTP 404){suffix}"),
}
"""aiohttp's failures and Vault's answers → keysvc's errors."""
REFUSED = Failure(BackendError, "{where} refused {method} {path} (HTTP {status}){suffix}")


def _errors(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        texts = [str(e) for e in body["errors"] if e]
        if texts:
            return "; ".join(texts)[:500]
    return ""


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


class VaultHTTP:
    """A small async Vault client: one aiohttp session, Vault's headers, error mapping."""

    def __init__(self, settings: VaultSettings, auth: VaultAuth, backend_name: str) -> None:
        self.settings = settings
        self.auth = auth
        self.backend_name = backend_name
        self.requests_sent = 0
        self.retry = RetryPolicy.of(settings.retry_budget)
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.settings.insecure:
            return False
        if self.settings.ca_file is not None:
            return ssl.create_default_context(cafile=str(self.settings.ca_file))
        return True

    async def open(self) -> None:
        if self._session is not None:
            return
        try:
            ssl_setting = self._ssl()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"backends.{self.backend_name}.ca_file: {self.settings.ca_file} cannot be used: {exc}"
            ) from None
        connector = aiohttp.TCPConnector(
            limit=self.settings.max_connections, ssl=ssl_setting, keepalive_timeout=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout.total_seconds()),
            json_serialize=lambda obj: json.dumps(obj, separators=(",", ":")),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _where(self) -> str:
        return f"Vault at {self.settings.endpoint}"

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *,
        timeout: float | None = None,
    ) -> Any:
        """Call `/v1/<path>` and return the parsed JSON body (None for 204). After a 403 the
        token is refreshed once and the call retried if that produced a new token; a 429 or 5xx
        is retried by the backend's RetryPolicy (within `retry_budget` and the caller's
        deadline). `timeout` overrides the setting for calls known to be slow (key generation).
        """
        limit = self.settings.timeout.total_seconds() if timeout is None else timeout

        async def attempt() -> Any:
            token = self.auth.token
            status, payload, response = await self._send(method, path, body, token, limit)
            if status == 403 and await self.auth.reauthenticate(token):
                status, payload, response = await self._send(
                    method, path, body, self.auth.token, limit
                )
            return self._result(method, path, status, payload, response)

        return await self.retry.run(attempt)

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None, token: str, limit: float
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        if self._session is None:
            raise BackendUnavailable(f"backend {self.backend_name!r} is not open")
        headers = {"X-Vault-Token": token, "X-Vault-Request": "true"}
        if self.settings.namespace:
            headers["X-Vault-Namespace"] = self.settings.namespace
        url = f"{self.settings.endpoint}/v1/{path}"
        limit = time_left(limit)
        self.requests_sent += 1
        try:
            async with self._session.request(
                method, url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=limit)
            ) as response:
                raw = await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise lookup(FAILURES, exc, default=_UNREACHABLE)(
                where=self._where(), seconds=limit
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
        if 200 <= status < 300 and (status == 204 or isinstance(payload, dict)):
            return payload
        detail = _errors(payload)
        sealed = status == 503 and "sealed" in detail.lower()
        failure = lookup(
            FAILURES,
            "sealed" if sealed else None,
            "not json" if status < 300 else None,
            status,
            status_class(status),
            default=REFUSED,
        )
        raise failure(
            retry_after=_retry_after(response),
            where=self._where(),
            method=method,
            path=path,
            status=status,
            suffix=f": {detail}" if detail else "",
        )
