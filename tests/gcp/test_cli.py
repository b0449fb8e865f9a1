"""`keysvc keys list|rotate|revoke` on a gcp_kms backend: the real command in a subprocess,
talking to the Cloud KMS fake served by this test's event loop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tomllib
from pathlib import Path

from keysvc.config import parse_config
from keysvc.service import build_backends
from tests.fakes.gcp_kms import FakeCloudKms, State
from tests.gcp.conftest import KEY

DOCS = Path(__file__).resolve().parents[2] / "docs" / "backends" / "gcp-kms.md"


async def keysvc(*args: str) -> tuple[int, str, str]:
    """Run `python -m keysvc ARGS` without blocking the loop the fake runs on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSVC_", "OTF_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keysvc", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def write_config(tmp_path: Path, kms: FakeCloudKms) -> Path:
    path = tmp_path / "keysvc.toml"
    path.write_text(
        'issuer = "https://keys.example.com"\n'
        "[[backends]]\n"
        'name = "gcp"\n'
        'type = "gcp_kms"\n'
        f'key = "{KEY}"\n'
        f'endpoint = "{kms.endpoint}"\n'
        "insecure = true\n"
    )
    return path


async def test_keys_list_rotate_revoke(kms: FakeCloudKms, tmp_path: Path) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256")
    kms.generation_delay = 0.5
    config = str(write_config(tmp_path, kms))

    code, out, err = await keysvc(
        "keys", "rotate", "--config", config, "--backend", "gcp", "--json"
    )
    assert code == 0, err
    rotated = json.loads(out)
    assert rotated["version"] == f"{KEY}/cryptoKeyVersions/2"
    assert rotated["alg"] == "ES256"
    assert kms.version(rotated["version"]).state == State.ENABLED

    code, out, err = await keysvc("keys", "list", "--config", config, "--json")
    assert code == 0, err
    listing = json.loads(out)["keys"]
    assert [(k["backend"], k["state"]) for k in listing] == [("gcp", "active"), ("gcp", "pending")]
    assert listing[1]["kid"] == rotated["kid"]

    code, out, err = await keysvc("keys", "revoke", "--config", config, listing[0]["kid"], "--json")
    assert code == 0, err
    assert json.loads(out)["signing_kid"] == rotated["kid"]
    assert kms.version(f"{KEY}/cryptoKeyVersions/1").state == State.DISABLED


async def test_missing_permission_is_a_one_line_error(kms: FakeCloudKms, tmp_path: Path) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256")
    kms.deny("cloudkms.cryptoKeyVersions.create")
    code, out, err = await keysvc("keys", "rotate", "--config", str(write_config(tmp_path, kms)))
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keysvc: error: "), err
    assert "cloudkms.cryptoKeyVersions.create" in lines[0]
    assert len(kms.keys[KEY].versions) == 1


def test_the_documented_config_is_valid() -> None:
    (block,) = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    config = parse_config({"issuer": "https://keys.example.com", **tomllib.loads(block)})
    assert config.backends[0].type == "gcp_kms"
    build_backends(config)  # its settings too"
