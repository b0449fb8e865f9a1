"""Ring changes in the log: one structured line per change a replica sees, so an operator can
follow a rotation (or a fault) replica by replica, from the log alone.

After each refresh the service compares the ring with what it saw before and logs, each with
`event`, `kid`, `backend` and `state` fields (logger `keysvc.ring`):

- `key_seen`: a key version this replica had not seen (every key, at start), with its state;
- `signing_key_changed`: another key signs now (`previous_kid` names the one before; `since`
  when, by the lifecycle: the new key's `signs_from`);
- `key_left_jwks`: a key is no longer published, by the lifecycle (`since`: its
  `published_until`); it is still in its backend until `keys prune` retires it;
- `key_revoked`: a key that was published is gone from its backend (`keys revoke`, or removed
  by hand): it left the JWKS early;
- `key_pruned`: a key that was no longer published is gone from its backend (`keys prune`);
- `no_signing_key` (a warning): no key can sign (kid null), and `signing_key_restored` when one
  can again.

Changes by the clock alone (a key starting to sign, leaving the JWKS) are noticed at the next
refresh, so the line may come up to `refresh_interval` after the `since` it names. The ring
knows nothing of this module; the service calls `RingWatcher.observe` after each refresh.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keysvc.keyring import KeyRing, RingView, iso

log = logging.getLogger("keysvc.ring")


@dataclass(frozen=True)
class Snapshot:
    listed: dict[str, str]
    """kid → backend, for every version any backend lists."""
    published: dict[str, str]
    """kid → state, for every published key."""
    signer: str | None
    view: RingView


def snapshot(ring: KeyRing, now: datetime) -> Snapshot:
    view = ring.view(now)
    listed: dict[str, str] = {}
    for backend in ring.backends:
        for key in ring.versions_in(backend.name):
            listed.setdefault(key.kid, key.backend_name)
    return Snapshot(
        listed=listed,
        published={s.key.kid: s.state.value for s in view.keys},
        signer=view.signer.kid if view.signer is not None else None,
        view=view,
    )


def changes(before: Snapshot | None, after: Snapshot) -> list[tuple[int, str, dict[str, Any]]]:
    """The log records (level, message, fields) for going from `before` to `after`."""
    records: list[tuple[int, str, dict[str, Any]]] = []
    old_listed = before.listed if before else {}
    old_published = before.published if before else {}
    statuses = {s.key.kid: s for s in after.view.keys}

    def fields(event: str, kid: str | None, backend: str | None, state: str, **extra: Any) -> dict[str, Any]:
        return {"event": event, "kid": kid, "backend": backend, "state": state, **extra}

    for kid, backend in after.listed.items():
        if kid not in old_listed:
            state = after.published.get(kid, "unpublished")
            status = statuses.get(kid)
            extra = {"signs_from": iso(status.signs_from)} if status else {}
            records.append((logging.INFO, f"key {kid} seen in backend {backend} ({state})",
                            fields("key_seen", kid, backend, state, **extra)))
    for kid, backend in old_listed.items():
        if kid in after.listed:
            continue
        if kid in old_published:
            records.append((logging.WARNING,
                            f"key {kid} is gone from backend {backend} while published: revoked",
                            fields("key_revoked", kid, backend, "revoked")))
        else:
            records.append((logging.INFO, f"key {kid} is gone from backend {backend}: pruned",
                            fields("key_pruned", kid, backend, "pruned")))
    for kid, state in old_published.items():
        if kid in after.listed and kid not in after.published and before is not None:
            status = next((s for s in before.view.keys if s.key.kid == kid), None)
            until = iso(status.published_until) if status and status.published_until else None
            records.append((logging.INFO, f"key {kid} left the JWKS",
                            fields("key_left_jwks", kid, after.listed[kid], "retired",
                                   since=until)))
    previous = before.signer if before else None
    if after.signer is None and (before is None or previous is not None):
        records.append((logging.WARNING, "no key can sign",
                        fields("no_signing_key", None, None, "none")))
    elif after.signer is not None and after.signer != previous:
        status = statuses[after.signer]
        restored = before is not None and previous is None
        records.append((logging.INFO, f"key {after.signer} signs now",
                        fields("signing_key_restored" if restored else "signing_key_changed",
                               after.signer, status.key.backend_name, "active",
                               previous_kid=previous, since=iso(status.signs_from))))
    return records


class RingWatcher:
    """Logs each change of one ring (see the module docstring)."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._last: Snapshot | None = None

    def observe(self) -> None:
        current = snapshot(self.ring, self.ring.clock())
        for level, message, fields in changes(self._last, current):
            log.log(level, message, extra=fields)
        self._last = current
