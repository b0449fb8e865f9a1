"""Rotation on a schedule: a new key version only when the newest one is old enough.

`keysvc keys rotate --if-older-than DURATION` and `POST /v1/keys/rotate` run `rotate()` from a
CronJob, a systemd timer or any automation, as often as they like: a run creates a version only
when the backend's newest version is older than DURATION, and otherwise says why it did nothing.
keysvc keeps no state for this; the backend's own versions are the schedule.

Runs started at once (two CronJob pods, a retry after a timeout, two replicas answering the same
automation) must not create a version each. The check and the creation happen under the
backend's `rotation_lock()`, with the backend listed afresh inside it, so the second run sees
the first one's version and does nothing:
- the file backend locks a file in its key directory: at most one new version, whatever the
  number of concurrent runs on hosts sharing the directory (given a file system with locks);
- a remote backend (Vault, a KMS, an HSM) has no lock keysvc could take, so two runs that both
  list it before either has created a version may both create one. That residual race is
  harmless: both versions are published at once and wait their publish lead; the newer one
  signs from its own `signs_from`, the other is skipped (it never signs, and leaves the JWKS
  like any retired key), and the next scheduled run sees a recent version and does nothing.
  It costs one extra key in the JWKS for a while, never a failed verification.

The ring knows no HTTP and no CLI; neither does this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from keysvc import jose
from keysvc.backends.base import (
    CreatesVersions,
    KeyBackend,
    KeyVersion,
    OperationNotSupported,
    refusal,
)
from keysvc.durations import format_duration
from keysvc.keyring import KeyRing, iso


@dataclass(frozen=True)
class Rotation:
    """What one rotation run did, or why it did nothing: the reply of `POST /v1/keys/rotate`
    and of `keys rotate --json`."""

    backend: str
    rotated: bool
    reason: str
    """created (no condition), older (the newest version was older than if_older_than),
    empty (the backend had no version), or recent (nothing done: the newest is recent)."""
    message: str
    if_older_than: timedelta | None
    newest: dict[str, Any] | None
    """The backend's newest version before the run: kid, version, created_at."""
    created: dict[str, Any] | None
    """The version created: kid, alg, version, created_at, state, signs_from."""

    def to_json(self) -> dict[str, Any]:
        threshold = None if self.if_older_than is None else format_duration(self.if_older_than)
        return {
            "rotated": self.rotated,
            "backend": self.backend,
            "reason": self.reason,
            "message": self.message,
            "if_older_than": threshold,
            **(self.created or {}),
            "newest_before": self.newest,
        }


def newest_version(versions: list[KeyVersion]) -> KeyVersion | None:
    return max(versions, key=lambda v: (v.created_at, v.version_id), default=None)


async def rotate(
    ring: KeyRing, backend_name: str | None, if_older_than: timedelta | None = None
) -> Rotation:
    """Create a version in the backend (the only one when `backend_name` is None), unless
    `if_older_than` is given and the backend's newest version is not older than that.

    Raises ConfigError for an unknown or ambiguous backend, OperationNotSupported when the
    backend cannot rotate, BackendError when it fails."""
    backend = ring.backend(backend_name)
    why_not = refusal(backend, CreatesVersions)
    if why_not is not None:
        raise OperationNotSupported(why_not)
    assert isinstance(backend, CreatesVersions) and isinstance(backend, KeyBackend)
    async with backend.rotation_lock():
        newest = newest_version(await backend.list_versions())
        now = ring.clock()
        before = None if newest is None else _describe_existing(newest)
        if if_older_than is not None and newest is not None:
            age = now - newest.created_at
            if age <= if_older_than:
                return Rotation(
                    backend=backend.name,
                    rotated=False,
                    reason="recent",
                    message=(
                        f"nothing to do: the newest version of backend {backend.name}"
                        f" ({before['kid']}, created {before['created_at']}) is"
                        f" {_age(age)} old, not older than {format_duration(if_older_than)};"
                        f" the next rotation is due after {iso(newest.created_at + if_older_than)}"
                    ),
                    if_older_than=if_older_than,
                    newest=before,
                    created=None,
                )
        version = await backend.create_version()
    created = await describe_new_version(ring, backend, version)
    if if_older_than is None:
        reason, why = "created", "on request"
    elif newest is None:
        reason, why = "empty", "the backend had no version"
    else:
        reason = "older"
        why = f"the newest version was older than {format_duration(if_older_than)}"
    return Rotation(
        backend=backend.name,
        rotated=True,
        reason=reason,
        message=(
            f"created {created['kid']} ({created['alg']}) in backend {backend.name} ({why}):"
            f" published now, {signs_phrase(created)}"
        ),
        if_older_than=if_older_than,
        newest=before,
        created=created,
    )


async def describe_new_version(
    ring: KeyRing, backend: KeyBackend, version: KeyVersion
) -> dict[str, Any]:
    """A version just added (rotated or imported) as the ring now sees it: the ring is re-read,
    so its state and `signs_from` are those every replica computes (a key added to a ring where
    no other key can sign is active at once, and its `signs_from` is its creation time)."""
    alg = jose.choose_algorithm(version.public_key, ring.algorithm, version.algorithms)
    kid = jose.thumbprint(version.public_key)
    await ring.refresh(quiet=True)
    status = next((s for s in ring.view().keys if s.key.kid == kid), None)
    signs_from = (
        status.signs_from if status is not None
        else version.created_at + ring.lifecycle.publish_lead  # not listed yet
    )
    return {
        "backend": backend.name,
        "version": version.version_id,
        "kid": kid,
        "alg": alg.value,
        "created_at": iso(version.created_at),
        "state": status.state.value if status is not None else "pending",
        "signs_from": iso(signs_from),
    }


def signs_phrase(created: dict[str, Any]) -> str:
    """When a version just added signs, in words."""
    if created["state"] == "active":
        return f"signs now (no other key could sign; signs_from {created['signs_from']})"
    return f"signs from {created['signs_from']}"


def _describe_existing(version: KeyVersion) -> dict[str, Any]:
    return {
        "kid": jose.thumbprint(version.public_key),
        "version": version.version_id,
        "created_at": iso(version.created_at),
    }


def _age(age: timedelta) -> str:
    """An age to the second (a key created in the future shows as 0s)."""
    return format_duration(max(timedelta(0), timedelta(seconds=int(age.total_seconds()))))

