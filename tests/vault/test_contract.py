"""The Vault backend under the contract, against a real OpenBao: backend-level checks, and the
service's (tokens verify against the served JWKS, two rotations, Vault unreachable and back,
Vault down when the service starts). Vault is reached through a plug, so an outage of one test
never stops the server the others share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from keysvc.backends.vault import VaultBackend
from keysvc.backends.vault_settings import VaultSettings
from tests.contract.plug import Plug
from tests.contract.service import FaultContract, KeyCase, ServiceContract, ServiceSubject
from tests.verification import RotationReport
from tests.vault.bao import BaoServer
from tests.vault.conftest import policy_token, token_file, unique


class VaultSubject(ServiceSubject):
    backend_class = VaultBackend
    name = "vault"
    key_cases = [
        KeyCase("rsa-2048", "RS256"),
        KeyCase("rsa-2048", "PS256", algorithm="PS256"),
        KeyCase("ecdsa-p256", "ES256"),
        KeyCase("ecdsa-p384", "ES384"),
        KeyCase("ed25519", "EdDSA"),
    ]
    rotation_key = "ecdsa-p256"

    def __init__(self, bao: BaoServer, plug: Plug, tmp_path: Path) -> None:
        self.bao = bao
        self.plug = plug
        self.key = unique("contract")
        self.created = False
        policy_token(bao, self.key)  # the documented minimal policy: read, sign, rotate
        # revocation also needs update on the key's config (docs/backends/vault.md)
        config_path = f"transit/keys/{self.key}/config"
        bao.write_policy(f"admin-{self.key}", f'path "{config_path}" {{ capabilities = ["update"] }}')
        token = bao.create_token([f"keysvc-{self.key}", f"admin-{self.key}"])
        self.token_path = token_file(tmp_path, token, f"token-{self.key}")
        self.secrets = (token,)

    def _create_key(self, key_type: str) -> None:
        if not self.created:
            self.bao.create_key(self.key, key_type)
            self.created = True

    def table(self) -> dict[str, Any]:
        return {"name": self.name, "type": "vault", "endpoint": self.plug.url, "key": self.key,
                "token_file": str(self.token_path), "timeout": "2s"}

    def make_backend(self) -> VaultBackend:
        self._create_key(self.rotation_key)
        table = self.table()
        name, _ = table.pop("name"), table.pop("type")
        return VaultBackend(name, VaultSettings.model_validate(table))

    async def seed(self, key_type: str) -> None:
        self._create_key(key_type)  # Transit dates versions itself: created now

    def outage(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.plug.unplugged()

    async def check_rotations(self, svc: Any, report: RotationReport) -> None:
        versions = self.bao.request("GET", f"transit/keys/{self.key}")["data"]["keys"]
        assert sorted(versions, key=int) == ["1", "2", "3"]


@pytest.fixture
async def subject(bao: BaoServer, tmp_path: Path) -> AsyncIterator[VaultSubject]:
    async with Plug(bao.address) as plug:
        yield VaultSubject(bao, plug, tmp_path)


class TestVaultContract(ServiceContract, FaultContract):
    subject_class = VaultSubject
