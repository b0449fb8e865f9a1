"""The whole service on an azure_kv backend built from config (the entry point, azure-identity's
ClientSecretCredential against the fake tenant, the aio Key Vault clients), where Azure differs
from other backends: short throttling absorbed, a missing sign permission named, and the keys
CLI. (Tokens against the JWKS, rotation, faults and recovery: test_contract.py.)"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from keysvc.config import merge
from keysvc.secrets import write_private_file
from tests.azure.conftest import CLIENT_ID, KEY, TENANT
from tests.cli import run
from tests.conftest import FAST_ROTATION
from tests.fakes.azure_kv import OPERATIONS, FakeKeyVault, Fault
from tests.service import RUN, backend_detail, start_service
from tests.verification import verify_once

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
