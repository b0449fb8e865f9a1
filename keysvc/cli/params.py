"""Click parameter types shared by commands."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from keysvc.durations import parse_duration


class DurationParam(click.ParamType):
    """A duration as the config spells them: "500ms", "90s", "15m", "1h", "7d"."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationParam()
