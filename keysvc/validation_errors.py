"""pydantic's validation errors in plain words, for config files and request bodies alike.

pydantic describes a problem in its own terms ("Field required", "Extra inputs are not
permitted", "Input should be a valid integer, unable to parse string as an integer"). Operators
and API clients get the same facts as "is required", "is not a setting keysvc knows", "must be a
whole number". Each message says what is wrong, never what the input was: a value may be a
secret, and a request's own bytes are not echoed back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

_SIMPLE = {
    "missing": "is required",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "string_unicode": "must be valid UTF-8 text",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a table of names and values",
    "model_type": "must be a table of names and values",
    "model_attributes_type": "must be a table of names and values",
    "path_type": "must be a file path (a string)",
    "string_pattern_mismatch": "holds characters that are not allowed here",
    "finite_number": "must be a finite number",
    "none_required": "must be left out",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be more than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
}


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def problem(
    err: ErrorDetails | dict[str, Any],
    *,
    unknown: str = "is not a setting keysvc knows",
    patterns: Mapping[str, str] | None = None,
) -> str:
    """What is wrong with one value, as the end of a sentence that starts with its name.
    `unknown` is what an unexpected key is told (a config file and a request word it apart);
    `patterns` what a value failing one of these regular expressions is told."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "string_pattern_mismatch" and patterns and ctx.get("pattern") in patterns:
        return patterns[ctx["pattern"]]
    if kind in _SIMPLE:
        return _SIMPLE[kind]
    if kind == "extra_forbidden":
        return unknown
    if kind in _BOUNDS:
        name, text = _BOUNDS[kind]
        return text.format(ctx.get(name))
    if kind in ("literal_error", "enum"):
        return f"must be {ctx.get('expected')}"
    if kind in ("too_short", "string_too_short"):
        minimum = ctx.get("min_length", 1)
        if kind == "string_too_short":
            return "must not be empty" if minimum == 1 else f"must have at least {minimum} characters"
        return "must not be empty" if minimum == 1 else f"must have at least {_plural(minimum, 'item')}"
    if kind in ("too_long", "string_too_long"):
        what = "character" if kind == "string_too_long" else "item"
        return f"must have at most {_plural(ctx.get('max_length', 0), what)}"
    message = str(err["msg"])
    if kind == "value_error":  # keysvc's own rules: already plain words
        return message.removeprefix("Value error, ")
    # Anything else: pydantic's sentence, made to read like the others.
    return message.replace("Input should be", "must be").replace("Input should", "should")


def location(loc: Sequence[int | str]) -> str:
    """A dotted key (`backends[1].path`) from pydantic's location, without the validator tags
    pydantic adds for unions and wrapped validators."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "model-")):
            out += f".{part}" if out else str(part)
    return out


def describe(err: ErrorDetails | dict[str, Any], prefix: str = "", **words: Any) -> str:
    """`key: problem` for one error (`prefix` goes before the key: an outer table's location)."""
    where = location(err["loc"])
    where = f"{prefix}.{where}" if prefix and where else prefix or where
    text = problem(err, **words)
    return f"{where}: {text}" if where else text


def describe_all(exc: ValidationError, *, limit: int = 10, **words: Any) -> str:
    """Every problem of a validation, missing keys together in one clause: what a request body
    is told, so that one reply lists everything to fix (at most `limit` problems)."""
    errors = exc.errors(include_url=False)
    missing = [location(e["loc"]) for e in errors if e["type"] == "missing"]
    parts = []
    if missing:
        parts.append(
            f"missing required field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}"
        )
    parts += [describe(e, **words) for e in errors if e["type"] != "missing"]
    shown = parts[:limit]
    if len(parts) > limit:
        shown.append(f"and {len(parts) - limit} more")
    return "; ".join(shown)
