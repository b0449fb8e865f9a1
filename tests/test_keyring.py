"""The lifecycle rules as a pure function of key creation times, config and the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keysvc import keygen
from keysvc.backends.base import KeyVersion
from keysvc.backends.file import FileBackend, FileSettings
from keysvc.keyring import FAR_FUTURE, KeyRing, KeyState, Lifecycle, compute_view, left_jwks

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIFE = Lifecycle(
    publish_lead=timedelta(hours=24), jwks_max_age=timedelta(minutes=15), max_ttl=timedelta(hours=2)
)
RETENTION = LIFE.retention


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    backend = FileBackend("b", FileSettings(path=tmp_path_factory.mktemp("unused")))
    return KeyRing([backend], LIFE)


def keys_at(ring: KeyRing, *offsets: timedelta) -> list:
    out = []
    for offset in offsets:
        key = keygen.generate("ec-p256")
        version = KeyVersion(f"v{offset}", T0 + offset, key.public_key())
        out.append(ring._ring_key(ring.backends[0], version))
    return out


def states(view) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {s.key.version.version_id: s.state.value for s in view.keys}


def test_empty_ring_has_no_signer() -> None:
    view = compute_view([], LIFE, T0)
    assert view.signer is None and view.keys == () and view.valid_until == FAR_FUTURE


def test_first_start_oldest_signs_at_once(ring: KeyRing) -> None:
    a, b = keys_at(ring, timedelta(0), timedelta(minutes=5))
    view = compute_view([b, a], LIFE, T0 + timedelta(minutes=10))
    assert view.signer is a
    assert states(view) == {a.version.version_id: "active", b.version.version_id: "pending"}
    # The second key still waits its full publish lead, then takes over.
    assert view.valid_until == b.signs_from
    later = compute_view([a, b], LIFE, b.signs_from)
    assert later.signer is b
    assert later.keys[0].state is KeyState.RETIRING
    assert later.keys[0].published_until == b.signs_from + RETENTION


def test_first_start_shows_when_the_oldest_key_really_signs(ring: KeyRing) -> None:
    """The oldest key signs from its creation (nothing older can sign before it): that is the
    signs_from shown, so no key is listed `active` with a signs_from still ahead. Every other key
    keeps created_at + publish_lead, and which key signs when does not change."""
    a, b = keys_at(ring, timedelta(0), timedelta(minutes=5))
    now = T0 + timedelta(minutes=10)
    listing = {row["kid"]: row for row in compute_view([a, b], LIFE, now).listing()}
    assert listing[a.kid]["state"] == "active"
    assert listing[a.kid]["signs_from"] == listing[a.kid]["created_at"] == "2026-01-01T00:00:00Z"
    assert listing[b.kid]["state"] == "pending"
    assert listing[b.kid]["signs_from"] == "2026-01-02T00:05:00Z"  # its full publish lead
    # A lone key made a second ago (an empty ring, a first start): active, signing since created.
    (c,) = keys_at(ring, timedelta(days=9))
    (status,) = compute_view([c], LIFE, c.created_at + timedelta(seconds=1)).keys
    assert status.state is KeyState.ACTIVE and status.signs_from == c.created_at
    # Once its publish lead is past, nothing about it changes.
    (later,) = compute_view([c], LIFE, c.signs_from + timedelta(days=1)).keys
    assert later.signs_from == c.created_at and later.state is KeyState.ACTIVE
    # A clock behind the backend's (the key seems created in the future) still has a signer.
    early = compute_view([c], LIFE, c.created_at - timedelta(minutes=1))
    assert early.signer is c


def test_signer_at_every_moment_is_unchanged_by_the_oldest_keys_signs_from(
    ring: KeyRing,
) -> None:
    """Showing the oldest key's creation as its signs_from is a description, not a new rule: at
    every moment the signer is the one `the newest past created_at + publish_lead, else the
    oldest` gives."""
    keys = keys_at(ring, timedelta(0), timedelta(hours=3), timedelta(hours=30), timedelta(days=3))
    for minutes in range(-60, 6 * 24 * 60, 37):
        now = T0 + timedelta(minutes=minutes)
        eligible = [k for k in keys if k.signs_from <= now]
        expected = eligible[-1] if eligible else keys[0]
        assert compute_view(keys, LIFE, now).signer is expected, minutes


def test_full_cycle(ring: KeyRing) -> None:
    a, b, c = keys_at(ring, timedelta(0), timedelta(days=2), timedelta(days=4))
    view = compute_view([a, b, c], LIFE, T0 + timedelta(days=4, hours=1))
    # a stopped at b.signs_from (day 3) and is long gone; b is active until c's day 5
    assert [s.key for s in view.keys] == [b, c]
    assert view.signer is b and view.keys[1].state is KeyState.PENDING
    view = compute_view([a, b, c], LIFE, c.signs_from + RETENTION - timedelta(seconds=1))
    assert states(view)[b.version.version_id] == "retiring"
    view = compute_view([a, b, c], LIFE, c.signs_from + RETENTION)
    assert [s.key for s in view.keys] == [c]


def test_newest_eligible_signs_even_if_several_are_past_lead(ring: KeyRing) -> None:
    a, b = keys_at(ring, timedelta(0), timedelta(hours=1))
    view = compute_view([a, b], LIFE, T0 + timedelta(hours=26))
    assert view.signer is b
    # a stopped signing when b became eligible, an hour after a did
    assert view.keys[0].published_until == b.signs_from + RETENTION


def test_same_answer_regardless_of_input_order(ring: KeyRing) -> None:
    keys = keys_at(ring, timedelta(0), timedelta(0), timedelta(hours=30))
    now = T0 + timedelta(hours=60)
    views = [compute_view(order, LIFE, now) for order in (keys, keys[::-1], keys[1:] + keys[:1])]
    assert len({(v.signer.kid, tuple(s.key.kid for s in v.keys)) for v in views}) == 1


def test_valid_until_is_next_change(ring: KeyRing) -> None:
    a, b = keys_at(ring, timedelta(0), timedelta(days=2))
    now = T0 + timedelta(days=3, minutes=1)  # b active since day 3, a retiring
    view = compute_view([a, b], LIFE, now)
    assert view.valid_until == b.signs_from + RETENTION


def test_left_jwks_lists_what_is_listed_but_no_longer_published(ring: KeyRing) -> None:
    a, b, c = keys_at(ring, timedelta(0), timedelta(days=2), timedelta(days=4))
    now = c.signs_from + timedelta(hours=1)  # a left long ago, b retiring, c active
    left = left_jwks([c, a, b], LIFE, now)
    assert left == [(a, a.created_at, b.signs_from + RETENTION)]  # the oldest signed from creation
    assert {s.key for s in compute_view([a, b, c], LIFE, now).keys}.isdisjoint({a})
    later = c.signs_from + RETENTION
    assert [key for key, _, _ in left_jwks([a, b, c], LIFE, later)] == [a, b]
    assert left_jwks([a], LIFE, now) == []  # a lone key never leaves: it signs
