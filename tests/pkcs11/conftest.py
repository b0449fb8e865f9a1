"""A fresh SoftHSM2 token per test (its own token directory and SOFTHSM2_CONF), and backends
on it that are always closed, so the module is finalised and the next test's configuration read.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keysvc.backends import pkcs11_library
from keysvc.backends.pkcs11 import Pkcs11Backend, Pkcs11Settings
from keysvc.secrets import write_private_file

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
TOKEN_TOOL = Path(__file__).with_name("token_tool.py")


@dataclass
class SoftHsmToken:
    module: Path
    label: str
    pin: str
    directory: Path
    pin_file: Path

    def table(self, **overrides: Any) -> dict[str, Any]:
        """A `[[backends]]` table for this token (PIN from the 0600 file, prefix `keysvc`)."""
        return {
            "name": "hsm",
            "type": "pkcs11",
            "module": str(self.module),
            "token_label": self.label,
            "pin_file": str(self.pin_file),
            "label_prefix": "keysvc",
            **overrides,
        }

    def tool(self, *args: str) -> str:
        """Run token_tool.py in its own process (another program using the token)."""
        result = subprocess.run(
            [sys.executable, str(TOKEN_TOOL), str(self.module), self.label, self.pin, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stdout

    def make_key(
        self, label: str, key_type: str = "ec-p256", start_date: str | None = None
    ) -> None:
        self.tool("make", label, key_type, *([start_date] if start_date else []))

    def inspect(self, label: str) -> list[dict[str, Any]]:
        return json.loads(self.tool("inspect", label))


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsmToken:
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    label = "keysvc-test"
    pin = "pin-" + secrets.token_hex(6)  # distinctive, so "not in the message" means something
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            "so-" + secrets.token_hex(6),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    pin_file = tmp_path / "pin"
    write_private_file(pin_file, pin.encode() + b"\n")
    return SoftHsmToken(SOFTHSM_MODULE, label, pin, tokens, pin_file)


BackendFactory = Callable[..., Pkcs11Backend]


@pytest.fixture
async def make_backend(softhsm: SoftHsmToken) -> AsyncIterator[BackendFactory]:
    """Build backends on the test's token (settings overridable); every one is closed at the
    end, and the module must then be finalised (no backend leaked it)."""
    made: list[Pkcs11Backend] = []

    def factory(**overrides: Any) -> Pkcs11Backend:
        table = softhsm.table(**overrides)
        name = table.pop("name")
        table.pop("type")
        backend = Pkcs11Backend(name, Pkcs11Settings.model_validate(table))
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.close()
    assert not pkcs11_library._modules, "a PKCS#11 module was left loaded"
