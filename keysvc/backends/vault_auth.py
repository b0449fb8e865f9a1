"""Logging in to Vault and keeping the token alive, through hvac.

hvac is synchronous (requests underneath), so every hvac call runs on one dedicated thread (a
bounded executor of size 1): logins and renewals are rare, and one thread is enough to keep them
off the event loop without letting a hung Vault pile up threads. The hot path (signing) does not
use hvac at all; it reads `VaultAuth.token` and talks to Vault over aiohttp.

The token is renewed in the background when two thirds of its TTL have passed. When renewal is
no longer possible (not renewable, or the token is near its max TTL), AppRole and Kubernetes log
in again, and token-file auth re-reads its file (where a Vault Agent keeps a fresh token).
After a 403 the transport asks `reauthenticate()` for a new token, once per stale token.

Nothing here ever puts the token, the secret id or the service-account JWT in a message or log:
errors are built from Vault's own error strings and the auth method's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests
import urllib3

from keysvc.backends.base import BackendUnavailable
from keysvc.backends.failures import Failure, lookup
from keysvc.backends.vault_settings import VaultSettings
from keysvc.errors import ConfigError
from keysvc.secrets import read_secret_file

log = logging.getLogger("keysvc.backends.vault")

RENEW_AT = 2 / 3
"""Renew when this fraction of the token's TTL has passed."""
MIN_USEFUL_TTL = 1 / 3
"""A renewal that grants less than this fraction of the original TTL means the token is near its
max TTL: log in again instead."""
RETRY_DELAY = 5.0
MIN_REAUTH_INTERVAL = 2.0
"""After a 403, AppRole/Kubernetes log in again at most this often: a policy that lacks a
capability must not turn every request into a login (each one creates a token in Vault)."""


@dataclass(frozen=True)
class TokenLease:
    token: str
    ttl: float
    """Seconds the token is valid for from `obtained`; 0 means it never expires."""
    renewable: bool
    obtained: float

    @property
    def renew_due(self) -> float:
        return self.obtained + self.ttl * RENEW_AT


_REASONS: dict[object, str] = {
    requests.exceptions.ConnectTimeout: "timed out",
    requests.exceptions.Timeout: "timed out",
    requests.exceptions.SSLError: "TLS verification failed (check ca_file)",
    requests.exceptions.ConnectionError: "connection failed",
}
"""What an hvac/requests failure says, in a few safe words (never request headers or bodies)."""
AUTH_FAILED = Failure(
    BackendUnavailable,
    "Vault {method} auth for backend {name!r} failed: {reason}",
    retry_after=RETRY_DELAY,
)
"""Every login or renewal failure: the service starts unready and keeps trying (a wrong secret
id fixed in its file, a Vault back up), so even a refused login is not final."""


def vault_error_text(exc: BaseException) -> str:
    """A safe, short description of an hvac/requests failure: Vault's error strings or the
    exception class, never request headers or bodies."""
    if isinstance(exc, hvac.exceptions.VaultError):
        errors = [str(e) for e in (exc.errors or []) if e]
        return "; ".join(errors) if errors else type(exc).__name__
    return lookup(_REASONS, exc, default=type(exc).__name__)


class VaultAuth:
    """Holds the current Vault token and keeps it valid."""

    def __init__(self, settings: VaultSettings, backend_name: str) -> None:
        self.settings = settings
        self.backend_name = backend_name
        self.method = settings.auth_method
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"vault-auth-{backend_name}")
        self._lease: TokenLease | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_reauth = float("-inf")
        self.logins = 0
        self.renewals = 0

    # -- public -------------------------------------------------------------------------------

    @property
    def token(self) -> str:
        if self._lease is None:
            raise BackendUnavailable(
                f"backend {self.backend_name!r} is not logged in to Vault yet", retry_after=RETRY_DELAY
            )
        return self._lease.token

    @property
    def lease(self) -> TokenLease | None:
        return self._lease

    async def start(self) -> None:
        """First login, then keep the token fresh in the background. A ConfigError (missing
        secret file) is raised; an unreachable Vault is raised as BackendUnavailable while the
        background task keeps trying."""
        if self.settings.insecure:  # keysvc logs its own warning once, at open
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        try:
            await self._obtain()
        except BackendUnavailable:
            self._start_keeping_fresh()  # keeps trying to log in
            raise
        self._start_keeping_fresh()

    def _start_keeping_fresh(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._keep_fresh(), name=f"vault-auth-{self.backend_name}")

    async def login(self) -> TokenLease:
        """Log in again now (token auth: re-read and look up the token), whatever the renewal
        schedule says; for operators' checks and the benchmark."""
        await self._obtain()
        assert self._lease is not None
        return self._lease

    async def reauthenticate(self, stale_token: str) -> bool:
        """Get a new token after Vault refused `stale_token` (403). Returns whether the token
        changed, so the caller knows whether a retry can help. Concurrent callers share one
        login."""
        async with self._lock:
            if self._lease is not None and self._lease.token != stale_token:
                return True  # someone else already replaced it
            try:
                if self.method == "token":
                    # Nothing to gain unless the file (or environment) holds another token now.
                    if await self._call(self._static_token) == stale_token:
                        return False
                elif time.monotonic() - self._last_reauth < MIN_REAUTH_INTERVAL:
                    return False
                self._last_reauth = time.monotonic()
                await self._obtain(locked=True)
            except (BackendUnavailable, ConfigError) as exc:
                log.warning("vault backend %s: re-authentication failed: %s", self.backend_name, exc)
                return False
            return self._lease is not None and self._lease.token != stale_token

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- background renewal -------------------------------------------------------------------

    async def _keep_fresh(self) -> None:
        while True:
            lease = self._lease
            if lease is None:
                delay = RETRY_DELAY
            elif lease.ttl <= 0:
                if self.method != "token" or self.settings.token_file is None:
                    return  # a non-expiring token from the environment: nothing to do
                delay = 60.0  # a token file may be replaced by an agent: look again now and then
            else:
                delay = max(0.2, lease.renew_due - time.monotonic())
            await asyncio.sleep(delay)
            try:
                await self._refresh()
            except (BackendUnavailable, ConfigError) as exc:
                log.warning("vault backend %s: token refresh failed: %s", self.backend_name, exc)
                await asyncio.sleep(self._retry_delay())

    def _retry_delay(self) -> float:
        lease = self._lease
        if lease is None or lease.ttl <= 0:
            return RETRY_DELAY
        remaining = lease.obtained + lease.ttl - time.monotonic()
        return max(0.2, min(RETRY_DELAY, remaining / 4))

    async def _refresh(self) -> None:
        lease = self._lease
        if lease is not None and lease.renewable and lease.ttl > 0:
            renewed = await self._call(self._renew_sync, lease)
            if renewed is not None and renewed.ttl >= lease.ttl * MIN_USEFUL_TTL:
                self._lease = renewed
                self.renewals += 1
                return
        if self.method == "token" and self.settings.token_file is None and lease is not None:
            if lease.ttl > 0:
                log.warning(
                    "vault backend %s: the VAULT_TOKEN cannot be renewed further and expires in"
                    " %.0fs; give keysvc a renewable token or use AppRole/Kubernetes auth",
                    self.backend_name,
                    max(0.0, lease.obtained + lease.ttl - time.monotonic()),
                )
            # Keep using it until it expires; nothing better is available.
            self._lease = TokenLease(lease.token, 0, False, lease.obtained)
            return
        async with self._lock:
            await self._obtain(locked=True)

    async def _obtain(self, locked: bool = False) -> None:
        if not locked:
            async with self._lock:
                await self._obtain(locked=True)
            return
        self._lease = await self._call(self._login_sync)
        self.logins += 1

    async def _call(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            raise AUTH_FAILED(
                method=self.method, name=self.backend_name, reason=vault_error_text(exc)
            ) from None

    # -- hvac, on the auth thread -------------------------------------------------------------

    def _client(self, token: str | None = None) -> hvac.Client:
        s = self.settings
        verify: bool | str = False if s.insecure else (str(s.ca_file) if s.ca_file else True)
        return hvac.Client(
            url=s.endpoint,
            token=token,
            verify=verify,
            timeout=s.timeout.total_seconds(),
            namespace=s.namespace,
        )

    def _login_sync(self) -> TokenLease:
        s = self.settings
        started = time.monotonic()
        client = self._client()
        if self.method == "approle":
            assert s.role_id is not None and s.secret_id_file is not None
            secret_id = read_secret_file(s.secret_id_file, "Vault AppRole secret_id file")
            response = client.auth.approle.login(
                role_id=s.role_id,
                secret_id=secret_id.decode().strip(),
                mount_point=s.auth_mount_point,
                use_token=False,
            )
            return self._lease_from_auth(response, started)
        if self.method == "kubernetes":
            assert s.role is not None
            jwt = self._service_account_token(s.service_account_token_file)
            response = client.auth.kubernetes.login(
                role=s.role, jwt=jwt, mount_point=s.auth_mount_point, use_token=False
            )
            return self._lease_from_auth(response, started)
        token = self._static_token()
        client.token = token
        try:
            data = client.auth.token.lookup_self()["data"]
        except hvac.exceptions.Forbidden:
            # Either the token is dead or its policies lack lookup-self: keysvc cannot tell, so
            # it uses the token as is; a dead token shows as 503s on the first sign.
            log.warning(
                "vault backend %s: cannot look up the token (permission denied); it is used"
                " without renewal", self.backend_name,
            )
            return TokenLease(token, 0, False, started)
        return TokenLease(token, float(data.get("ttl") or 0), bool(data.get("renewable")), started)

    def _static_token(self) -> str:
        path = self.settings.token_file
        if path is not None:
            token = read_secret_file(path, "Vault token file").decode().strip()
            if not token:
                raise ConfigError(f"backends.{self.backend_name}.token_file: {path} is empty")
            return token
        token = os.environ.get("VAULT_TOKEN", "").strip()
        if not token:
            raise ConfigError(
                f"backends.{self.backend_name}: no Vault credentials: set token_file, VAULT_TOKEN,"
                " role_id + secret_id_file (AppRole) or role (Kubernetes)"
            )
        return token

    def _service_account_token(self, path: Path) -> str:
        # Kubernetes mounts projected service-account tokens world-readable (mode 0644) inside
        # the pod, so the usual secret-file mode check would refuse every real deployment; the
        # token is short-lived and audience-bound, which is Kubernetes' answer to that.
        try:
            jwt = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"backends.{self.backend_name}.service_account_token_file: {path} cannot be"
                f" read: {exc.strerror}"
            ) from None
        if not jwt:
            raise ConfigError(f"backends.{self.backend_name}.service_account_token_file: {path} is empty")
        return jwt

    def _renew_sync(self, lease: TokenLease) -> TokenLease | None:
        started = time.monotonic()
        client = self._client(lease.token)
        try:
            response = client.auth.token.renew_self()
        except hvac.exceptions.VaultError as exc:
            log.info("vault backend %s: renewal refused (%s)", self.backend_name, vault_error_text(exc))
            return None
        return self._lease_from_auth(response, started)

    @staticmethod
    def _lease_from_auth(response: dict[str, Any], started: float) -> TokenLease:
        auth = response["auth"]
        return TokenLease(
            token=auth["client_token"],
            ttl=float(auth.get("lease_duration") or 0),
            renewable=bool(auth.get("renewable")),
            obtained=started,
        )
