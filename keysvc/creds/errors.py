"""Errors of the run side. Every message is one line, safe to print: it names the variable or
endpoint at fault and never carries a token, a secret or a private value."""

from __future__ import annotations


class CredsError(Exception):
    """A known failure of `apply` or `clean`; the CLI prints it and exits 2."""


class VariableError(CredsError):
    """A `TFC_*` variable is missing or holds a bad value. Raised before anything is fetched
    or written."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {problem}")


class TokenRequestError(CredsError):
    """keysvc did not issue a token (unreachable after retries, or it refused the request)."""


class VaultLoginError(CredsError):
    """Vault refused, or could not be reached for, the JWT login."""


class WorkdirError(CredsError):
    """The work directory cannot take the credential files (missing, or a file keysvc did not
    write is in the way)."""
