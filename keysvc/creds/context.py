"""Which run a token is for: the fields keysvc's `POST /v1/tokens` puts in the claims."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Phase = Literal["plan", "apply"]
PHASES: tuple[Phase, ...] = ("plan", "apply")


@dataclass(frozen=True)
class RunContext:
    organization: str
    workspace: str
    workspace_id: str
    run_id: str
    phase: Phase

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be plan or apply, not {self.phase!r}")

    def token_request(self, audience: str) -> dict[str, str]:
        """The body of `POST /v1/tokens` for one audience."""
        return {
            "organization": self.organization,
            "workspace": self.workspace,
            "workspace_id": self.workspace_id,
            "run_id": self.run_id,
            "run_phase": self.phase,
            "audience": audience,
        }
