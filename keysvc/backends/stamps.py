"""Creation times written into key names (file names, PKCS#11 labels).

A key version's creation time decides when it may sign, and must survive copying (a Kubernetes
Secret mount resets file times), so the backends without creation metadata of their own write
it into the name. One spelling, parsed one way here, so every replica reads the same time from
the same name.
"""

from __future__ import annotations

from datetime import UTC, datetime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The creation time of a key whose name carries none: an old key, published and signing at once."""
STAMP = r"\d{8}T\d{6}(?:\.\d{1,6})?Z"
"""A stamp as a regular expression fragment: `20261127T145700Z`, microseconds optional."""
_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_FORMAT_SECONDS = "%Y%m%dT%H%M%SZ"


def format_stamp(created_at: datetime) -> str:
    """`20261127T145700.123456Z`: what rotation writes (microseconds keep two rotations in
    the same second apart)."""
    return created_at.astimezone(UTC).strftime(_FORMAT)


def parse_stamp(stamp: str) -> datetime:
    """The UTC time a stamp matching STAMP spells; ValueError when it is no valid date and
    time (`20261399T999999Z`): guessing another time would change which key signs."""
    try:
        return datetime.strptime(stamp, _FORMAT if "." in stamp else _FORMAT_SECONDS).replace(
            tzinfo=UTC
        )
    except ValueError:
        raise ValueError(f"the timestamp {stamp} is not a valid UTC date and time") from None
