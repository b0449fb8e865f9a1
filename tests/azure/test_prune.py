"""`keys prune` on Azure Key Vault (the real azure-keyvault-keys client against the HTTPS
fake): versions that left the JWKS are disabled. Key Vault cannot delete one version of a key
(deleting deletes every version), so that is all prune does there."""

from __future__ import annotations

import time

from keysvc.backends.base import DestroysVersions
from keysvc.backends.azure_kv import AzureKeyVaultBackend
from keysvc.testing.backend_contract import prune_later
from tests.azure.conftest import KEY, BackendFactory
from tests.fakes.azure_kv import FakeKeyVault


async def test_prune_disables_versions_past_their_published_until(
    vault: FakeKeyVault, make_backend: BackendFactory
) -> None:
    now = int(time.time())
    for age in (3000, 2000, 1000):
        vault.create_key(KEY, "EC-HSM", created=now - age)
    backend = make_backend()
    await backend.open()
    report, newest = await prune_later(backend)
    assert not report.failed and [s.action for s in report.done] == ["disable", "disable"]
    first, second, third = vault.versions(KEY)
    assert (first.enabled, second.enabled, third.enabled) == (False, False, True)
    assert newest.version_id == third.version
    assert [v.version_id for v in await backend.list_versions()] == [third.version]
    assert not issubclass(AzureKeyVaultBackend, DestroysVersions)
