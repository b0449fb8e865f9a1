"""The lifecycle rules as a pure function of key creation times, config and the clock; then the
ring that applies them to its backends' versions (tests/plugin_backend.py), through its API."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from keysvc import jose, keygen
from keysvc.backends.base import KeyVersion
from keysvc.backends.file import FileBackend, FileSettings
from keysvc.errors import ConfigError
from keysvc.keyring import (
    FAR_FUTURE,
    KeyRing,
    KeyState,
    Lifecycle,
    compute_view,
    describe_unexpected,
    left_jwks,
)
from tests.plugin_backend import PluginBackend

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


# -- the ring over a backend, through its public API --------------------------------------------


def kid(version: KeyVersion) -> str:
    return jose.thumbprint(version.public_key)


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


async def test_listing_shows_each_key_as_get_v1_keys_does() -> None:
    backend = PluginBackend("b")
    a = backend.add(T0)
    b = backend.add(T0 + timedelta(days=1), "ec-p384")
    c = backend.add(T0 + timedelta(days=2, hours=1), "ed25519")
    # b signs since day 2; a stopped then and stays published for RETENTION; c waits.
    ring = KeyRing([backend], LIFE, clock=at(T0 + timedelta(days=2, hours=2)))
    await ring.refresh()
    assert ring.view().listing() == [
        {"kid": kid(a), "alg": "ES256", "backend": "b", "created_at": "2026-01-01T00:00:00Z",
         "state": "retiring", "signs_from": "2026-01-01T00:00:00Z",  # the oldest: at once
         "published_until": "2026-01-03T02:15:00Z"},
        {"kid": kid(b), "alg": "ES384", "backend": "b", "created_at": "2026-01-02T00:00:00Z",
         "state": "active", "signs_from": "2026-01-03T00:00:00Z", "published_until": None},
        {"kid": kid(c), "alg": "EdDSA", "backend": "b", "created_at": "2026-01-03T01:00:00Z",
         "state": "pending", "signs_from": "2026-01-04T01:00:00Z", "published_until": None},
    ]


async def test_ring_keys_gauge_counts_each_state() -> None:
    backend = PluginBackend("gauged")
    for offset in (timedelta(0), timedelta(days=1), timedelta(days=2, hours=1)):
        backend.add(T0 + offset)
    ring = KeyRing([backend], LIFE, clock=at(T0 + timedelta(days=2, hours=2)))
    await ring.refresh()
    gauge = {s: REGISTRY.get_sample_value("keysvc_ring_keys", {"state": s}) for s in
             ("pending", "active", "retiring")}
    assert gauge == {"pending": 1, "active": 1, "retiring": 1}


def test_a_ring_that_never_refreshed_has_no_signer() -> None:
    ring = KeyRing([PluginBackend()], LIFE)
    assert ring.view().signer is None and ring.view().keys == () and not ring.ready


async def test_the_view_is_kept_until_its_next_change_or_a_refresh() -> None:
    """The JWKS and every token read `view()`: it is computed once per state, not per call."""
    backend = PluginBackend()
    a, b = backend.add(T0), backend.add(T0 + timedelta(days=3))
    moment = [T0 + timedelta(days=3, hours=1)]  # a signs, b waits until T0 + 4 days
    ring = KeyRing([backend], LIFE, clock=lambda: moment[0])
    await ring.refresh()
    first = ring.view()
    assert first.valid_until == T0 + timedelta(days=4) and first.signer is not None
    assert ring.view() is first
    moment[0] = T0 + timedelta(days=4) - timedelta(microseconds=1)
    assert ring.view() is first
    moment[0] = T0 + timedelta(days=4)  # the change itself: b signs from this instant
    current = ring.view()
    assert current.signer is not None and current.signer.kid == kid(b)
    # A view at another moment is computed for it, and leaves the current one cached.
    past = ring.view(T0 + timedelta(hours=1))
    assert past.signer is not None and past.signer.kid == kid(a)
    assert ring.view() is current
    await ring.refresh()  # a refresh may have changed the keys: computed again
    assert ring.view() is not current and ring.view().signer == current.signer


async def test_two_versions_created_at_the_same_instant_keep_their_own_kids() -> None:
    backend = PluginBackend()
    a, b = backend.add(T0), backend.add(T0)
    ring = KeyRing([backend], LIFE, clock=at(T0 + timedelta(days=2)))
    await ring.refresh()
    assert sorted(k.kid for k in ring.all_keys()) == sorted([kid(a), kid(b)])


async def test_a_version_whose_creation_time_changes_follows_it() -> None:
    backend = PluginBackend()
    version = backend.add(T0)
    ring = KeyRing([backend], LIFE, clock=at(T0 + timedelta(days=2)))
    await ring.refresh()
    backend.amend(version, created_at=T0 + timedelta(hours=1))
    await ring.refresh()
    (key,) = ring.all_keys()
    assert key.created_at == T0 + timedelta(hours=1)
    assert key.signs_from == T0 + timedelta(hours=25)


async def test_a_version_limited_to_some_algorithms_signs_with_one_of_them() -> None:
    """A KMS key made for PSS cannot sign RS256, though RS256 is the RSA default."""
    backend = PluginBackend()
    backend.add(T0, "rsa-2048", algorithms=frozenset({jose.Algorithm.PS256}))
    ring = KeyRing([backend], LIFE, clock=at(T0 + timedelta(days=2)))
    await ring.refresh()
    (key,) = ring.all_keys()
    assert key.alg is jose.Algorithm.PS256 and key.jwk["alg"] == "PS256"


async def test_a_configured_algorithm_that_fits_no_key_is_refused() -> None:
    backend = PluginBackend()
    backend.add(T0, "ec-p384")
    backend.add(T0 + timedelta(hours=1), "ec-p256")
    ring = KeyRing([backend], LIFE, jose.Algorithm.PS256, clock=at(T0 + timedelta(days=2)))
    with pytest.raises(ConfigError) as refused:
        await ring.refresh()
    assert str(refused.value) == (
        "tokens.algorithm: PS256 fits none of the configured keys (EC secp256r1, EC secp384r1)"
    )


def test_backend_by_name() -> None:
    a, b = PluginBackend("a"), PluginBackend("b")
    assert KeyRing([a], LIFE).backend(None) is a
    assert KeyRing([a], LIFE).backend("a") is a
    two = KeyRing([a, b], LIFE)
    assert two.backend("b") is b and two.backend("a") is a
    with pytest.raises(ConfigError) as several:
        two.backend(None)
    assert str(several.value) == "several backends are configured (a, b): choose one with --backend"
    with pytest.raises(ConfigError) as unknown:
        two.backend("c")
    assert str(unknown.value) == "no backend named 'c'"


async def test_one_key_in_two_backends_is_published_once_and_revoked_in_both() -> None:
    first, second = PluginBackend("first"), PluginBackend("second")
    shared = first.add(T0)
    copy = second.add(T0 + timedelta(hours=1), private_key=first.private_key(shared))
    other = second.add(T0 + timedelta(hours=2))
    ring = KeyRing([first, second], LIFE, clock=at(T0 + timedelta(days=2)))
    await ring.refresh()
    assert [k.kid for k in ring.all_keys()] == [kid(shared), kid(other)]
    assert ring.all_keys()[0].backend_name == "first"  # the oldest version wins
    assert [(k.backend_name, k.version.version_id) for k in ring.versions_of(kid(shared))] == [
        ("first", shared.version_id), ("second", copy.version_id)
    ]
    assert ring.versions_of("no-such-kid") == []


async def test_close_closes_every_backend_even_when_one_fails() -> None:
    failing, other = PluginBackend("failing"), PluginBackend("other")
    failing.close_error = RuntimeError("close failed")
    await KeyRing([failing, other], LIFE).close()  # does not raise
    assert failing.closed and other.closed


def test_an_unexpected_exception_is_described_by_type_and_place_not_text() -> None:
    """Its text may carry request details or secrets; where it was raised helps whoever fixes it."""
    assert describe_unexpected(RuntimeError("token=s3cret")) == "unexpected RuntimeError"
    try:
        raise KeyError("token=s3cret")
    except KeyError as exc:
        described = describe_unexpected(exc)
    assert re.fullmatch(r"unexpected KeyError at test_keyring\.py:\d+", described), described
