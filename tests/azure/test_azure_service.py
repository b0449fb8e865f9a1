"""The whole service on an azure_kv backend built from config (the entry point, azure-identity's
ClientSecretCredential against the fake tenant, the aio Key Vault clients): tokens verify with
PyJWT against the served JWKS, rotation keeps a caching verifier at zero failures, vault faults
become 503 with Retry-After while the JWKS stays, and the service recovers by itself."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keysvc.config import merge
from keysvc.secrets import write_private_file
from tests.azure.conftest import CLIENT_ID, KEY, TENANT
from tests.cli import run
from tests.conftest import FAST_ROTATION
from tests.fakes.azure_kv import OPERATIONS, FakeKeyVault, Fault
from tests.service import RUN, RunningService, backend_detail, start_service
from tests.verification import assert_rotation_without_failures, verify_once

SECRET = "Zq8~service-test-client-secret"
HOUR_AGO = int(time.time()) - 3600


@pytest.fixture
def secret_path(tmp_path: Path) -> Path:
    path = tmp_path / "azure-client-secret"
    write_private_file(path, SECRET.encode())
    return path


def backend_table(
    vault: FakeKeyVault, ca_file: Path, secret_path: Path, **extra: Any
) -> dict[str, Any]:
    return {
        "name": "azure",
        "type": "azure_kv",
        "vault_url": vault.url,
        "key": KEY,
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "client_secret_file": str(secret_path),
        "authority_host": vault.url,
        "ca_cert": str(ca_file),
        "timeout": "1s",
        "throttle_budget": "500ms",
        **extra,
    }


def azure_config(
    vault: FakeKeyVault,
    ca_file: Path,
    secret_path: Path,
    *,
    tokens: dict[str, Any] | None = None,
    operations: frozenset[str] = OPERATIONS,
    **extra: Any,
) -> dict[str, Any]:
    vault.add_client(CLIENT_ID, secret=SECRET, operations=operations)
    config = merge(
        FAST_ROTATION, {"backends": [backend_table(vault, ca_file, secret_path, **extra)]}
    )
    return merge(config, {"tokens": tokens}) if tokens else config


@pytest.mark.parametrize(
    ("kty", "crv", "algorithm", "expected"),
    [
        ("RSA-HSM", "", None, "RS256"),
        ("RSA", "", "PS256", "PS256"),
        ("EC-HSM", "P-256", None, "ES256"),
        ("EC", "P-384", None, "ES384"),
    ],
)
async def test_tokens_verify_against_the_served_jwks(
    vault: FakeKeyVault,
    azure_ca_file: Path,
    secret_path: Path,
    kty: str,
    crv: str,
    algorithm: str | None,
    expected: str,
) -> None:
    version = vault.create_key(KEY, kty, crv=crv or "P-256", created=HOUR_AGO)
    tokens = {"algorithm": algorithm} if algorithm else None
    async with start_service(azure_config(vault, azure_ca_file, secret_path, tokens=tokens)) as svc:
        issued = await svc.issue()
        assert issued["alg"] == expected
        claims = await verify_once(svc.url, issued["token"], RUN["audience"])
        assert claims["sub"] == "organization:acme:workspace:networking:run_phase:plan"
        assert jwt.get_unverified_header(issued["token"])["kid"] == issued["kid"]

        # The published key is the vault version's public key, and nothing private.
        (jwk,) = (await svc.jwks())["keys"]
        assert jwk["kid"] == issued["kid"] and jwk["alg"] == expected
        public = vault.version(KEY, version).private_key.public_key()
        assert jwt.PyJWK(jwk).key.public_numbers() == public.public_numbers()
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)

        status, _, body = await svc.request(
            "POST", "/v1/sign", json={"claims": {"sub": "x", "aud": "y"}}
        )
        assert status == 200, body
        assert (await verify_once(svc.url, body["token"], "y"))["sub"] == "x"
    assert vault.calls["sign"] == 2
    assert vault.tokens_issued == 1


async def test_rotation_keeps_a_caching_verifier_at_zero_failures(
    vault: FakeKeyVault, azure_ca_file: Path, secret_path: Path
) -> None:
    vault.create_key(KEY, "EC-HSM", crv="P-256", created=HOUR_AGO)
    async with start_service(azure_config(vault, azure_ca_file, secret_path)) as svc:
        backend = svc.ring.backend("azure")
        await assert_rotation_without_failures(svc, backend.create_version)
    assert vault.calls["rotate"] == 2 and len(vault.versions(KEY)) == 3
    assert all(isinstance(v.private_key, ec.EllipticCurvePrivateKey) for v in vault.versions(KEY))


async def expect_503(svc: RunningService, retry_after: str | None = None) -> dict[str, Any]:
    started = time.monotonic()
    status, headers, body = await svc.request("POST", "/v1/tokens", json=RUN)
    assert status == 503, body
    # A fault must not hold the request. A slow vault is cut off at the backend's 1 s timeout
    # (the detail says so: see the callers), else at sign_timeout; this only bounds a hang.
    assert time.monotonic() - started < 10, "a vault fault must not hold the request"
    assert headers["Retry-After"].isdigit() and int(headers["Retry-After"]) >= 1
    if retry_after is not None:
        assert headers["Retry-After"] == retry_after
    assert body["error"]["code"] == "backend_unavailable", body
    assert SECRET not in json.dumps(body)
    return body


async def recovers(svc: RunningService) -> None:
    deadline = time.monotonic() + 10
    while True:
        status, _, body = await svc.request("POST", "/v1/tokens", json=RUN)
        if status == 200:
            await verify_once(svc.url, body["token"], RUN["audience"])
            break
        assert time.monotonic() < deadline, f"no recovery: {body}"
        await asyncio.sleep(0.2)
    while "azure" in svc.ring.last_errors:  # the next refresh succeeds too
        assert time.monotonic() < deadline, svc.ring.last_errors
        await asyncio.sleep(0.2)


@pytest.mark.parametrize(
    ("fault", "retry_after", "message"),
    [
        ("down", None, "cannot reach Azure Key Vault"),
        (Fault("status", status=500), None, "HTTP 500 InternalServerError"),
        (Fault("status", status=503, retry_after=4), "4", "HTTP 503 ServiceUnavailable"),
        (Fault("status", status=429, retry_after=3), "3", "throttling"),
        (Fault("slow", delay=3), None, "did not answer within 1s"),
    ],
    ids=["down", "500", "503", "429", "slow"],
)
async def test_vault_faults_are_503_while_the_jwks_stays_then_recover(
    vault: FakeKeyVault,
    azure_ca_file: Path,
    secret_path: Path,
    fault: Fault | str,
    retry_after: str | None,
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    vault.create_key(KEY, "RSA-HSM", created=HOUR_AGO)
    async with start_service(azure_config(vault, azure_ca_file, secret_path)) as svc:
        await svc.issue()
        kids = await svc.kids()
        if fault == "down":
            await vault.down()
        else:
            assert isinstance(fault, Fault)
            vault.inject(fault)
        body = await expect_503(svc, retry_after)
        assert message in backend_detail(caplog, body)
        assert message not in body["error"]["message"]

        # A refresh fails meanwhile; the JWKS is served from the last good ring.
        deadline = time.monotonic() + 6
        while "azure" not in svc.ring.last_errors:
            assert time.monotonic() < deadline, "no refresh failed"
            await asyncio.sleep(0.2)
        assert await svc.kids() == kids
        status, _, ready = await svc.request("GET", "/readyz")
        assert status == 200, ready

        if fault == "down":
            await vault.up()
        else:
            vault.inject(None)
        await recovers(svc)
        assert await svc.kids() == kids


async def test_short_throttling_is_absorbed(
    vault: FakeKeyVault, azure_ca_file: Path, secret_path: Path
) -> None:
    vault.create_key(KEY, "RSA-HSM", created=HOUR_AGO)
    config = azure_config(vault, azure_ca_file, secret_path, timeout="3s", throttle_budget="2s")
    async with start_service(config, refresh_loop=False) as svc:
        await svc.issue()
        vault.inject(
            Fault("status", status=429, retry_after=1, remaining=1, operations=frozenset({"sign"}))
        )
        signs = vault.calls["sign"]
        started = time.monotonic()
        issued = await svc.issue()
        assert time.monotonic() - started >= 0.9  # the Retry-After second was waited...
        assert vault.calls["sign"] == signs + 2  # ...once, and the retry signed
        await verify_once(svc.url, issued["token"], RUN["audience"])


async def test_missing_sign_permission_is_a_clear_503(
    vault: FakeKeyVault, azure_ca_file: Path, secret_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vault.create_key(KEY, "RSA-HSM", created=HOUR_AGO)
    config = azure_config(vault, azure_ca_file, secret_path, operations=frozenset({"get", "list"}))
    async with start_service(config) as svc:
        status, headers, body = await svc.request("POST", "/v1/tokens", json=RUN)
        assert status == 503 and headers["Retry-After"]
        assert body["error"]["code"] == "backend_error"
        assert "Key Vault Crypto User" in backend_detail(caplog, body)


async def test_keys_cli_rotates_lists_and_revokes_in_the_vault(
    vault: FakeKeyVault, azure_ca_file: Path, secret_path: Path, tmp_path: Path
) -> None:
    first = vault.create_key(KEY, "RSA-HSM", created=HOUR_AGO)
    vault.add_client(CLIENT_ID, secret=SECRET)
    table = backend_table(vault, azure_ca_file, secret_path, timeout="3s", throttle_budget="1s")
    lines = ['issuer = "https://keys.example.com"', "", "[[backends]]"]
    lines += [f"{name} = {json.dumps(value)}" for name, value in table.items()]
    config = tmp_path / "keysvc.toml"
    config.write_text("\n".join(lines) + "\n")

    async def keysvc(*args: str) -> Any:
        result = await asyncio.to_thread(run, *args, "--config", str(config), "--json")
        assert result.returncode == 0, result.stderr
        assert SECRET not in result.stdout + result.stderr
        return json.loads(result.stdout)

    rotated = await keysvc("keys", "rotate")
    versions = vault.versions(KEY)
    assert len(versions) == 2 and rotated["version"] == versions[-1].version != first
    assert isinstance(versions[-1].private_key, rsa.RSAPrivateKey)
    assert rotated["backend"] == "azure" and rotated["alg"] == "RS256"

    listing = await keysvc("keys", "list")
    rows = listing["keys"] if isinstance(listing, dict) else listing
    by_kid = {row["kid"]: row for row in rows}
    assert by_kid[rotated["kid"]]["state"] == "pending" and len(by_kid) == 2

    revoked = await keysvc("keys", "revoke", rotated["kid"])
    assert revoked["revoked"] == rotated["kid"]
    assert vault.version(KEY, rotated["version"]).enabled is False
    assert vault.version(KEY, first).enabled is True
