"""keysvc backed by a real OpenBao, end to end: tokens verify with PyJWT against the JWKS the
service served; rotation keeps a caching verifier at zero failures; `keysvc keys rotate` and
`revoke` work through Transit and every replica sees the result."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests import cli
from tests.conftest import FAST_ROTATION
from tests.service import start_service
from tests.vault.bao import BaoServer
from tests.vault.conftest import policy_token, token_file, unique
from tests.verification import assert_rotation_without_failures, verify_once


def vault_config(bao: BaoServer, key: str, token_path: Path, **tokens: Any) -> dict[str, Any]:
    return {
        **FAST_ROTATION,
        "tokens": {**FAST_ROTATION["tokens"], **tokens},
        "backends": [{"name": "vault", "type": "vault", "address": bao.address, "key": key,
                      "token_file": str(token_path)}],
    }


@pytest.mark.parametrize(
    ("key_type", "algorithm", "expected"),
    [
        ("rsa-2048", None, "RS256"),
        ("rsa-2048", "PS256", "PS256"),
        ("ecdsa-p256", None, "ES256"),
        ("ecdsa-p384", None, "ES384"),
        ("ed25519", None, "EdDSA"),
    ],
)
async def test_tokens_verify_with_pyjwt_against_the_served_jwks(
    bao: BaoServer, tmp_path: Path, key_type: str, algorithm: str | None, expected: str,
) -> None:
    key = unique(key_type)
    bao.create_key(key, key_type)
    path = token_file(tmp_path, policy_token(bao, key))
    extra = {"algorithm": algorithm} if algorithm else {}
    async with start_service(vault_config(bao, key, path, **extra)) as svc:
        issued = await svc.issue(audience="sts.example.com")
        assert issued["alg"] == expected
        assert issued["kid"] in await svc.kids()
        claims = await verify_once(svc.url, issued["token"], "sts.example.com")
        assert claims["sub"] == "organization:acme:workspace:networking:run_phase:plan"
        status, _, listing = await svc.request("GET", "/v1/keys")
        assert status == 200 and listing["keys"][0]["backend"] == "vault"


async def test_rotation_across_vault_key_versions_keeps_verifiers_whole(bao: BaoServer, tmp_path: Path) -> None:
    key = unique("rotate")
    bao.create_key(key, "ecdsa-p256")
    path = token_file(tmp_path, policy_token(bao, key))
    async with start_service(vault_config(bao, key, path)) as svc:
        backend = svc.ring.backend("vault")
        await assert_rotation_without_failures(svc, backend.create_version, rotations=2)
    versions = bao.request("GET", f"transit/keys/{key}")["data"]["keys"]
    assert sorted(versions, key=int) == ["1", "2", "3"]


async def test_many_concurrent_token_requests_coalesce(bao: BaoServer, tmp_path: Path) -> None:
    key = unique("busy")
    bao.create_key(key, "ecdsa-p256")
    path = token_file(tmp_path, policy_token(bao, key))
    config = vault_config(bao, key, path)
    config["backends"][0]["batch_window"] = "20ms"
    async with start_service(config) as svc:
        bao.mark()
        issued = await asyncio.gather(*(svc.issue(run_id=f"run-{i}") for i in range(40)))
        calls = bao.requests_since_mark(f"transit/sign/{key}")
        assert calls < 40 / 4, calls
        for token in issued[:5]:
            await verify_once(svc.url, token["token"], "aws.workload.identity")


def write_toml(path: Path, bao: BaoServer, key: str, token_path: Path) -> Path:
    path.write_text(
        'issuer = "http://127.0.0.1:8080"\n'
        '[rotation]\npublish_lead = "4s"\njwks_max_age = "2s"\nrefresh_interval = "1s"\n'
        '[tokens]\ndefault_ttl = "3s"\nmax_ttl = "3s"\n'
        f'[[backends]]\nname = "vault"\ntype = "vault"\naddress = "{bao.address}"\n'
        f'key = "{key}"\ntoken_file = "{token_path}"\n'
    )
    return path


async def test_cli_rotate_reaches_every_replica_and_revoke_drops_the_key(bao: BaoServer, tmp_path: Path) -> None:
    key = unique("cli")
    bao.create_key(key, "ed25519")
    policy_token(bao, key)  # writes the minimal keysvc-<key> policy
    # revocation also needs update on the key's config (docs/backends/vault.md)
    bao.write_policy(f"admin-{key}", f'path "transit/keys/{key}/config" {{ capabilities = ["update"] }}')
    path = token_file(tmp_path, bao.create_token([f"keysvc-{key}", f"admin-{key}"]))
    config = vault_config(bao, key, path)
    toml = write_toml(tmp_path / "keysvc.toml", bao, key, path)
    async with start_service(config) as one, start_service(config) as two:
        (old,) = await one.kids()
        rotated = await asyncio.to_thread(cli.run, "keys", "rotate", "--config", str(toml), "--json")
        assert rotated.returncode == 0, rotated.stderr
        new = json.loads(rotated.stdout)
        assert new["version"] == "2" and new["backend"] == "vault"
        deadline = time.monotonic() + 5
        for replica in (one, two):
            while True:
                status, _, listing = await replica.request("GET", "/v1/keys")
                assert status == 200, listing
                states = {k["kid"]: k["state"] for k in listing["keys"]}
                if states.get(new["kid"]) == "pending":
                    break
                assert time.monotonic() < deadline, states
                await asyncio.sleep(0.2)
            assert states[old] == "active"

        # Emergency: revoke the old version. Transit can only cut below a version, and the new
        # one is the newest, so the old one (and nothing else) goes.
        revoked = await asyncio.to_thread(cli.run, "keys", "revoke", old, "--config", str(toml), "--json")
        assert revoked.returncode == 0, revoked.stderr
        assert json.loads(revoked.stdout)["signing_kid"] == new["kid"]
        deadline = time.monotonic() + 5
        while old in await two.kids():
            assert time.monotonic() < deadline, "revoked key still published"
            await asyncio.sleep(0.2)
        # The newest version cannot be revoked: a clear one-line error, exit 2.
        refused = await asyncio.to_thread(cli.run, "keys", "revoke", new["kid"], "--config", str(toml))
        cli.assert_one_line_error(refused, "rotate first")
