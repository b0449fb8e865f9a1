"""Verifying tokens the way a cloud does, with an independent library (PyJWT).

`CachingVerifier` is as strict as a verifier gets: it caches the JWKS for exactly the max-age
the service sent and never refetches on an unknown kid. A rotation that keeps it at zero
failures keeps every real verifier at zero failures. Its cache runs on real time, or on a
test's clock (tests.clock.VirtualClock) beside a service whose key ring runs on the same.
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
from jwt.jwk_set_cache import JWKSetCache

from tests.clock import VirtualClock

ALGORITHMS = ["RS256", "PS256", "ES256", "ES384", "EdDSA"]
REQUIRED_CLAIMS = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]


class _JwksCache(JWKSetCache):
    """PyJWT's JWKS cache, its age read from `now` (time.monotonic, or a test's clock)."""

    def __init__(self, now: Callable[[], float]) -> None:
        super().__init__(lifespan=1)
        self.now = now
        self.fetched_at = 0.0

    def put(self, jwk_set: Any) -> None:
        super().put(jwk_set)
        self.fetched_at = self.now()

    def is_expired(self) -> bool:
        return (
            self.jwk_set_with_timestamp is not None
            and self.now() > self.fetched_at + self.lifespan
        )


class CachingVerifier(PyJWKClient):
    def __init__(
        self,
        issuer: str,
        base_url: str | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        """`base_url`: fetch discovery and JWKS from this replica rather than the issuer's
        address (a verifier whose requests a load balancer sent there). `now`: the time the
        JWKS's max-age is counted in."""
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
        self.jwk_set_cache = _JwksCache(now)

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


async def caching_verifier(
    issuer: str, now: Callable[[], float] = time.monotonic
) -> CachingVerifier:
    return await asyncio.to_thread(CachingVerifier, issuer, None, now)


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
    clock: VirtualClock,
    *,
    rotations: int = 2,
    audience: str = "aws.workload.identity",
    min_verified: int = 20,
) -> RotationReport:
    """Issue and verify tokens across `rotations` rotations, on the test's clock.

    `svc` (a tests.service.RunningService, or what has its `ring`, `config`, `url`, `issue`,
    `request` and `kids`) runs its key ring on `clock` without the refresh loop
    (`start_service(config, clock=clock, refresh_loop=False)`): here the ring is refreshed every
    `refresh_interval` of clock time, as the loop would, and each rotation comes just after a
    refresh, so the ring sees the new version a whole refresh_interval later, the latest a
    replica may. Between refreshes the clock moves a quarter of refresh_interval at a time, and
    at each step a token is issued and verified by a CachingVerifier counting max-age on the
    same clock. Any durations work (FAST_ROTATION's are a few seconds of clock time).

    Asserts: at least `min_verified` tokens verified and none failed; every rotation's key takes
    over signing; a key that stopped signing is published until its successor's signs_from +
    max_ttl + jwks_max_age, and leaves the JWKS at that moment, by the clock alone (no refresh):
    still there just before, gone just after."""
    rotation = svc.config.rotation
    refresh = rotation.refresh_interval.total_seconds()
    retention = (svc.config.tokens.max_ttl + rotation.jwks_max_age).total_seconds()
    step = refresh / 4
    verifier = await caching_verifier(svc.url, clock.monotonic)
    report = RotationReport()
    published_until: dict[str, float] = {}
    signs_from: dict[str, float] = {}
    rotated = 0
    refreshes_left = (rotations + 1) * (rotation.publish_lead.total_seconds() / refresh + 2) + 5

    async def issue_and_verify() -> None:
        issued = await svc.issue(audience=audience)
        try:
            claims = await verifier.averify(issued["token"], audience)
            assert claims["aud"] == audience
            report.verified += 1
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and asserted on
            report.failures.append(f"{issued['kid']}: {type(exc).__name__}: {exc}")
        if not report.signing_kids or report.signing_kids[-1] != issued["kid"]:
            report.signing_kids.append(issued["kid"])

    async def leaves_on_time(kid: str, until: float) -> None:
        """Between two refreshes, by the clock alone: published just before `until`, gone just
        after it."""
        clock.advance(max(0.0, until - step / 2 - clock.time()))
        assert kid in await svc.kids(), f"{kid} left the JWKS before its published_until"
        clock.advance(step)
        assert kid not in await svc.kids(), f"{kid} still published after its published_until"
        report.left_on_time.append(kid)

    await issue_and_verify()
    while len(report.signing_kids) < rotations + 1 or not report.left_on_time:
        refreshes_left -= 1
        assert refreshes_left > 0, f"rotation stalled: {report}"
        assert await svc.ring.refresh() == {}
        if rotated < rotations and len(report.signing_kids) > rotated:
            await rotate()
            rotated += 1
        for _ in range(4):
            first = report.signing_kids[0]
            if first in published_until and not report.left_on_time:
                if clock.time() + step >= published_until[first] - step / 2:
                    await leaves_on_time(first, published_until[first])
            clock.advance(step)
            await issue_and_verify()
        status, _, listing = await svc.request("GET", "/v1/keys")
        assert status == 200, listing
        for key in listing["keys"]:
            signs_from.setdefault(key["kid"], _parse_time(key["signs_from"]))
            if key["state"] == "retiring":
                published_until.setdefault(key["kid"], _parse_time(key["published_until"]))

    assert not report.failures, report.failures
    assert report.verified >= min_verified, report
    assert len(set(report.signing_kids)) == rotations + 1, report.signing_kids
    first, successor = report.signing_kids[:2]
    expected = signs_from[successor] + retention
    assert abs(published_until[first] - expected) < 1e-3, (published_until, signs_from, retention)
    return report


def _parse_time(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
