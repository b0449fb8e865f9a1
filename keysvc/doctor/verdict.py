"""Whether a cloud's trust configuration accepts one run's token, and why (not)."""

from __future__ import annotations

from dataclasses import dataclass, field


class TrustInputError(ValueError):
    """The trust configuration given to doctor cannot be read (bad input: exit 2)."""


@dataclass
class Verdict:
    accepted: bool
    reasons: list[str] = field(default_factory=list)
    """Why the token is refused (or which rule admits it)."""
    notes: list[str] = field(default_factory=list)
    """What doctor could not evaluate and assumed, and what the cloud checks elsewhere."""
