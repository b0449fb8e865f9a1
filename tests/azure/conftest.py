"""Fixtures for the Azure Key Vault backend: a trusted test CA, the HTTPS fake vault, and
backends wired to it through the real azure-keyvault-keys clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from keysvc.backends.azure_kv import AzureKeyVaultBackend, AzureKeyVaultSettings
from tests.azure.credentials import StaticTokenCredential
from tests.fakes.azure_kv import OPERATIONS, FakeKeyVault, write_ca

KEY = "keysvc-signing"
TENANT = "0f3c5b1e-6a7d-4c2b-9e8f-1a2b3c4d5e6f"
CLIENT_ID = "9a8b7c6d-1234-4f00-8abc-0123456789ab"

BackendFactory = Callable[..., AzureKeyVaultBackend]


@pytest.fixture(scope="session")
def azure_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def azure_ca_file(azure_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ca(azure_ca, tmp_path_factory.mktemp("azure-ca") / "ca.pem")


@pytest.fixture
async def vault(azure_ca: trustme.CA) -> AsyncIterator[FakeKeyVault]:
    """A fake vault answering two versions per page, so every listing pages."""
    fake = FakeKeyVault(azure_ca, tenant_id=TENANT, page_size=2)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def settings_for(vault: FakeKeyVault, ca_file: Path, **overrides: Any) -> AzureKeyVaultSettings:
    values: dict[str, Any] = {"vault_url": vault.url, "key": KEY, "ca_cert": ca_file}
    return AzureKeyVaultSettings.model_validate({**values, **overrides})


@pytest.fixture
async def make_backend(vault: FakeKeyVault, azure_ca_file: Path) -> AsyncIterator[BackendFactory]:
    """make_backend(operations=..., credential=..., **settings): an opened backend whose
    credential holds a token the vault accepts for `operations` (closed after the test)."""
    made: list[AzureKeyVaultBackend] = []

    def make(
        operations: frozenset[str] = OPERATIONS, credential: Any = None, **overrides: Any
    ) -> AzureKeyVaultBackend:
        if (
            credential is None
            and not overrides.get("client_secret_file")
            and not overrides.get("client_certificate_path")
            and not overrides.pop("default_credential", False)
        ):
            credential = StaticTokenCredential(vault.issue_token(operations))
        backend = AzureKeyVaultBackend(
            "azure", settings_for(vault, azure_ca_file, **overrides), credential=credential
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()
