"""The run side: turn a run's `TFC_*` variables into cloud credentials, and discard them after.

A runner calls `apply(env, context, workdir, client)` before a phase and `clean(workdir)` after
(or the `keysvc creds apply|clean` commands). This package talks to keysvc over HTTP only and
imports no key backend, key ring or private key: it runs inside a Terraform run.
"""

from keysvc.creds.apply import Result, apply, clean
from keysvc.creds.context import RunContext
from keysvc.creds.errors import (
    CredsError,
    TokenRequestError,
    VariableError,
    VaultLoginError,
    WorkdirError,
)
from keysvc.creds.http import RetryPolicy
from keysvc.creds.tokens import TokenClient

__all__ = [
    "CredsError",
    "Result",
    "RetryPolicy",
    "RunContext",
    "TokenClient",
    "TokenRequestError",
    "VariableError",
    "VaultLoginError",
    "WorkdirError",
    "apply",
    "clean",
]
