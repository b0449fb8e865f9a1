"""The whole service on AWS KMS keys (moto): tokens verified with PyJWT against the JWKS the
service served, rotation under a strict caching verifier, faults and recovery over HTTP, and
the `keys` CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from keysvc import jose
from keysvc.config import merge
from tests import cli
from tests.conftest import FAST_ROTATION
from tests.service import start_service
from tests.verification import assert_rotation_without_failures, caching_verifier, verify_once

from .conftest import REGION, create_key

AUDIENCE = "aws.workload.identity"


def aws_config(url: str, **settings: Any) -> dict[str, Any]:
    backend = {"name": "aws", "type": "aws_kms", "region": REGION, "endpoint_url": url}
    return merge(FAST_ROTATION, {"backends": [{**backend, **settings}]})


def kid_of(kms: Any, key_id: str) -> str:
    der = kms.get_public_key(KeyId=key_id)["PublicKey"]
    return jose.thumbprint(serialization.load_der_public_key(der))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key_spec", "algorithm", "alg"),
    [
        ("RSA_2048", None, "RS256"),
        ("RSA_3072", "PS256", "PS256"),
        ("ECC_NIST_P256", None, "ES256"),
        ("ECC_NIST_P384", None, "ES384"),
    ],
)
async def test_tokens_verify_against_the_served_jwks(
    kms: Any, aws_server: Any, key_spec: str, algorithm: str | None, alg: str
) -> None:
    meta = create_key(kms, key_spec, alias="alias/keysvc")
    config = aws_config(aws_server.url, key_ids=["alias/keysvc"])
    if algorithm:
        config = merge(config, {"tokens": {"algorithm": algorithm}})
    async with start_service(config) as svc:
        issued = await svc.issue(audience=AUDIENCE)
        assert issued["alg"] == alg
        assert issued["kid"] == kid_of(kms, meta["Arn"])
        claims = await verify_once(svc.url, issued["token"], AUDIENCE)
        assert claims["sub"] == "organization:acme:workspace:networking:run_phase:plan"
        (jwk,) = (await svc.jwks())["keys"]
        assert jwk["kid"] == issued["kid"] and jwk["alg"] == alg
        assert not {"d", "p", "q", "x5c", "x5t"} & set(jwk)
        status, _, listing = await svc.request("GET", "/v1/keys")
        assert status == 200 and listing["keys"][0]["backend"] == "aws"


async def test_alias_rotation_keeps_a_caching_verifier_at_zero_failures(
    kms: Any, aws_server: Any
) -> None:
    create_key(kms, "ECC_NIST_P256", alias="alias/keysvc")
    async with start_service(aws_config(aws_server.url, key_ids=["alias/keysvc"])) as svc:
        backend = svc.ring.backend("aws")
        report = await assert_rotation_without_failures(svc, backend.create_version)
        # Each signing key in turn was the alias's target when it was created.
        current = kms.describe_key(KeyId="alias/keysvc")["KeyMetadata"]["Arn"]
        assert report.signing_kids[-1] == kid_of(kms, current)


async def test_faults_give_503_with_retry_after_while_jwks_is_served(
    kms: Any, aws_server: Any, faults: Any
) -> None:
    create_key(kms, "ECC_NIST_P256", tags={"keysvc": "test"})
    config = aws_config(aws_server.url, tag="keysvc=test", max_attempts=2)
    async with start_service(config) as svc:
        verifier = await caching_verifier(svc.url)
        good = await svc.issue(audience=AUDIENCE)
        await verifier.averify(good["token"], AUDIENCE)
        jwks_before = await svc.jwks()

        # KMS throttles every call: signing and refreshing both fail.
        faults.inject("*", "ThrottlingException")
        status, headers, body = await svc.request(
            "POST", "/v1/tokens", json={**_run(), "audience": AUDIENCE}
        )
        assert status == 503, body
        assert body["error"]["code"] == "backend_unavailable"
        assert int(headers["Retry-After"]) >= 1
        assert "Traceback" not in json.dumps(body)
        await svc.ring.refresh()  # a failed refresh keeps the last good ring
        assert await svc.jwks() == jwks_before
        status, _, _ = await svc.request("GET", "/.well-known/openid-configuration")
        assert status == 200

        # A server-side failure (5xx) is a 503 too.
        faults.clear()
        faults.inject("Sign", "KMSInternalException", status=500, message="internal")
        status, headers, body = await svc.request(
            "POST", "/v1/tokens", json={**_run(), "audience": AUDIENCE}
        )
        assert status == 503 and "Retry-After" in headers, body

        # Recovery: once KMS answers again, tokens are issued and verify.
        faults.clear()
        issued = await svc.issue(audience=AUDIENCE)
        await verifier.averify(issued["token"], AUDIENCE)


async def test_unreachable_at_start_then_recovers(
    kms: Any, aws_server: Any, faults: Any
) -> None:
    create_key(kms, "ECC_NIST_P256", alias="alias/keysvc")
    faults.inject("*", "ThrottlingException")
    config = aws_config(aws_server.url, key_ids=["alias/keysvc"], max_attempts=1)
    async with start_service(config) as svc:
        status, _, _ = await svc.request("GET", "/readyz")
        assert status == 503
        status, headers, body = await svc.request(
            "POST", "/v1/tokens", json={**_run(), "audience": AUDIENCE}
        )
        assert status == 503 and "Retry-After" in headers, body
        faults.clear()
        refresh = svc.config.rotation.refresh_interval.total_seconds()
        for _ in range(int(10 / 0.1)):
            status, _, _ = await svc.request("GET", "/readyz")
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200, f"not ready {10}s after KMS recovered (refresh {refresh}s)"
        issued = await svc.issue(audience=AUDIENCE)
        await verify_once(svc.url, issued["token"], AUDIENCE)


def _run() -> dict[str, str]:
    from tests.service import RUN

    return dict(RUN)


async def test_keys_rotate_and_revoke_from_the_cli(
    kms: Any, aws_server: Any, tmp_path: Path
) -> None:
    first = create_key(kms, "ECC_NIST_P256", alias="alias/cli")
    config = tmp_path / "keysvc.toml"
    config.write_text(
        'issuer = "http://127.0.0.1:8080"\n'
        "[[backends]]\n"
        'name = "aws"\ntype = "aws_kms"\nkey_ids = ["alias/cli"]\n'
        f'region = "{REGION}"\nendpoint_url = "{aws_server.url}"\n'
    )
    rotated = await asyncio.to_thread(cli.run, "keys", "rotate", "--config", str(config), "--json")
    assert rotated.returncode == 0, rotated.stderr
    result = json.loads(rotated.stdout)
    assert result["backend"] == "aws" and result["alg"] == "ES256"
    assert kms.describe_key(KeyId="alias/cli")["KeyMetadata"]["Arn"] == result["version"]

    old_kid = kid_of(kms, first["Arn"])
    revoked = await asyncio.to_thread(
        cli.run, "keys", "revoke", old_kid, "--config", str(config), "--json"
    )
    assert revoked.returncode == 0, revoked.stderr
    assert kms.describe_key(KeyId=first["Arn"])["KeyMetadata"]["KeyState"] == "Disabled"

    config.write_text(config.read_text().replace("alias/cli", "alias/missing"))
    failed = await asyncio.to_thread(cli.run, "keys", "rotate", "--config", str(config))
    cli.assert_one_line_error(failed, "alias/missing")
