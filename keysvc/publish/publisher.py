"""Publishing the service's own public documents and keeping them current.

The documents are built by `keysvc.documents.PublicDocuments`, exactly as the service builds them
for its responses: same bytes, same Cache-Control, same ETag. The JWKS is written before the
discovery document, and a key is published as soon as the ring sees it, which is a full
publish lead before it may sign.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from keysvc.documents import DISCOVERY_PATH, JWKS_PATH, Document, PublicDocuments
from keysvc.keyring import KeyRing
from keysvc.publish.targets import PublishError, Target

log = logging.getLogger("keysvc.publish")
PATHS = (JWKS_PATH.lstrip("/"), DISCOVERY_PATH.lstrip("/"))


@dataclass(frozen=True)
class Publication:
    target: str
    changed: bool
    documents: dict[str, Document]
    keys: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "changed": self.changed,
            "documents": {
                path: {"etag": doc.etag, "cache_control": doc.cache_control, "bytes": len(doc.body)}
                for path, doc in self.documents.items()
            },
            "keys": self.keys,
        }

    def summary(self) -> str:
        keys = ", ".join(f"{k['kid']} ({k['state']})" for k in self.keys) or "no keys"
        verb = "published" if self.changed else "unchanged"
        return f"{verb} {self.target}: {keys}"


class EmptyJWKS(PublishError):
    """The ring has no key to publish."""


class Publisher:
    """Writes the documents to a target. A JWKS without keys is written only when
    `allow_empty`: verifiers would refuse every token, so an empty ring (a key directory
    emptied by mistake, a backend that lists nothing at a first start) must never replace a
    good copy unless the operator says so."""

    def __init__(
        self,
        ring: KeyRing,
        issuer: str,
        max_age: timedelta,
        target: Target,
        *,
        allow_empty: bool = False,
    ) -> None:
        self.ring = ring
        self.issuer = issuer
        self.max_age = max_age
        self.target = target
        self.allow_empty = allow_empty
        self._written: dict[str, str] = {}

    def documents(self) -> dict[str, Document]:
        built = PublicDocuments.build(self.ring.view(), self.issuer, self.max_age)
        return dict(zip(PATHS, (built.jwks, built.discovery), strict=True))

    async def publish(self) -> Publication:
        """Write the documents that changed since the last write; the first time, those that
        differ from what the target holds (bytes or Cache-Control), so `changed` is true only
        when something was written."""
        if not self.allow_empty and not self.ring.view().published:
            raise EmptyJWKS(
                "the backends list no key, so the JWKS would be empty: nothing written (a"
                " published copy stays as it is; --allow-empty writes an empty one)"
            )
        documents = self.documents()
        changed = False
        for path, document in documents.items():  # the JWKS first: discovery points at it
            if path not in self._written:
                stored = await self.target.stored(path)
                if stored is not None and stored.matches(document):
                    self._written[path] = document.etag
            if self._written.get(path) != document.etag:
                await self.target.write(path, document)
                self._written[path] = document.etag
                changed = True
        if changed:
            await self.target.write_manifest(documents)
        return Publication(self.target.describe(), changed, documents, self.ring.view().listing())

    def _next_wait(self, interval: float) -> float:
        """Sleep until the next refresh, or sooner when a key's state changes by the clock."""
        until = self.ring.view().valid_until
        now = datetime.now(UTC)
        if until <= now:
            return 0.0
        return min(interval, (until - now).total_seconds() + 0.01)

    async def watch(self, interval: float, stop: asyncio.Event, report: Any = None) -> None:
        """Refresh and republish until `stop` is set. A failed refresh keeps the last known keys
        (the ring does, and logs it once); a failed write, or an empty ring, is retried at the
        next round (logged when the reason changes)."""
        last_failure = None
        while not stop.is_set():
            await self.ring.refresh()
            try:
                publication = await self.publish()
            except PublishError as exc:
                if str(exc) != last_failure:
                    log.warning("publish failed (retrying): %s", exc)
                last_failure = str(exc)
            else:
                last_failure = None
                if publication.changed and report is not None:
                    report(publication)
            try:
                await asyncio.wait_for(stop.wait(), self._next_wait(interval))
            except TimeoutError:
                pass
