"""JSON read so that what a token carries is exactly what the client sent, or refused.

A parser that reads every number into a double rounds silently: `1e-400` comes out as 0.0 and a
20,000-digit decimal as 1.0 (pydantic and orjson both do so), so a token would carry a value the
client never asked for. Here a number is read as a float or int only when that holds it exactly:
a float whose shortest repr has the same decimal value as the text sent (so `0.1` and `1.50`
pass: they come out of the token as the same number), an integer within 64 bits (what orjson
writes and most JSON libraries read exactly). Anything else, and the NaN and Infinity literals
that are not JSON at all, is read as an `Inexact` marker for the caller to refuse where it stands
(keysvc.tokens names the claim). An object with the same key twice is refused outright: parsers
disagree on which one counts.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

INT_RANGE = range(-(2**63), 2**64)
"""The integers a token may carry: 64-bit signed and unsigned."""
_MAX_INT_DIGITS = len(str(2**64))


class Inexact:
    """A number the token could not carry as sent; `problem` completes "<where> ..."."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def __repr__(self) -> str:
        return f"Inexact({self.problem!r})"


NOT_FINITE = Inexact("is not a finite number")
TOO_PRECISE = Inexact(
    "is a number a double cannot hold exactly (send it as a string to keep every digit)"
)
TOO_BIG = Inexact("is an integer beyond 64 bits")


class DuplicateKey(ValueError):
    """An object in the document holds the same key twice."""


def _float(text: str) -> float | Inexact:
    value = float(text)
    if not math.isfinite(value):
        return NOT_FINITE
    if Decimal(repr(value)) != Decimal(text):
        return TOO_PRECISE
    return value


def _int(text: str) -> int | Inexact:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:  # before int(): no 4,300-digit conversions
        return TOO_BIG
    value = int(text)
    return value if value in INT_RANGE else TOO_BIG


def _constant(text: str) -> Inexact:
    return NOT_FINITE  # NaN, Infinity, -Infinity


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise DuplicateKey("an object in the body has the same key twice")
    return result


def loads(document: bytes | str) -> Any:
    """Parse `document`. Raises ValueError (UnicodeDecodeError, json.JSONDecodeError,
    DuplicateKey) for what is not one JSON value in UTF-8, or nests too deeply to parse."""
    if isinstance(document, bytes):
        document = document.decode()  # JSON is UTF-8 (RFC 8259): no guessing at UTF-16 or 32
    try:
        return json.loads(
            document,
            parse_float=_float,
            parse_int=_int,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except RecursionError:
        raise ValueError("the document nests too deeply") from None
