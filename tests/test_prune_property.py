"""`keys prune` never removes a key a verifier may still need: a property over random histories.

Each example is a history of key versions spread over one to three backends (created at random
moments, some the same key held twice), a lifecycle, a prune margin and a moment to prune at.
Prune runs for real (keysvc.prune over a real KeyRing) against backends that keep their versions
in memory and record what they are told. Then, with an oracle that knows nothing of prune's
rules (which key signs at each moment: the newest past its signs_from, else the oldest):

- every pruned key stopped signing at least max_ttl + jwks_max_age + margin before the prune:
  every token it signed has expired, and every cache that could hold a JWKS with it has
  expired too, on any replica whose clock is less than the margin off;
- no pruned key is pending, active or retiring;
- the ring that remains is the ring that was, from the prune on (same keys published, same
  signer, at every moment the ring changes);
- no backend is left without a version; and prune does not leave out what it may remove.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysvc import keygen
from keysvc.backends.base import KeyVersion
from keysvc.keyring import KeyRing, Lifecycle, compute_view
from keysvc.prune import prune
from tests.sim_backend import SimBackend

T0 = datetime(2030, 1, 1, tzinfo=UTC)
KEYS = [keygen.generate("ec-p256").public_key() for _ in range(16)]  # type: ignore[union-attr]
MINUTE = timedelta(minutes=1)


@st.composite
def histories(draw: Any) -> dict[str, Any]:
    lead = draw(st.integers(2, 48 * 60)) * MINUTE
    max_age = draw(st.integers(1, max(1, lead // MINUTE // 2))) * MINUTE
    max_ttl = draw(st.integers(1, 24 * 60)) * MINUTE
    margin = draw(st.integers(0, 120)) * MINUTE
    count = draw(st.integers(1, 10))
    versions = []
    for index in range(count):
        offset = draw(st.integers(0, 60 * 24 * 120)) * MINUTE  # within 120 days
        key = draw(st.integers(0, len(KEYS) - 1))  # repeats: one key held twice
        backend = draw(st.integers(0, 2))
        versions.append((backend, f"v{index}", T0 + offset, key))
    now = T0 + draw(st.integers(0, 60 * 24 * 150)) * MINUTE
    only = draw(st.sampled_from([None, *sorted({f"b{b}" for b, *_ in versions})]))
    return {"lifecycle": Lifecycle(lead, max_age, max_ttl), "margin": margin,
            "versions": versions, "now": now, "only": only}


def signer_at(keys: list[Any], moment: datetime) -> Any:
    """The oracle: the newest key past its signs_from signs; with none, the oldest."""
    ordered = sorted(keys, key=lambda k: (k.created_at, k.kid))
    eligible = [k for k in ordered if k.signs_from <= moment]
    return eligible[-1] if eligible else ordered[0]


def last_signed(keys: list[Any], kid: str) -> datetime | None:
    """When the key stopped signing (None: it never signed; datetime.max: it still signs).
    The signer changes only at a signs_from, so it is constant on each interval between two
    of them: one moment per interval is exhaustive."""
    instants = sorted({k.signs_from for k in keys})
    starts = [instants[0] - timedelta(microseconds=1), *instants]
    ends = [*instants, datetime.max.replace(tzinfo=UTC)]
    stopped = None
    for start, end in zip(starts, ends, strict=True):
        if signer_at(keys, start).kid == kid:
            stopped = end
    return stopped


def ring_keys(backend: SimBackend, keys: list[Any]) -> list[Any]:
    """The ring's keys whose kid the backend held before the prune."""
    held = {KEYS.index(v.public_key) for v in backend.listed}
    return [k for k in keys if KEYS.index(k.version.public_key) in held]


def changes_after(keys: list[Any], lifecycle: Lifecycle, now: datetime) -> list[datetime]:
    """Every moment from `now` at which the ring may change."""
    moments = {now}
    for key in keys:
        moments |= {key.signs_from, key.signs_from + lifecycle.retention}
    return sorted(m for m in moments if m >= now)


def snapshot(keys: list[Any], lifecycle: Lifecycle, moment: datetime) -> tuple[Any, ...]:
    view = compute_view(keys, lifecycle, moment)
    return tuple((s.key.kid, s.state) for s in view.keys), view.signer and view.signer.kid


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_prune_never_removes_a_key_a_verifier_may_need(history: dict[str, Any]) -> None:
    lifecycle, margin, now = history["lifecycle"], history["margin"], history["now"]
    by_backend: dict[int, list[KeyVersion]] = {}
    for backend, version_id, created, key in history["versions"]:
        by_backend.setdefault(backend, []).append(
            KeyVersion(version_id=version_id, created_at=created, public_key=KEYS[key])
        )
    backends = [SimBackend(f"b{i}", lambda: now, versions)
                for i, versions in sorted(by_backend.items())]
    ring = KeyRing(backends, lifecycle, clock=lambda: now)

    async def run() -> Any:
        await ring.refresh(raise_errors=True)
        before = ring.all_keys()
        report = await prune(ring, history["only"], margin=margin)
        return before, report

    before, report = asyncio.run(run())
    after = ring.all_keys()
    pruned = {step.kid for step in report.done}
    assert not report.failed
    published_now = {s.key.kid for s in compute_view(before, lifecycle, now).keys}

    for kid in pruned:
        assert kid not in published_now
        stopped = last_signed(before, kid)
        if stopped is not None:
            assert stopped + lifecycle.max_ttl + lifecycle.jwks_max_age + margin <= now, kid
            until = {step.published_until for step in report.done if step.kid == kid}
            assert until == {stopped + lifecycle.retention}
        assert kid not in {k.kid for k in after}, "every copy of a pruned key goes"
    for moment in changes_after(before, lifecycle, now):
        assert snapshot(after, lifecycle, moment) == snapshot(before, lifecycle, moment), moment
    for backend in backends:
        assert backend.versions, f"{backend.name} was left without a version"
    # Complete: what left the JWKS at least `margin` ago is pruned, unless it is a backend's
    # last version or (with --backend) also held by a backend not pruned.
    gone = {k.kid for k in before} - {s.key.kid for s in
                                      compute_view(before, lifecycle, now - margin).keys}
    chosen = [b for b in backends if history["only"] in (None, b.name)]
    gone &= {v.kid for b in chosen for v in ring_keys(b, before)}
    kept = {step.kid for step in report.kept}
    assert gone == pruned | kept and not pruned & kept
    for step in report.kept:
        assert "last version" in step.reason or (
            history["only"] and "also in backend" in step.reason
        ), step.reason
