"""Errors shared across layers."""


class ConfigError(ValueError):
    """A configuration problem, its message starting with the key or file it concerns.

    The CLI prints it on one line and exits 2; a backend raises it for problems only the
    operator can fix (a world-readable key, a key pair that does not match)."""
