"""The `keys` CLI on AWS KMS keys (moto): rotation moves the alias, revocation disables the
key, a missing alias is a one-line error. (Tokens against the JWKS, rotation under a strict
caching verifier, faults and recovery over HTTP: test_contract.py.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests import cli

from .conftest import REGION, create_key
from .test_contract import kid_of



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
