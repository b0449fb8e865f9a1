"""keysvc served from a SoftHSM2 token: tokens verify with PyJWT against the JWKS the service
serves, rotation keeps a strict caching verifier at zero failures, a lost token is a 503."""

from __future__ import annotations

import shutil
from typing import Any

import jwt
import pytest

from keysvc.backends import pkcs11_library
from keysvc.config import merge
from tests.conftest import FAST_ROTATION
from tests.pkcs11.conftest import SoftHsmToken
from tests.service import RUN, backend_detail, start_service
from tests.verification import assert_rotation_without_failures, verify_once


def hsm_config(softhsm: SoftHsmToken, algorithm: str | None = None, **table: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"backends": [softhsm.table(**table)]}
    if algorithm is not None:
        config["tokens"] = {"algorithm": algorithm}
    return config


@pytest.fixture(autouse=True)
def _module_released() -> Any:
    yield
    assert not pkcs11_library._modules, "the service left a PKCS#11 module loaded"


@pytest.mark.parametrize(
    ("key_type", "algorithm", "expected"),
    [
        ("ec-p256", None, "ES256"),
        ("ec-p384", None, "ES384"),
        ("ed25519", None, "EdDSA"),
        ("rsa-2048", None, "RS256"),
        ("rsa-2048", "PS256", "PS256"),
    ],
)
async def test_tokens_verify_against_the_served_jwks(
    softhsm: SoftHsmToken, key_type: str, algorithm: str | None, expected: str
) -> None:
    async with start_service(hsm_config(softhsm, algorithm, key_type=key_type)) as svc:
        status, _, body = await svc.request("POST", "/v1/tokens", json=RUN)
        assert status == 503, body  # an empty token: nothing signs yet
        version = await svc.ring.backend("hsm").create_version()
        await svc.ring.refresh()
        issued = await svc.issue()
        assert issued["alg"] == expected
        header = jwt.get_unverified_header(issued["token"])
        assert header["alg"] == expected and header["kid"] == issued["kid"]
        assert issued["kid"] in await svc.kids()
        claims = await verify_once(svc.url, issued["token"], RUN["audience"])
        assert claims["sub"] == "organization:acme:workspace:networking:run_phase:plan"
        status, _, listing = await svc.request("GET", "/v1/keys")
        assert status == 200
        (key,) = listing["keys"]
        assert key["backend"] == "hsm" and key["kid"] == issued["kid"]
        assert key["created_at"].startswith(version.created_at.strftime("%Y-%m-%dT%H:%M:%S"))


async def test_two_rotations_without_a_failed_verification(softhsm: SoftHsmToken) -> None:
    config = merge(FAST_ROTATION, hsm_config(softhsm, key_type="ec-p256", sessions=2))
    async with start_service(config) as svc:
        backend = svc.ring.backend("hsm")
        await backend.create_version()
        await svc.ring.refresh()
        await assert_rotation_without_failures(svc, backend.create_version)


async def test_vanished_token_answers_503_with_retry_after(
    softhsm: SoftHsmToken, caplog: pytest.LogCaptureFixture
) -> None:
    async with start_service(hsm_config(softhsm, key_type="ec-p256"), refresh_loop=False) as svc:
        await svc.ring.backend("hsm").create_version()
        await svc.ring.refresh()
        await svc.issue()
        for path in softhsm.directory.iterdir():
            shutil.rmtree(path)
        status, headers, body = await svc.request("POST", "/v1/tokens", json=RUN)
        assert status == 503, body
        assert int(headers["Retry-After"]) >= 1
        assert set(body["error"]) == {"code", "message"}
        detail = backend_detail(caplog, body)
        assert "keysvc-test" in detail and "keysvc-test" not in body["error"]["message"]
        assert softhsm.pin not in detail and softhsm.pin not in body["error"]["message"]
        # The JWKS stays served from the last good listing.
        errors = await svc.ring.refresh()
        assert "hsm" in errors
        assert len(await svc.kids()) == 1
