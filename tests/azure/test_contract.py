"""The Azure Key Vault backend under the contract, built from config as the service builds it
(azure-identity's ClientSecretCredential against the fake tenant, the aio Key Vault clients):
backend-level checks, and the service's: tokens verify against the served JWKS, two rotations,
vault faults give 503 + Retry-After while the JWKS stays, and the service recovers by itself."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keysvc.backends.azure_kv import AzureKeyVaultBackend, AzureKeyVaultSettings
from keysvc.secrets import write_private_file
from tests.azure.conftest import CLIENT_ID, KEY, TENANT
from tests.contract.service import (
    FaultCase,
    FaultContract,
    KeyCase,
    ServiceContract,
    ServiceSubject,
)
from tests.fakes.azure_kv import FakeKeyVault, Fault
from tests.service import RunningService
from tests.verification import RotationReport

SECRET = "Zq8~contract-test-client-secret"
HOUR_AGO = int(time.time()) - 3600
FAULTS = {
    "500": Fault("status", status=500),
    "503": Fault("status", status=503, retry_after=4),
    "429": Fault("status", status=429, retry_after=3),
    "slow": Fault("slow", delay=3),
}


class AzureSubject(ServiceSubject):
    backend_class = AzureKeyVaultBackend
    name = "azure"
    key_cases = [
        KeyCase("RSA-HSM", "RS256"),
        KeyCase("RSA", "PS256", algorithm="PS256"),
        KeyCase("EC-HSM:P-256", "ES256"),
        KeyCase("EC:P-384", "ES384"),
    ]
    rotation_key = "EC-HSM:P-256"
    faults = [  # the details show the 503 came from the backend's own bounds (1 s timeout)
        FaultCase("outage", ("cannot reach Azure Key Vault",)),
        FaultCase("500", ("HTTP 500 InternalServerError",)),
        FaultCase("503", ("HTTP 503 ServiceUnavailable",), retry_after="4"),
        FaultCase("429", ("throttling",), retry_after="3"),
        FaultCase("slow", ("did not answer within 1s",)),
    ]
    secrets = (SECRET,)

    def __init__(self, vault: FakeKeyVault, ca_file: Path, secret_path: Path) -> None:
        self.vault = vault
        self.ca_file = ca_file
        self.secret_path = secret_path
        vault.add_client(CLIENT_ID, secret=SECRET)

    def table(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": "azure_kv",
            "endpoint": self.vault.url,
            "key": KEY,
            "tenant_id": TENANT,
            "client_id": CLIENT_ID,
            "client_secret_file": str(self.secret_path),
            "authority_host": self.vault.url,
            "ca_file": str(self.ca_file),
            "timeout": "1s",
            "retry_budget": "500ms",
        }

    def make_backend(self) -> AzureKeyVaultBackend:
        if not self.vault.versions(KEY):
            self._create(self.rotation_key)
        table = self.table()
        del table["name"], table["type"]
        return AzureKeyVaultBackend(self.name, AzureKeyVaultSettings.model_validate(table))

    def _create(self, key_type: str) -> str:
        kty, _, crv = key_type.partition(":")
        return self.vault.create_key(KEY, kty, crv=crv or "P-256", created=HOUR_AGO)

    async def seed(self, key_type: str) -> None:
        self._create(key_type)

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        await self.vault.down()
        try:
            yield
        finally:
            await self.vault.up()

    async def inject(self, fault: str) -> None:
        if fault == "outage":
            await self.vault.down()
        else:
            self.vault.inject(FAULTS[fault])

    async def heal(self, fault: str) -> None:
        if fault == "outage":
            await self.vault.up()
        else:
            self.vault.inject(None)

    async def check_tokens(self, svc: RunningService, issued: dict[str, Any]) -> None:
        # The published key is the vault version's public key.
        (version,) = self.vault.versions(KEY)
        (jwk,) = (await svc.jwks())["keys"]
        public = version.private_key.public_key()
        assert jwt.PyJWK(jwk).key.public_numbers() == public.public_numbers()
        assert self.vault.calls["sign"] == 2  # the token and the /v1/sign answer
        assert self.vault.tokens_issued == 1  # one Entra ID token, reused

    async def check_rotations(self, svc: RunningService, report: RotationReport) -> None:
        versions = self.vault.versions(KEY)
        assert self.vault.calls["rotate"] == 2 and len(versions) == 3
        assert all(isinstance(v.private_key, ec.EllipticCurvePrivateKey) for v in versions)


@pytest.fixture
def subject(vault: FakeKeyVault, azure_ca_file: Path, tmp_path: Path) -> AzureSubject:
    secret_path = tmp_path / "azure-client-secret"
    write_private_file(secret_path, SECRET.encode())
    return AzureSubject(vault, azure_ca_file, secret_path)


class TestAzureContract(ServiceContract, FaultContract):
    subject_class = AzureSubject
