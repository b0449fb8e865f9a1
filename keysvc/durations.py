"""Human durations ("500ms", "90s", "15m", "1h", "7d") as used throughout the configuration."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
MAX_DURATION = timedelta(days=3650)
"""The longest duration any setting takes. Far above every sensible value (publish leads and
timeouts are hours or seconds), and low enough that adding one to a key's creation time, or
several to each other, stays within datetime's range."""


def _bounded(seconds: float, value: object) -> timedelta:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if isinstance(seconds, float) and math.isnan(seconds):
        raise ValueError(f"duration {shown} is not a number")
    if seconds > MAX_DURATION.total_seconds():  # infinity included; ints compared exactly
        raise ValueError(f"duration {shown} is too long: at most {MAX_DURATION.days}d")
    return timedelta(seconds=seconds)


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse a duration; a bare number means seconds. Raises ValueError with a helpful message."""
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError("a duration cannot be negative")
        _bounded(value.total_seconds(), format_duration(value))
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '90s', '15m', '1h' or '7d'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _bounded(value, value)
    text = str(value).strip()
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"invalid duration {value!r}: use e.g. '500ms', '90s', '15m', '1h', '7d'")
    return _bounded(total, value)


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration in the units parse_duration accepts."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
"""A pydantic field type for durations in config models (the core's and the backends')."""
