"""`keys prune` on Cloud KMS (the real google-cloud-kms client against the fake): versions that
left the JWKS get DestroyCryptoKeyVersion, as Cloud KMS schedules it (DESTROY_SCHEDULED, key
material kept for the key's destroy_scheduled_duration, restorable until then)."""

from __future__ import annotations

from keysvc.testing.backend_contract import prune_later
from tests.fakes.gcp_kms import FakeCloudKms, State
from tests.gcp.conftest import KEY, BackendFactory


async def test_prune_schedules_the_destruction_of_versions_past_their_published_until(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256", versions=3)
    backend = await open_backend()
    dry, _ = await prune_later(backend, dry_run=True)
    assert [s.action for s in dry.done] == ["schedule_destruction"] * 2
    assert [v.state for v in kms.keys[KEY].versions] == [State.ENABLED] * 3  # a dry run

    report, newest = await prune_later(backend)
    assert not report.failed and [s.version for s in report.done] == [f"{KEY}/cryptoKeyVersions/{n}"
                                                                     for n in (1, 2)]
    first, second, third = kms.keys[KEY].versions
    assert (first.state, second.state, third.state) == (
        State.DESTROY_SCHEDULED, State.DESTROY_SCHEDULED, State.ENABLED)
    assert newest.version_id == third.name
    assert kms.calls["DestroyCryptoKeyVersion"] == 2 and kms.calls["UpdateCryptoKeyVersion"] == 0
    again, _ = await prune_later(backend)
    assert not again.done and not again.failed  # nothing left to prune


async def test_a_missing_destroy_permission_is_a_failure_naming_it_and_changes_nothing(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256", versions=2)
    kms.deny("cloudkms.cryptoKeyVersions.destroy")
    backend = await open_backend()
    report, _ = await prune_later(backend)
    (failed,) = report.failed
    assert "cloudkms.cryptoKeyVersions.destroy" in failed.error
    # Still ENABLED and listed: the next prune, once the permission is granted, retires it.
    assert [v.state for v in kms.keys[KEY].versions] == [State.ENABLED] * 2
    kms.heal()
    retried, _ = await prune_later(backend)
    assert [s.version for s in retried.done] == [f"{KEY}/cryptoKeyVersions/1"]
