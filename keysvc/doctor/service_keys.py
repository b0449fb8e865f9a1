"""What keysvc itself says about its keys (`GET /v1/keys`, scope `keys:read`).

doctor compares it with the public JWKS (a static copy or CDN may lag behind) and reads the
publish lead from it: the time between a key's creation and its `signs_from`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from keysvc.durations import parse_duration
from keysvc.http_fetch import FetchError, fetch


@dataclass(frozen=True)
class ServiceKeys:
    keys: list[dict[str, Any]]
    publish_lead: timedelta | None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def infer_publish_lead(keys: list[dict[str, Any]]) -> timedelta | None:
    """The largest `signs_from - created_at` (the first key may sign at once, so not the min)."""
    leads = []
    for key in keys:
        created, signs_from = _time(key.get("created_at")), _time(key.get("signs_from"))
        if created and signs_from and signs_from > created:
            leads.append(signs_from - created)
    return max(leads, default=None)


def parse_service_keys(document: Any) -> ServiceKeys:
    keys = document.get("keys") if isinstance(document, dict) else document
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise FetchError("/v1/keys did not answer a list of keys")
    lead = None
    if isinstance(document, dict) and document.get("publish_lead") is not None:
        try:
            lead = parse_duration(document["publish_lead"])
        except ValueError:
            lead = None
    return ServiceKeys(keys, lead or infer_publish_lead(keys))


async def fetch_service_keys(
    client: aiohttp.ClientSession, api_url: str, client_token: str
) -> ServiceKeys:
    fetched = await fetch(
        client,
        api_url.rstrip("/") + "/v1/keys",
        headers={"Authorization": f"Bearer {client_token}"},
    )
    if fetched.status in (401, 403):
        raise FetchError(
            f"{fetched.url} refused the client token (HTTP {fetched.status}; needs keys:read)"
        )
    if fetched.status != 200:
        raise FetchError(f"{fetched.url} answered HTTP {fetched.status}")
    return parse_service_keys(fetched.json())
