"""Logged-in sessions on one PKCS#11 token, pooled and reused.

A session can run one operation at a time, and opening one (and finding a key in it) costs round
trips to the HSM, so sessions are kept in a bounded pool and each is handed to one thread at a
time. The login belongs to the whole application, not to a session: one dedicated login session
holds it, and the pooled sessions are opened without a PIN and share it. Closing the login
session logs every session out, so it is closed last.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pkcs11
from pkcs11 import exceptions as p11

from keysvc.backends.pkcs11_library import LoadedModule

SESSION_LOST: tuple[type[BaseException], ...] = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.DeviceRemoved,
    p11.DeviceError,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
    p11.UserNotLoggedIn,
    p11.ObjectHandleInvalid,
    p11.KeyHandleInvalid,
    p11.OperationActive,
    p11.GeneralError,
)
"""Errors after which a session (or the whole connection: a vanished token, a lost login, a
restarted HSM client) cannot be trusted again. Opening a fresh connection may cure them."""

PIN_REFUSED: tuple[type[BaseException], ...] = (
    p11.PinIncorrect,
    p11.PinInvalid,
    p11.PinLenRange,
    p11.PinExpired,
    p11.PinLocked,
    p11.UserPinNotInitialized,
)


class PoolClosed(Exception):
    """The pool was closed (the connection was replaced or the backend closed)."""


class LoginLost(Exception):
    """A session is open but no longer logged in (the token or HSM client restarted)."""


def close_quietly(session: Any) -> None:
    """Close a session whose token may already be gone."""
    with contextlib.suppress(pkcs11.PKCS11Error):
        session.close()


@dataclass(eq=False)
class PooledSession:
    """A session plus the private-key objects already found in it (by key label): finding a
    key is a three-call search, signing with a found one is one call."""

    session: Any
    keys: dict[str, Any] = field(default_factory=dict)


class SessionPool:
    """At most `size` sessions, opened on first need and reused, one thread each at a time."""

    def __init__(self, open_session: Callable[[], Any], size: int) -> None:
        self._open_session = open_session
        self.size = size
        self._idle: list[PooledSession] = []
        self._live = 0
        self._closed = False
        self._cond = threading.Condition()
        self.opened = 0
        """Sessions opened over the pool's life (a test and a metric of reuse)."""

    def acquire(self, timeout: float) -> PooledSession:
        with self._cond:
            while True:
                if self._closed:
                    raise PoolClosed
                if self._idle:
                    return self._idle.pop()
                if self._live < self.size:
                    self._live += 1
                    break
                if not self._cond.wait(timeout):
                    raise TimeoutError(f"no PKCS#11 session free within {timeout:g}s")
        try:
            pooled = PooledSession(self._open_session())
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise
        with self._cond:
            self.opened += 1
        return pooled

    def release(self, pooled: PooledSession, *, broken: bool = False) -> None:
        with self._cond:
            keep = not (broken or self._closed)
            if keep:
                self._idle.append(pooled)
            else:
                self._live -= 1
            self._cond.notify()
        if not keep:
            close_quietly(pooled.session)

    @contextlib.contextmanager
    def session(self, timeout: float = 30.0) -> Iterator[PooledSession]:
        """A session for one operation; one that failed with a lost-session error is closed
        instead of returned."""
        pooled = self.acquire(timeout)
        try:
            yield pooled
        except BaseException as exc:
            self.release(pooled, broken=isinstance(exc, SESSION_LOST))
            raise
        self.release(pooled)

    def close(self) -> None:
        """Close the idle sessions now, and the busy ones when they come back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._cond.notify_all()
        for pooled in idle:
            close_quietly(pooled.session)


class TokenSessions:
    """One logged-in connection to a token: the login session, the pool, the mechanisms.

    Replaced as a whole when the token is lost (`broken`); the next operation opens a new one.
    """

    def __init__(self, module: LoadedModule, token_label: str, pin: str, size: int) -> None:
        with module.calls():
            self.token = module.lib.get_token(token_label=token_label)
            self.mechanisms: frozenset[Any] = frozenset(self.token.slot.get_mechanisms())
            try:
                self._login = self.token.open(user_pin=pin)
            except p11.UserAlreadyLoggedIn:
                # The login survived a connection this backend dropped (the token did not see
                # the logout): the sessions share it; this one must not log out on close.
                self._login = self.token.open()
        self.module = module
        self.pool = SessionPool(self._open, size)
        self.broken = False

    def _open(self) -> Any:
        with self.module.calls():
            return self.token.open()

    @contextlib.contextmanager
    def read_write(self) -> Iterator[Any]:
        """A short-lived read/write session (key generation and relabelling only: signing
        needs no write access, so the pool's sessions are read-only)."""
        with self.module.calls():
            session = self.token.open(rw=True)
        try:
            yield session
        finally:
            close_quietly(session)

    def close(self) -> None:
        self.pool.close()
        close_quietly(self._login)
