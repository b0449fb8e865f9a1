"""`keysvc keys rotate|list|revoke` on a SoftHSM2 token, through the real command line, each in a
process of its own (tests.cli.run_process): a PKCS#11 module is loaded once per process, and
these commands must leave this one's (the other tests') alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli import assert_one_line_error, run_process
from tests.pkcs11.conftest import SoftHsmToken


def write_config(tmp_path: Path, table: dict[str, Any]) -> Path:
    lines = ['issuer = "http://127.0.0.1:8080"', "", "[[backends]]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in table.items() if value is not None]
    path = tmp_path / "keysvc.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rotate_list_and_revoke_on_the_token(tmp_path: Path, softhsm: SoftHsmToken) -> None:
    config = str(write_config(tmp_path, softhsm.table(key_type="ec-p256")))
    first = run_process("keys", "rotate", "--config", config, "--json")
    assert first.returncode == 0, first.stderr
    second = run_process("keys", "rotate", "--config", config, "--json")
    assert second.returncode == 0, second.stderr
    rotated = json.loads(first.stdout)
    assert rotated["version"].startswith("keysvc-") and rotated["alg"] == "ES256"
    old, new = rotated["kid"], json.loads(second.stdout)["kid"]
    listing = json.loads(run_process("keys", "list", "--config", config, "--json").stdout)["keys"]
    assert [(k["kid"], k["state"], k["backend"]) for k in listing] == [
        (old, "active", "hsm"),
        (new, "pending", "hsm"),
    ]
    revoked = run_process("keys", "revoke", "--config", config, old, "--json")
    assert revoked.returncode == 0, revoked.stderr
    listing = json.loads(run_process("keys", "list", "--config", config, "--json").stdout)["keys"]
    assert [k["kid"] for k in listing] == [new]
    kept = softhsm.inspect(rotated["version"] + ".revoked")
    assert sorted(entry["class"] for entry in kept) == ["PRIVATE_KEY", "PUBLIC_KEY"]


def test_wrong_pin_is_a_one_line_error(tmp_path: Path, softhsm: SoftHsmToken) -> None:
    softhsm.pin_file.write_text("pin-wrong-0000\n")
    config = str(write_config(tmp_path, softhsm.table()))
    result = run_process("keys", "list", "--config", config)
    assert_one_line_error(result, "refused the PIN")
    assert softhsm.pin not in result.stderr and "pin-wrong-0000" not in result.stderr


def test_world_readable_pin_file_is_a_one_line_error(tmp_path: Path, softhsm: SoftHsmToken) -> None:
    softhsm.pin_file.chmod(0o640)
    config = str(write_config(tmp_path, softhsm.table()))
    assert_one_line_error(run_process("keys", "rotate", "--config", config), "chmod 600")


def test_impossible_timestamp_in_a_label_is_a_one_line_error(
    tmp_path: Path, softhsm: SoftHsmToken
) -> None:
    softhsm.make_key("keysvc-20250101T000000Z")
    softhsm.make_key("keysvc-20261399T999999Z")
    config = str(write_config(tmp_path, softhsm.table()))
    assert_one_line_error(
        run_process("keys", "list", "--config", config), "'keysvc-20261399T999999Z'", "not a valid UTC date"
    )
    served = run_process("serve", "--config", config)  # refuses to start (logs the login first)
    assert served.returncode == 2 and "Traceback" not in served.stderr, served.stderr
    last = served.stderr.strip().splitlines()[-1]
    assert last.startswith("keysvc: error: ") and "'keysvc-20261399T999999Z'" in last
