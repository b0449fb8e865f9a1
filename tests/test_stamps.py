"""Creation-time stamps in key names: the vectors every backend that writes them relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from keysvc.backends.stamps import format_stamp, parse_stamp


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("20261127T145700Z", datetime(2026, 11, 27, 14, 57, tzinfo=UTC)),
        ("20261127T145700.5Z", datetime(2026, 11, 27, 14, 57, 0, 500000, tzinfo=UTC)),
        ("20261127T145700.123456Z", datetime(2026, 11, 27, 14, 57, 0, 123456, tzinfo=UTC)),
        ("20240229T235959Z", datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_parse(stamp: str, expected: datetime) -> None:
    assert parse_stamp(stamp) == expected


@pytest.mark.parametrize("stamp", ["20261399T999999Z", "20230229T000000Z", "20261127T246000Z"])
def test_impossible_dates_are_refused(stamp: str) -> None:
    with pytest.raises(ValueError, match=f"the timestamp {stamp} is not a valid UTC date"):
        parse_stamp(stamp)


def test_format_round_trips_in_utc_whatever_the_zone() -> None:
    moment = datetime(2026, 11, 27, 15, 57, 0, 42, tzinfo=timezone(timedelta(hours=1)))
    assert format_stamp(moment) == "20261127T145700.000042Z"
    assert parse_stamp(format_stamp(moment)) == moment
