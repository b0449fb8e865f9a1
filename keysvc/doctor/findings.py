"""The outcome of one doctor check."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from keysvc.clouds import Cloud


class Status(str, enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    """The check could not run (missing input or an earlier failure); says what would enable it."""


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    clouds: tuple[Cloud, ...] = ()
    """The clouds this finding matters for; empty means every cloud."""
    details: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "check": self.check,
            "status": self.status.value,
            "message": self.message,
        }
        if self.clouds:
            data["clouds"] = [c.value for c in self.clouds]
        if self.details:
            data["details"] = list(self.details)
        return data


def ok(check: str, message: str, *clouds: Cloud, details: tuple[str, ...] = ()) -> Finding:
    return Finding(check, Status.OK, message, clouds, details)


def warn(check: str, message: str, *clouds: Cloud, details: tuple[str, ...] = ()) -> Finding:
    return Finding(check, Status.WARN, message, clouds, details)


def fail(check: str, message: str, *clouds: Cloud, details: tuple[str, ...] = ()) -> Finding:
    return Finding(check, Status.FAIL, message, clouds, details)


def skip(check: str, message: str, *clouds: Cloud) -> Finding:
    return Finding(check, Status.SKIP, message, clouds)
