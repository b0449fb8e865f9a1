"""Manual tokens (HCP Terraform): `TFC_WORKLOAD_IDENTITY_AUDIENCE[_TAG]` asks for a token the
run's own configuration uses, handed over as `TFC_WORKLOAD_IDENTITY_TOKEN[_TAG]`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from keysvc.creds.variables import checked, suffix, tag_of

PREFIX = "TFC_WORKLOAD_IDENTITY_AUDIENCE"


@dataclass(frozen=True)
class ManualToken:
    tag: str
    audience: str

    @property
    def variable(self) -> str:
        return f"TFC_WORKLOAD_IDENTITY_TOKEN{suffix(self.tag)}"


def requested(env: Mapping[str, str]) -> list[ManualToken]:
    wanted = [
        ManualToken(tag_of(name, PREFIX), checked(name, value))
        for name, value in env.items()
        if name.startswith(PREFIX) and value
    ]
    return sorted(wanted, key=lambda m: (m.tag != "", m.tag))
