"""`keys prune` on Vault Transit (a real OpenBao): versions that left the JWKS are disabled by
raising the key's min_decryption_version (reversible), with or without --destroy."""

from __future__ import annotations

from typing import Any

from keysvc.testing.backend_contract import prune_later
from tests.vault.bao import BaoServer
from tests.vault.conftest import unique


def transit_key(bao: BaoServer, name: str) -> dict[str, Any]:
    return bao.request("GET", f"transit/keys/{name}")["data"]


async def rotated_key(bao: BaoServer, versions: int) -> str:
    name = unique("prune")
    bao.create_key(name, "ecdsa-p256")
    for _ in range(versions - 1):
        bao.request("POST", f"transit/keys/{name}/rotate")
    return name


async def test_prune_raises_min_decryption_version_past_every_retired_version(
    bao: BaoServer, make_backend: Any
) -> None:
    name = await rotated_key(bao, 4)
    backend = await make_backend(name)
    report, newest = await prune_later(backend)
    assert not report.failed and newest.version_id == "4"
    assert [(s.version, s.action) for s in report.done] == [
        ("1", "disable"), ("2", "disable"), ("3", "disable")]
    data = transit_key(bao, name)
    assert data["min_decryption_version"] == 4 and data["min_available_version"] == 0
    assert [v.version_id for v in await backend.list_versions()] == ["4"]
    # Disabled, not destroyed: lowering min_decryption_version brings the versions back.
    bao.request("POST", f"transit/keys/{name}/config",
                {"min_decryption_version": 1, "min_encryption_version": 0})
    assert sorted(transit_key(bao, name)["keys"]) == ["1", "2", "3", "4"]


async def test_prune_destroy_still_only_disables(bao: BaoServer, make_backend: Any) -> None:
    """Transit trims only ranges of versions, at once and for good, so the backend declares no
    DestroysVersions: `keys prune --destroy` disables there too (trim by hand if you must)."""
    name = await rotated_key(bao, 3)
    backend = await make_backend(name)
    report, _ = await prune_later(backend, destroy_now=True)
    assert [(s.version, s.action) for s in report.done] == [("1", "disable"), ("2", "disable")]
    data = transit_key(bao, name)
    assert data["min_decryption_version"] == 3 and data["min_available_version"] == 0
