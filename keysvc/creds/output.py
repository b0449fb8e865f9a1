"""Printing the variables a run must set: dotenv lines or one JSON object."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

_PLAIN = re.compile(r"[A-Za-z0-9_./:@%+,=-]*")


def dotenv_value(value: str) -> str:
    """Bare when safe, else double-quoted with the characters shells and dotenv loaders treat
    specially escaped."""
    if _PLAIN.fullmatch(value):
        return value
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("$", "\\$")
        .replace("`", "\\`")
        .replace("\n", "\\n")
    )
    return f'"{escaped}"'


def dotenv(env: Mapping[str, str]) -> str:
    return "".join(f"{name}={dotenv_value(value)}\n" for name, value in env.items())


def as_json(env: Mapping[str, str]) -> str:
    return json.dumps(dict(env), indent=2) + "\n"


FORMATS = {"dotenv": dotenv, "json": as_json}
