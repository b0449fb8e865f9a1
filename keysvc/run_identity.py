"""What a token says about the OTF run it was issued for: its subject and `terraform_*` claims.

Cloud trust configurations match these strings, so `keysvc setup` (which writes the patterns) and
`keysvc doctor` (which evaluates a configuration for one run) must spell them exactly as the
token minting does: OTF's project-less subject
`organization:<org>:workspace:<workspace>:run_phase:<plan|apply>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from keysvc.config import DEFAULT_SUBJECT_FORMAT

PHASES: tuple[str, ...] = ("plan", "apply")
NAME = re.compile(r"^[A-Za-z0-9._-]+$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9._*?-]+$")
"""A workspace name, or a glob of them with `*` and `?` (AWS StringLike's wildcards)."""


class InvalidRunName(ValueError):
    """A name that OTF tokens cannot carry (keysvc refuses to sign for it)."""


def check_name(kind: str, value: str, *, pattern: bool = False) -> str:
    """Refuse names outside `[A-Za-z0-9._-]` (a `:` would forge another subject)."""
    regex = NAME_PATTERN if pattern else NAME
    if not regex.match(value):
        allowed = "letters, digits, '.', '_', '-'" + (" and the wildcards * ?" if pattern else "")
        raise InvalidRunName(f"{kind} {value!r} may only contain {allowed}")
    return value


def is_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def subject(organization: str, workspace: str, run_phase: str) -> str:
    """The `sub` claim (or, with wildcards in the arguments, a pattern of them)."""
    return DEFAULT_SUBJECT_FORMAT.format(
        organization=organization, workspace=workspace, run_phase=run_phase
    )


def full_workspace(organization: str, workspace: str) -> str:
    return f"organization:{organization}:workspace:{workspace}"


@dataclass(frozen=True)
class RunIdentity:
    """One run phase as a cloud sees it in the token."""

    issuer: str
    audience: str
    organization: str
    workspace: str
    run_phase: str
    workspace_id: str = "ws-keysvcdoctor"
    run_id: str = "run-keysvcdoctor"

    @property
    def subject(self) -> str:
        return subject(self.organization, self.workspace, self.run_phase)

    def claims(self) -> dict[str, Any]:
        """The claims keysvc puts in the token for this run (without the time claims)."""
        return {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.audience,
            "terraform_organization_name": self.organization,
            "terraform_workspace_name": self.workspace,
            "terraform_workspace_id": self.workspace_id,
            "terraform_full_workspace": full_workspace(self.organization, self.workspace),
            "terraform_run_id": self.run_id,
            "terraform_run_phase": self.run_phase,
        }
