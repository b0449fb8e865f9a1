"""The real keysvc service on the GCP backend (real google-cloud-kms client, Cloud KMS fake):
tokens verify with PyJWT against the JWKS it serves, rotation keeps a strict caching verifier
at zero failures, and KMS faults give 503 + Retry-After while the JWKS stays served, with
recovery on its own once KMS is back."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import jwt
import pytest

from keysvc.config import merge
from tests.conftest import FAST_ROTATION
from tests.fakes.gcp_kms import FakeCloudKms
from tests.gcp.conftest import KEY, local_settings
from tests.service import RUN, RunningService, backend_detail, start_service
from tests.verification import assert_rotation_without_failures, verify_once

AN_HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


def gcp_config(kms: FakeCloudKms, **settings: Any) -> dict[str, Any]:
    return merge(
        FAST_ROTATION,
        {"backends": [{"name": "gcp", "type": "gcp_kms", **local_settings(kms, **settings)}]},
    )


@pytest.mark.parametrize(
    ("algorithm", "alg"),
    [
        ("EC_SIGN_P256_SHA256", "ES256"),
        ("EC_SIGN_P384_SHA384", "ES384"),
        ("RSA_SIGN_PKCS1_2048_SHA256", "RS256"),
        ("RSA_SIGN_PSS_2048_SHA256", "PS256"),
    ],
)
async def test_tokens_verify_against_the_served_jwks(
    kms: FakeCloudKms, algorithm: str, alg: str
) -> None:
    kms.add_key(KEY, algorithm, created=[AN_HOUR_AGO])
    async with start_service(gcp_config(kms)) as svc:
        issued = await svc.issue()
        assert issued["alg"] == alg
        (jwk,) = (await svc.jwks())["keys"]
        assert jwk["kid"] == issued["kid"] and jwk["alg"] == alg and jwk["use"] == "sig"
        header = jwt.get_unverified_header(issued["token"])
        assert header["alg"] == alg and header["kid"] == jwk["kid"]

        claims = await verify_once(svc.url, issued["token"], RUN["audience"])

        assert claims["sub"] == "organization:acme:workspace:networking:run_phase:plan"
        assert kms.calls["AsymmetricSign"] == 1
        status, _, listing = await svc.request("GET", "/v1/keys")
        assert status == 200
        assert [(k["backend"], k["state"]) for k in listing["keys"]] == [("gcp", "active")]
        assert listing["keys"][0]["created_at"] == AN_HOUR_AGO.isoformat().replace("+00:00", "Z")


async def test_two_rotations_without_a_failed_verification(kms: FakeCloudKms) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256", created=[AN_HOUR_AGO])
    async with start_service(gcp_config(kms)) as svc:
        backend = svc.ring.backend("gcp")
        await assert_rotation_without_failures(svc, backend.create_version)

        assert kms.calls["CreateCryptoKeyVersion"] == 2
        # Public keys were read once per version, not once per refresh.
        assert kms.calls["GetPublicKey"] == 3


async def issue_status(svc: RunningService) -> tuple[int, Any, Any]:
    return await svc.request("POST", "/v1/tokens", json=RUN)


async def inject(kms: FakeCloudKms, fault: str) -> None:
    if fault == "down":
        await kms.stop()
    elif fault == "unavailable":
        kms.fail(grpc.StatusCode.UNAVAILABLE)
    elif fault == "internal":
        kms.fail(grpc.StatusCode.INTERNAL, "Internal error encountered.")
    elif fault == "throttled":
        kms.throttle(retry_after=3)
    elif fault == "slow":
        kms.delay = 3
    elif fault == "corrupt":
        kms.corrupt.add("signature")
    else:
        raise AssertionError(fault)


async def recover(kms: FakeCloudKms, fault: str) -> None:
    if fault == "down":
        await kms.start()
    kms.heal()


FAULTS = ["down", "unavailable", "internal", "throttled", "slow", "corrupt"]


@pytest.mark.parametrize("fault", FAULTS)
async def test_faults_give_503_keep_the_jwks_and_recover(
    kms: FakeCloudKms, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    # One active version and one pending (created now): both published.
    kms.add_key(KEY, "EC_SIGN_P256_SHA256", versions=2, created=[AN_HOUR_AGO, datetime.now(UTC)])
    config = gcp_config(kms, timeout="1s", retry_budget="0.5s")
    async with start_service(config) as svc:
        good = await svc.issue()
        jwks_before = await svc.jwks()
        assert len(jwks_before["keys"]) == 2

        await inject(kms, fault)
        started = time.monotonic()
        status, headers, body = await issue_status(svc)
        # Bounded by the backend's own deadlines (the detail below names Cloud KMS, not the
        # ring's sign_timeout); this generous bound only catches a request left hanging.
        assert time.monotonic() - started < 10
        assert status == 503, body
        assert body["error"]["code"] == "backend_unavailable"
        detail = backend_detail(caplog, body)
        assert "Cloud KMS" in detail and KEY in detail
        assert "Cloud KMS" not in body["error"]["message"] and KEY not in body["error"]["message"]
        assert int(headers["Retry-After"]) >= 1
        if fault == "throttled":  # Google's RetryInfo delay is passed on
            assert headers["Retry-After"] == "3"
        if fault == "corrupt":
            assert "integrity check" in detail

        # The ring cannot refresh now, yet the JWKS is still served from the last good ring.
        # (A corrupted signature does not stop listing: public keys are cached and checked.)
        errors = await svc.ring.refresh()
        assert ("gcp" in errors) == (fault != "corrupt")
        status, _, jwks = await svc.request("GET", "/.well-known/jwks")
        assert status == 200 and jwks["keys"] == jwks_before["keys"]

        await recover(kms, fault)
        deadline = time.monotonic() + 12  # reconnect backoff is capped at 5 s
        while (status := (await issue_status(svc))[0]) != 200:
            assert status == 503
            assert time.monotonic() < deadline, f"no recovery after {fault}"
            await asyncio.sleep(0.2)
        issued = await svc.issue()
        claims = await verify_once(svc.url, issued["token"], RUN["audience"])
        before = jwt.decode(good["token"], options={"verify_signature": False})
        assert claims["jti"] != before["jti"]


async def test_kms_down_at_start_then_up(kms: FakeCloudKms) -> None:
    kms.add_key(KEY, "RSA_SIGN_PSS_2048_SHA256", created=[AN_HOUR_AGO])
    await kms.stop()
    async with start_service(gcp_config(kms)) as svc:
        status, _, _ = await svc.request("GET", "/readyz")
        assert status == 503
        assert (await issue_status(svc))[0] == 503
        await kms.start()
        deadline = time.monotonic() + 12
        while (await svc.request("GET", "/readyz"))[0] != 200:  # the refresh loop recovers
            assert time.monotonic() < deadline, "never became ready"
            await asyncio.sleep(0.2)
        issued = await svc.issue()
        assert issued["alg"] == "PS256"
        await verify_once(svc.url, issued["token"], RUN["audience"])
