"""From a client library's failure to keysvc's typed error: one table per backend.

Every backend meets the same few failures in its own library's words (an exception class, an
HTTP status, an error code): the server is unreachable, throttling, failing, or says the key is
not there, the identity lacks a permission, the credentials are wrong. Each backend writes one
table from those words to a `Failure` (which keysvc error, what the operator reads, whether a
retry within the same request may help) instead of a chain of ifs, and `lookup` picks the
entry, most specific first, the way httpx maps its transport's exceptions.

    FAILURES = {
        TimeoutError: Failure(BackendUnavailable, "{where} did not answer within {seconds:g}s"),
        429: Failure(BackendUnavailable, "{where} is throttling", retry=True),
        403: Failure(PermissionDenied, "{where} denied {what}: grant keysvc ..."),
        "5xx": Failure(BackendUnavailable, "{where} failed ({status})", retry=True),
    }
    raise lookup(FAILURES, exc, status, status_class(status), default=REFUSED)(where=..., ...)

Messages are `str.format` templates over fields the backend passes; they must never carry a
token, a secret or the library's raw text where that may hold request details.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from keysvc.backends.retry import Transient
from keysvc.errors import BackendError, BackendUnavailable

DEFAULT_RETRY_AFTER = 1.0
V = TypeVar("V")


@dataclass(frozen=True)
class Failure:
    """How one kind of failure is reported."""

    error: type[BackendError]
    """The keysvc error raised (BackendUnavailable, NotFound, PermissionDenied, ...)."""
    message: str
    """A `str.format` template over the fields the backend passes."""
    retry_after: float = DEFAULT_RETRY_AFTER
    """BackendUnavailable only: the client's Retry-After when the server named none."""
    retry: bool = False
    """Whether trying again within the same request may help: the error is then a Transient,
    which the backend's RetryPolicy retries (BackendUnavailable entries only)."""

    def __call__(self, retry_after: float | None = None, **fields: object) -> BackendError:
        """The error, its message filled in; `retry_after` is the server's own hint, if any
        (for a Transient also the least a retry waits)."""
        message = self.message.format(**fields)
        if issubclass(self.error, BackendUnavailable):
            hint = retry_after or self.retry_after
            if self.retry:
                return Transient(message, retry_after=hint, wait=retry_after or 0.0)
            return self.error(message, retry_after=hint)
        return self.error(message)


def lookup(table: Mapping[Hashable, V], *keys: object, default: V) -> V:
    """The entry for the first key found in `table`. An exception key is looked up by its
    class and then each base class in turn (most specific first); any other key (an HTTP
    status, an error code) by value. None keys are skipped."""
    for key in keys:
        candidates = type(key).__mro__ if isinstance(key, BaseException) else (key,)
        for candidate in candidates:
            if candidate is not None and candidate in table:
                return table[candidate]
    return default


def status_class(status: int | None) -> str | None:
    """"4xx" or "5xx" for an HTTP status, the fallback key after the status itself."""
    return f"{status // 100}xx" if status else None
