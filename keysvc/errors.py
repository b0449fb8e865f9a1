"""Errors shared across layers (no dependencies, so the run side can import them too)."""


class ConfigError(ValueError):
    """A configuration problem, its message starting with the key or file it concerns.

    The CLI prints it on one line and exits 2; a backend raises it for problems only the
    operator can fix (a world-readable key, a key pair that does not match)."""


class BackendError(Exception):
    """A backend failure whose message is safe to show to a client or operator."""


class BackendUnavailable(BackendError):
    """The backend cannot be reached or is refusing work for now; clients should retry."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OperationNotSupported(BackendError):
    """The backend cannot do this (e.g. rotate a single PEM file given by otfd flags)."""
