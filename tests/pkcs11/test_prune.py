"""`keys prune` on a PKCS#11 token (SoftHSM2): key pairs that left the JWKS are relabelled
`<label>.revoked` (kept on the token, reversible); with --destroy their objects are destroyed."""

from __future__ import annotations

from keysvc.testing.backend_contract import prune_later
from tests.pkcs11.conftest import BackendFactory, SoftHsmToken


async def test_prune_relabels_then_destroy_removes_the_objects(
    softhsm: SoftHsmToken, make_backend: BackendFactory
) -> None:
    backend = make_backend()
    await backend.open()
    created = [await backend.create_version() for _ in range(3)]
    first, second, third = (v.version_id for v in created)
    report, newest = await prune_later(backend)
    assert not report.failed and newest.version_id == third
    assert [(s.version, s.action) for s in report.done] == [(first, "disable"), (second, "disable")]
    assert softhsm.inspect(first) == [] and len(softhsm.inspect(first + ".revoked")) == 2
    assert len(softhsm.inspect(third)) == 2  # private and public key objects

    fourth = (await backend.create_version()).version_id
    destroyed, _ = await prune_later(backend, destroy_now=True)
    assert [(s.version, s.action) for s in destroyed.done] == [(third, "destroy")]
    assert softhsm.inspect(third) == [] and softhsm.inspect(third + ".revoked") == []
    assert [v.version_id for v in await backend.list_versions()] == [fourth]
