"""keysvc backed by a real OpenBao, end to end, where Vault differs from other backends: many
concurrent token requests coalesce into few Transit calls, and `keysvc keys rotate` and `revoke`
work through Transit with every replica seeing the result. (What every backend does, tokens
verified against the JWKS and rotation without failures: test_contract.py.)"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from tests import cli
from tests.conftest import FAST_ROTATION
from tests.service import start_service
from tests.vault.bao import BaoServer
from tests.vault.conftest import policy_token, token_file, unique
from tests.verification import verify_once


def vault_config(bao: BaoServer, key: str, token_path: Path, **tokens: Any) -> dict[str, Any]:
    return {
        **FAST_ROTATION,
        "tokens": {**FAST_ROTATION["tokens"], **tokens},
        "backends": [{"name": "vault", "type": "vault", "address": bao.address, "key": key,
                      "token_file": str(token_path)}],
    }


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
