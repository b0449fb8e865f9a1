"""Errors shared across layers (no dependencies, so the run side can import them too).

Backend failures form one small hierarchy, so that callers decide by type, never by message:

    BackendError                 a failure whose message is safe to show (HTTP 503, CLI exit 2)
    ├── BackendUnavailable       unreachable, overloaded or sealed: retry after `retry_after`
    │   └── Overloaded           keysvc's own signing queue is full (not the backend's fault)
    ├── NotFound                 no such key, version, alias or mount
    ├── PermissionDenied         keysvc's identity lacks a permission on the key
    ├── Unauthenticated          the backend rejected keysvc's credentials
    └── OperationNotSupported    the backend cannot do this at all (see backends.base capabilities)

Existing callers that catch BackendError or BackendUnavailable keep catching every one of them.
Each backend turns its library's exceptions into these through one table (backends/failures.py).
"""


class ConfigError(ValueError):
    """A configuration problem, its message starting with the key or file it concerns.

    The CLI prints it on one line and exits 2; a backend raises it for problems only the
    operator can fix (a world-readable key, a key pair that does not match)."""


class InsecureKeyError(ConfigError):
    """A private key file that group or others may read. At start it stops the service, like any
    ConfigError; met at a refresh, that backend's keys stop signing until it is fixed (a key
    that may have leaked to another local user must not silently go on signing)."""


class BackendError(Exception):
    """A backend failure whose message is safe to show to a client or operator."""


class BackendUnavailable(BackendError):
    """The backend cannot be reached or is refusing work for now; clients should retry.

    `retry_after` (seconds) is the hint the service passes on as HTTP Retry-After: the backend's
    own when it sent one (a throttled KMS), else the backend's estimate."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(BackendUnavailable):
    """keysvc itself signs as fast as it can, and a signature asked for now would wait longer
    than `tokens.sign_timeout` in its queue (keysvc/loop_signer.py). The client gets 503 with
    `retry_after`, the time the signatures already queued will take; the backend did nothing
    wrong, so this is counted as overload, not as a backend error."""


class NotFound(BackendError):
    """The backend has no such key, key version, alias or mount (deleted, or never there)."""


class PermissionDenied(BackendError):
    """The backend refused an operation: keysvc's identity lacks that permission."""


class Unauthenticated(BackendError):
    """The backend rejected keysvc's credentials (expired, revoked, wrong tenant or account)."""


class OperationNotSupported(BackendError):
    """The backend cannot do this (e.g. rotate a single PEM file given by otfd flags)."""
