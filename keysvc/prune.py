"""Pruning: retire, in the backends, every key version that has left the JWKS.

A version leaves the JWKS at its `published_until`: `max_ttl + jwks_max_age` after its successor
started signing, when every token it signed has expired and every verifier's cached JWKS has
been refetched. After that no verifier needs it and no replica publishes or signs with it, but
the backend still holds it: versions pile up (AWS fails at about 100 JWKS keys, HSMs run out of
object slots) and an old private key could still sign if it leaked. `keys prune` removes them.

Which versions: those that have left the JWKS at least `rotation.prune_margin` ago (room for
clocks that disagree). The rule is the ring's own (keyring.left_jwks, what `keys list --all`
shows as gone), applied to the union of every backend's versions as every replica computes it,
at `now - prune_margin`: a version gone then is gone for good, since departures only move
forward in creation order (a version leaves the JWKS after every older one). So pruning takes a prefix of the versions in
creation order, never a pending, active or retiring one, and never changes the ring that
remains (the same keys published, in the same states, the same signer, at every moment to come).

Never pruned either: a backend's last version, even past its published_until (a key that moved to
another backend). A backend that suddenly lists nothing is a fault to every replica, which keeps
its last good keys and reports the backend as broken; remove the backend from the config instead.

How, per backend (by its capabilities, keysvc/backends/base.py):
- a backend whose destruction is *scheduled* (Cloud KMS, AWS KMS: restorable for 30 days) has the
  version's destruction scheduled, which disables it at once;
- otherwise the version is disabled (file: renamed `*.pem.revoked`; Vault: min_decryption_version;
  Azure Key Vault: enabled=false; PKCS#11: relabelled `*.revoked`), which can be undone;
- with `destroy_now` (`keys prune --destroy`), a backend that destroys at once (file: deleted;
  Vault: trimmed; PKCS#11: C_DestroyObject) destroys instead. Destruction that cannot be undone
  is the operator's explicit choice, never a schedule's default;
- a backend that can do neither (or cannot as configured) keeps the version, and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from keysvc.backends.base import (
    BackendError,
    DestroysVersions,
    DisablesVersions,
    KeyBackend,
    refusal,
)
from keysvc.errors import ConfigError
from keysvc.keyring import KeyRing, RingKey, iso, left_jwks


@dataclass(frozen=True)
class PruneStep:
    """One version, and what prune did (or would do, or could not do) with it."""

    kid: str
    backend: str
    version: str
    published_until: datetime
    action: str
    """disable, schedule_destruction, destroy; or keep (see `reason`)."""
    reason: str = ""
    error: str = ""
    key: RingKey | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kid": self.kid,
            "backend": self.backend,
            "version": self.version,
            "published_until": iso(self.published_until),
            "action": self.action,
        }
        if self.reason:
            out["reason"] = self.reason
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class PruneReport:
    dry_run: bool
    margin: timedelta
    backends: list[str]
    done: list[PruneStep] = field(default_factory=list)
    """Versions retired (or, in a dry run, that would be)."""
    kept: list[PruneStep] = field(default_factory=list)
    """Versions past their published_until that stay, and why."""
    failed: list[PruneStep] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        from keysvc.durations import format_duration

        return {
            "dry_run": self.dry_run,
            "margin": format_duration(self.margin),
            "backends": self.backends,
            "pruned": [s.to_json() for s in self.done],
            "kept": [s.to_json() for s in self.kept],
            "failed": [s.to_json() for s in self.failed],
        }


def action_for(backend: KeyBackend, destroy_now: bool) -> tuple[str, str]:
    """What prune does with a version of `backend`: (action, why not when "keep")."""
    can_disable = refusal(backend, DisablesVersions) is None
    can_destroy = refusal(backend, DestroysVersions) is None
    if can_destroy and isinstance(backend, DestroysVersions) and backend.scheduled:
        # A version scheduled for destruction is disabled at once (it neither lists nor signs)
        # and can be restored until the grace period ends. Disabling it first would add
        # nothing, and would hide it from the next prune if the scheduling then failed.
        return "schedule_destruction", ""
    if can_destroy and (destroy_now or not can_disable):
        return "destroy", ""
    if can_disable:
        return "disable", ""
    why = refusal(backend, DisablesVersions) or ""
    return "keep", why.split(": ", 1)[-1] if why else "it can neither disable nor destroy"


async def _apply(backend: KeyBackend, key: RingKey, action: str) -> None:
    if action == "disable":
        assert isinstance(backend, DisablesVersions)
        await backend.disable_version(key.version)
    else:  # destroy, schedule_destruction
        assert isinstance(backend, DestroysVersions)
        await backend.destroy_version(key.version)


def plan(
    ring: KeyRing,
    now: datetime,
    margin: timedelta,
    backend_names: Sequence[str],
    destroy_now: bool = False,
) -> tuple[list[PruneStep], list[PruneStep]]:
    """The versions of `backend_names` to prune, with what to do to each, in creation order
    per backend; and the departed ones kept, with why."""
    # Every copy of a departed kid goes (one key held twice counts once in the ring), or none:
    # a copy left behind would come back into the ring with its own creation time, maybe
    # published again.
    until = {key.kid: left for key, _, left in left_jwks(ring.all_keys(), ring.lifecycle,
                                                         now - margin)}
    copies = {
        b.name: sorted((k for k in ring.versions_in(b.name) if k.kid in until),
                       key=lambda k: (k.created_at, k.kid))
        for b in ring.backends
    }
    why_kept: dict[str, str] = {}
    actions: dict[str, str] = {}
    for backend in ring.backends:
        doomed = copies[backend.name]
        action, cannot = action_for(backend, destroy_now)
        actions[backend.name] = action
        if action == "keep" and backend.name in backend_names:
            for key in doomed:
                why_kept.setdefault(key.kid, f"backend {backend.name} cannot retire it: {cannot}")
        if backend.name not in backend_names:
            for key in doomed:
                why_kept.setdefault(key.kid, f"the same key is also in backend {backend.name}:"
                                    " prune both (without --backend)")
        elif doomed and len(doomed) == len(ring.versions_in(backend.name)):
            why_kept.setdefault(doomed[-1].kid, f"it is the last version of backend"
                                f" {backend.name}: a backend that suddenly lists none is a fault"
                                " to every replica; remove the backend from the config instead")
    chosen: list[PruneStep] = []
    kept: list[PruneStep] = []
    for name in backend_names:
        for key in copies[name]:
            step = PruneStep(key.kid, name, key.version.version_id, until[key.kid],
                             actions[name], key=key)
            if key.kid in why_kept:
                kept.append(dataclasses.replace(step, action="keep", reason=why_kept[key.kid]))
            else:
                chosen.append(step)
    return chosen, kept


async def prune(
    ring: KeyRing,
    backend_name: str | None = None,
    *,
    margin: timedelta,
    dry_run: bool = False,
    destroy_now: bool = False,
) -> PruneReport:
    """Retire every version that left the JWKS at least `margin` ago, in `backend_name` or in
    every backend (see the module docstring). The ring must be freshly refreshed, with every
    backend listed. It is refreshed again afterwards: every retired version must be gone and
    every key that was published still there."""
    names = [ring.backend(backend_name).name] if backend_name else [b.name for b in ring.backends]
    now = ring.clock()
    before = ring.view(now)
    chosen, kept = plan(ring, now, margin, names, destroy_now)
    report = PruneReport(dry_run=dry_run, margin=margin, backends=names, kept=kept)
    published = {s.key.kid for s in before.keys}
    for step in chosen:
        assert step.key is not None
        # A guard over the rule above: never a key any replica publishes now.
        if step.kid in published:
            raise AssertionError(f"prune chose {step.kid}, which is still published")
        if dry_run:
            report.done.append(step)
            continue
        try:
            await _apply(step.key.backend, step.key, step.action)
        except (BackendError, ConfigError, OSError) as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            report.failed.append(dataclasses.replace(step, error=message))
        else:
            report.done.append(step)
    if report.done and not dry_run:
        await ring.refresh(raise_errors=True, quiet=True)
        _check_outcome(ring, report, published, now)
    return report


def _check_outcome(
    ring: KeyRing, report: PruneReport, published: set[str], now: datetime
) -> None:
    """After pruning: every retired version is listed no more, and every key that was
    published still is (a rotation running meanwhile may have added one)."""
    for step in list(report.done):
        if any(k.version.version_id == step.version for k in ring.versions_in(step.backend)):
            report.done.remove(step)
            report.failed.append(
                dataclasses.replace(step, error="still listed after it was retired")
            )
    lost = published - {s.key.kid for s in ring.view(now).keys}
    if lost:
        raise BackendError(
            f"keys left the JWKS while pruning: {', '.join(sorted(lost))} (were they revoked"
            " meanwhile?); check `keysvc keys list`"
        )
