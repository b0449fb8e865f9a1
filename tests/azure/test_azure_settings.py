"""`[[backends]]` tables of type azure_kv: found through the entry point, and bad values refused
with the offending key named."""

from __future__ import annotations

from typing import Any

import pytest

from keysvc.backends import load_backend_class
from keysvc.backends.azure_kv import AzureKeyVaultBackend, AzureKeyVaultSettings
from keysvc.config import parse_config
from keysvc.service import build_backends
from keysvc.errors import ConfigError

VAULT = "https://keysvc-prod.vault.azure.net"


def config(**backend: Any) -> dict[str, Any]:
    table = {"name": "azure", "type": "azure_kv", "vault_url": VAULT, "key": "signing", **backend}
    return {"issuer": "https://keys.example.com", "backends": [table]}


def test_the_entry_point_names_this_backend() -> None:
    assert load_backend_class("azure_kv") is AzureKeyVaultBackend
    parsed = parse_config(config(client_id="abc", timeout="3s", throttle_budget="1500ms"))
    settings = build_backends(parsed)[0].settings
    assert isinstance(settings, AzureKeyVaultSettings)
    assert settings.timeout.total_seconds() == 3 and settings.retry_budget.total_seconds() == 1.5
    assert AzureKeyVaultBackend.signature_encoding == "raw"


@pytest.mark.parametrize(
    ("backend", "error"),
    [
        (
            {"vault_url": "http://keysvc.vault.azure.net"},
            "backends[0]: vault_url: must be the vault's https URL",
        ),
        (
            {"vault_url": VAULT + "/keys/signing"},
            "backends[0]: vault_url: must be the vault's URL only",
        ),
        ({"key": VAULT + "/keys/signing"}, "backends[0]: key: must be the key's name"),
        ({"key": "under_score"}, "backends[0]: key: an Azure key name is 1-127 letters"),
        (
            {
                "client_secret_file": "/s",
                "client_certificate_path": "/c",
                "tenant_id": "t",
                "client_id": "c",
            },
            "not both",
        ),
        ({"client_secret_file": "/s"}, "needs tenant_id and client_id"),
        ({"timeout": "fast"}, "backends[0]: timeout: invalid duration"),
        ({"vault": VAULT}, "backends[0]: vault: is not a setting keysvc knows"),
    ],
)
def test_bad_settings_are_refused_by_name(backend: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_backends(parse_config(config(**backend)))
    assert error in str(info.value)


def test_constructing_does_no_io() -> None:
    settings = AzureKeyVaultSettings(
        vault_url=VAULT, key="signing", client_secret_file="/nope", tenant_id="t", client_id="c"
    )
    AzureKeyVaultBackend("azure", settings)  # the secret file is read by open(), not here
