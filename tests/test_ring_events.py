"""Ring changes in the log (keysvc.ring_events): one line per change, with kid, backend and
state, through a whole key life: seen, signing, left the JWKS, pruned; revoked; no signing key
and back."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keysvc.keyring import KeyRing, Lifecycle
from keysvc.prune import prune
from keysvc.ring_events import RingWatcher
from tests.sim_backend import Clock, SimBackend

LIFECYCLE = Lifecycle(timedelta(hours=24), timedelta(minutes=15), timedelta(hours=2))
T0 = datetime(2031, 6, 1, tzinfo=UTC)


class Recorder:
    def __init__(self, caplog: pytest.LogCaptureFixture, ring: KeyRing) -> None:
        caplog.set_level(logging.INFO, logger="keysvc.ring")
        self.caplog = caplog
        self.ring = ring
        self.watcher = RingWatcher(ring)

    async def step(self) -> list[dict[str, Any]]:
        """Refresh and observe as the service's refresh loop does; the lines it logged."""
        self.caplog.clear()
        await self.ring.refresh(quiet=True)
        self.watcher.observe()
        fields = ("event", "kid", "backend", "state")
        return [{k: r.__dict__[k] for k in fields} | {"level": r.levelname}
                for r in self.caplog.records if r.name == "keysvc.ring"]


async def test_one_line_per_change_over_a_key_life(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    backend = SimBackend("kms", clock)
    first = await backend.create_version()
    ring = KeyRing([backend], LIFECYCLE, clock=clock)
    log = Recorder(caplog, ring)
    await ring.refresh()
    a = ring.all_keys()[0].kid

    assert await log.step() == [
        {"event": "key_seen", "kid": a, "backend": "kms", "state": "active", "level": "INFO"},
        {"event": "signing_key_changed", "kid": a, "backend": "kms", "state": "active",
         "level": "INFO"},
    ]
    assert await log.step() == []  # nothing changed, nothing logged

    clock.now += timedelta(days=30)
    await backend.create_version()
    (seen,) = await log.step()
    b = seen["kid"]
    assert seen == {"event": "key_seen", "kid": b, "backend": "kms", "state": "pending",
                    "level": "INFO"}
    clock.now += timedelta(hours=24)
    (changed,) = await log.step()
    assert changed == {"event": "signing_key_changed", "kid": b, "backend": "kms",
                       "state": "active", "level": "INFO"}
    assert caplog.records[-1].__dict__["previous_kid"] == a
    clock.now += timedelta(hours=2, minutes=15)
    assert await log.step() == [
        {"event": "key_left_jwks", "kid": a, "backend": "kms", "state": "retired", "level": "INFO"}
    ]
    clock.now += timedelta(hours=1)
    report = await prune(ring, margin=timedelta(hours=1))
    assert [s.version for s in report.done] == [first.version_id]
    assert await log.step() == [
        {"event": "key_pruned", "kid": a, "backend": "kms", "state": "pruned", "level": "INFO"}
    ]

    # An emergency: the signing key disabled while published.
    await backend.create_version()
    (seen,) = await log.step()
    c = seen["kid"]
    (signer,) = [v for v in backend.versions if v.version_id == "kms-v2"]  # b, signing
    await backend.disable_version(signer)
    assert await log.step() == [
        {"event": "key_revoked", "kid": b, "backend": "kms", "state": "revoked",
         "level": "WARNING"},
        {"event": "signing_key_changed", "kid": c, "backend": "kms", "state": "active",
         "level": "INFO"},
    ]


async def test_no_signing_key_and_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    backend = SimBackend("hsm", clock)
    ring = KeyRing([backend], LIFECYCLE, clock=clock)
    log = Recorder(caplog, ring)
    assert await log.step() == [
        {"event": "no_signing_key", "kid": None, "backend": None, "state": "none",
         "level": "WARNING"}
    ]
    await backend.create_version()
    seen, restored = await log.step()
    assert seen["event"] == "key_seen"
    assert restored == {"event": "signing_key_restored", "kid": seen["kid"], "backend": "hsm",
                        "state": "active", "level": "INFO"}
