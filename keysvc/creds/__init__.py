"""The run side: turn a run's `TFC_*` variables into cloud credentials, and discard them after.

A runner calls `apply(env, run, workdir, client)` before a phase and `clean(workdir)` after
(or the `keysvc creds apply|clean` commands). This package talks to keysvc over HTTP only and
imports no key backend, key ring or private key: it runs inside a Terraform run.
"""

from keysvc.creds.apply import Result, apply, clean
from keysvc.creds.errors import (
    CredsError,
    TokenRequestError,
    VariableError,
    VaultLoginError,
    WorkdirError,
)
from keysvc.creds.http import RetryPolicy
from keysvc.creds.tokens import TokenClient
from keysvc.run_identity import Run

RunContext = Run
"""The run's former name here (its `phase` is now `run_phase`), kept for runners' code."""

__all__ = [
    "CredsError",
    "Result",
    "RetryPolicy",
    "Run",
    "RunContext",
    "TokenClient",
    "TokenRequestError",
    "VariableError",
    "VaultLoginError",
    "WorkdirError",
    "apply",
    "clean",
]
