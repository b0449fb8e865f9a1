"""Verifying tokens the way a cloud does, with an independent library (PyJWT).

`CachingVerifier` is as strict as a verifier gets: it caches the JWKS for exactly the max-age
the service sent and never refetches on an unknown kid. A rotation that keeps it at zero
failures keeps every real verifier at zero failures.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWKClient
from jwt.exceptions import PyJWKClientError

ALGORITHMS = ["RS256", "PS256", "ES256", "ES384", "EdDSA"]
REQUIRED_CLAIMS = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]


class CachingVerifier(PyJWKClient):
    def __init__(self, issuer: str, base_url: str | None = None) -> None:
        """`base_url`: fetch discovery and JWKS from this replica rather than the issuer's
        address (a verifier whose requests a load balancer sent there)."""
        base = base_url or issuer
        with urllib.request.urlopen(base + "/.well-known/openid-configuration") as response:
            self.discovery = json.load(response)
        assert self.discovery["issuer"] == issuer
        self.issuer = issuer
        self.fetches = 0
        self.max_age: float | None = None
        jwks_uri = self.discovery["jwks_uri"]
        assert jwks_uri.startswith(issuer + "/")
        super().__init__(base + jwks_uri.removeprefix(issuer), cache_jwk_set=True, lifespan=1,
                         cache_keys=False)

    def fetch_data(self) -> Any:
        with urllib.request.urlopen(self.uri) as response:
            match = re.search(r"max-age=(\d+)", response.headers.get("Cache-Control", ""))
            assert match, "the JWKS must carry Cache-Control max-age"
            data = json.load(response)
        self.max_age = float(match.group(1))
        assert self.jwk_set_cache is not None
        self.jwk_set_cache.lifespan = self.max_age
        self.jwk_set_cache.put(data)
        self.fetches += 1
        return data

    def get_signing_key(self, kid: str) -> Any:
        key = self.match_kid(self.get_signing_keys(), kid)  # the cache only, even on a miss
        if key is None:
            raise PyJWKClientError(f"kid {kid} is not in the cached JWKS")
        return key

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        key = self.get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            audience=audience,
            issuer=self.issuer,
            options={"require": REQUIRED_CLAIMS},
        )

    async def averify(self, token: str, audience: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.verify, token, audience)


async def caching_verifier(issuer: str) -> CachingVerifier:
    return await asyncio.to_thread(CachingVerifier, issuer)


async def verify_once(issuer: str, token: str, audience: str) -> dict[str, Any]:
    """Verify with a fresh verifier (fresh discovery and JWKS fetch)."""
    verifier = await caching_verifier(issuer)
    return await verifier.averify(token, audience)


@dataclass
class RotationReport:
    verified: int = 0
    failures: list[str] = field(default_factory=list)
    signing_kids: list[str] = field(default_factory=list)
    left_on_time: list[str] = field(default_factory=list)


async def assert_rotation_without_failures(
    svc: Any,
    rotate: Callable[[], Awaitable[Any]],
    *,
    rotations: int = 2,
    audience: str = "aws.workload.identity",
    pace: float = 0.1,
    min_verified: int = 20,
) -> RotationReport:
    """Issue and verify tokens continuously across `rotations` rotations.

    Asserts: at least `min_verified` tokens verified and none failed; every rotation's key takes
    over signing; and a key that stopped signing leaves the JWKS once its `published_until` has
    passed. `svc` is a
    tests.service.RunningService whose config has short rotation durations (for example
    publish_lead 4s, jwks_max_age 2s, refresh_interval 1s, max_ttl 3s)."""
    lead = svc.config.rotation.publish_lead.total_seconds()
    refresh = svc.config.rotation.refresh_interval.total_seconds()
    verifier = await caching_verifier(svc.url)
    report = RotationReport()
    published_until: dict[str, float] = {}
    rotated_at: list[float] = []
    start = time.monotonic()
    deadline = start + (rotations + 1) * (lead + 2 * refresh) + 30

    async def step() -> None:
        issued = await svc.issue(audience=audience)
        try:
            claims = await verifier.averify(issued["token"], audience)
            assert claims["aud"] == audience
            report.verified += 1
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and asserted on
            report.failures.append(f"{issued['kid']}: {type(exc).__name__}: {exc}")
        if not report.signing_kids or report.signing_kids[-1] != issued["kid"]:
            report.signing_kids.append(issued["kid"])

    await step()
    while len(report.signing_kids) < rotations + 1:
        assert time.monotonic() < deadline, f"rotation stalled: {report}"
        due = len(rotated_at) < rotations and (
            not rotated_at or len(report.signing_kids) > len(rotated_at)
        )
        if due:
            await rotate()
            rotated_at.append(time.monotonic())
        status, _, listing = await svc.request("GET", "/v1/keys")
        assert status == 200, listing
        for key in listing["keys"]:
            if key["state"] == "retiring" and key["kid"] not in published_until:
                until = _parse_time(key["published_until"])
                published_until[key["kid"]] = until
        await step()
        await asyncio.sleep(pace)

    assert not report.failures, report.failures
    assert report.verified >= min_verified, report
    assert len(set(report.signing_kids)) == rotations + 1, report.signing_kids
    # Retired keys leave the JWKS on time: wait for the first one's published_until to pass.
    first = report.signing_kids[0]
    assert first in published_until, f"{first} never showed as retiring"
    wait = published_until[first] - time.time()
    while first in await svc.kids():
        # The ring drops it at published_until itself, without waiting for a refresh; the slack
        # only absorbs a loaded machine (a key left published would stay until the next change).
        assert time.time() < published_until[first] + refresh + 5, (
            f"{first} still published {time.time() - published_until[first]:.1f}s after "
            "its published_until"
        )
        assert wait < 60, "retention too long for a test"
        await asyncio.sleep(0.1)
    assert time.time() >= published_until[first] - 0.5, f"{first} left the JWKS early"
    report.left_on_time.append(first)
    return report


def _parse_time(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
