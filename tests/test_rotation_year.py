"""A year of scheduled rotation (period 30d) in simulated time: the key ring takes a clock, and
the schedule's two commands (keysvc.rotation.rotate with if_older_than, keysvc.prune.prune) run
every day as a CronJob would, against a backend that dates its versions by the same clock.

At every simulated hour the ring's lifecycle is checked: exactly one key signs, never before its
signs_from and never a key published less than publish_lead (beyond the first); never more keys
published than the period allows; every token signed in the last max_ttl still verifies (its key
is published), and every key that signs was in any JWKS a verifier may have cached; the backend
holds no more than the keys still needed plus the one waiting to be pruned. The ring's change
log (keysvc.ring_events) tells the same story.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from keysvc import rotation
from keysvc.keyring import KeyRing, Lifecycle
from keysvc.prune import prune
from keysvc.ring_events import RingWatcher
from tests.sim_backend import Clock, SimBackend

START = datetime(2031, 1, 1, tzinfo=UTC)
PERIOD = timedelta(days=30)
LIFECYCLE = Lifecycle(
    publish_lead=timedelta(hours=24), jwks_max_age=timedelta(minutes=15), max_ttl=timedelta(hours=2)
)
MARGIN = timedelta(hours=1)
REFRESH = timedelta(hours=1)  # the simulation's step: a refresh, a token, a check


def expected_most_published() -> int:
    """A key is published from its creation until max_ttl + jwks_max_age after its successor
    signs, i.e. for at most period + publish_lead + retention; a new one comes each period."""
    span = LIFECYCLE.publish_lead + LIFECYCLE.retention
    return span // PERIOD + 2


async def simulate(caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    clock = Clock(START)
    backend = SimBackend("sim", clock)
    await backend.create_version()  # the first key, made at install time
    ring = KeyRing([backend], LIFECYCLE, clock=clock)
    watcher = RingWatcher(ring)
    tokens: list[tuple[str, datetime]] = []  # (kid, exp) of each token signed
    published_since: dict[str, datetime] = {}
    stats = {"rotations": 0, "skipped": 0, "pruned": 0, "most_published": 0, "most_listed": 0}
    end = START + timedelta(days=365)
    while clock.now < end:
        if clock.now.hour == 3:  # the daily schedule: rotate if due, then prune
            done = await rotation.rotate(ring, None, PERIOD)
            stats["rotations" if done.rotated else "skipped"] += 1
            report = await prune(ring, margin=MARGIN)
            assert not report.failed and not report.kept
            stats["pruned"] += len(report.done)
        await ring.refresh(raise_errors=True, quiet=True)
        watcher.observe()
        now = clock.now
        view = ring.view()
        published = {s.key.kid: s for s in view.keys}
        for kid in published:
            published_since.setdefault(kid, now)

        # exactly one key signs, never before its signs_from ...
        signer = view.signer
        assert signer is not None and signer.kid in published
        assert published[signer.kid].signs_from <= now
        # ... and, but for the very first key, only after a publish lead in every JWKS: a
        # verifier that cached the JWKS jwks_max_age ago (or a replica one refresh behind) had it.
        if signer.version.version_id != "sim-v1":
            assert published_since[signer.kid] <= now - LIFECYCLE.publish_lead + REFRESH
            assert signer.created_at + LIFECYCLE.publish_lead <= now
        # every unexpired token's key is published
        tokens = [(kid, exp) for kid, exp in tokens if exp > now]
        assert {kid for kid, _ in tokens} <= set(published), now
        tokens.append((signer.kid, now + LIFECYCLE.max_ttl))
        # never more keys published than the period allows, nor kept in the backend
        assert len(published) <= expected_most_published(), now
        assert len(backend.versions) <= expected_most_published() + 1, now
        stats["most_published"] = max(stats["most_published"], len(published))
        stats["most_listed"] = max(stats["most_listed"], len(backend.versions))
        clock.now += REFRESH
    return stats


def test_a_year_of_scheduled_rotation(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="keysvc.ring")
    stats = asyncio.run(simulate(caplog))
    # Rotated at the first daily run after the newest turned 30 days old: every 31 days.
    assert stats["rotations"] == 365 // 31 and stats["skipped"] == 365 - stats["rotations"]
    assert stats["most_published"] == expected_most_published() == 2
    # Every key replaced was pruned at the first daily run after it left the JWKS (+ margin):
    # the last one replaced on day 341, pruned on day 343.
    assert stats["pruned"] == stats["rotations"] == 11
    assert stats["most_listed"] == 2  # the signing key, and the next one or the last one
    events = [r.__dict__ for r in caplog.records if r.name == "keysvc.ring"]
    by_event: dict[str, list[dict[str, object]]] = {}
    for event in events:
        assert {"event", "kid", "backend", "state"} <= event.keys()
        by_event.setdefault(str(event["event"]), []).append(event)
    assert len(by_event["key_seen"]) == stats["rotations"] + 1
    assert len(by_event["signing_key_changed"]) == stats["rotations"] + 1  # the first signer too
    assert len(by_event["key_left_jwks"]) == stats["rotations"]
    assert len(by_event["key_pruned"]) == stats["pruned"]
    assert "key_revoked" not in by_event and "no_signing_key" not in by_event
    first_seen = by_event["key_seen"][1]
    assert first_seen["state"] == "pending" and first_seen["backend"] == "sim"
