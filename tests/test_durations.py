from datetime import timedelta

import pytest

from keysvc.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800), ("1h30m", 5400),
     ("1.5s", 1.5), (30, 30)],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "m5", "-5s", " 5 s", "5 s", "1h-", "1h 30m", True])
def test_refuse(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["5s ", " 5s", "\t5s\n"])
def test_surrounding_space_is_tolerated(text: str) -> None:
    assert parse_duration(text) == timedelta(seconds=5)


@pytest.mark.parametrize("text", ["500ms", "90s", "15m", "1h", "7d", "1500ms"])
def test_format_roundtrip(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("99999999999999d", "too long: at most 3650d"),
        ("3651d", "too long"),
        pytest.param("9" * 400 + "s", "too long", id="400-digits"),  # float() of it is inf
        (1e30, "too long"),
        pytest.param(10**400, "too long", id="int-beyond-float"),  # compared as an int
        (float("inf"), "too long"),
        (float("nan"), "not a number"),
        (float("-inf"), "negative"),
        (timedelta(days=4000), "'4000d' is too long"),
        (timedelta(seconds=-1), "negative"),
    ],
)
def test_out_of_range_is_a_value_error(value: object, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)  # type: ignore[arg-type]
    assert problem in str(info.value) and len(str(info.value)) < 120


def test_longest_duration() -> None:
    assert parse_duration("3650d") == timedelta(days=3650)
    assert parse_duration(3650 * 86400) == timedelta(days=3650)
