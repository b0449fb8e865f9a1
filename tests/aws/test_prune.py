"""`keys prune` on AWS KMS (aiobotocore against moto_server): keys that left the JWKS get
ScheduleKeyDeletion with KMS's longest waiting period (PendingDeletion: not listed, cannot sign,
`cancel-key-deletion` restores them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any



from keysvc.testing.backend_contract import prune_later
from tests.aws.conftest import create_key


async def test_prune_schedules_deletion_of_keys_past_their_published_until(
    kms: Any, make_backend: Any
) -> None:
    tag = {"keysvc": "prune-test"}
    keys = [create_key(kms, tags=tag) for _ in range(3)]
    backend = await make_backend(tag="keysvc=prune-test")
    report, newest = await prune_later(backend)
    assert not report.failed
    assert [s.action for s in report.done] == ["schedule_destruction"] * 2
    retired = {s.version for s in report.done}
    assert newest.version_id not in retired and len(retired) == 2
    for meta in keys:
        described = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
        if meta["Arn"] in retired:
            assert described["KeyState"] == "PendingDeletion"
            window = described["DeletionDate"] - datetime.now(UTC)
            assert abs(window - timedelta(days=30)) < timedelta(minutes=5)
        else:
            assert described["KeyState"] == "Enabled"
    # Restorable, as promised: cancel-key-deletion brings one back (disabled).
    restored = next(iter(retired)).rsplit("/", 1)[-1]  # moto 5 cancels by key id only
    kms.cancel_key_deletion(KeyId=restored)
    assert kms.describe_key(KeyId=restored)["KeyMetadata"]["KeyState"] == "Disabled"


async def test_the_key_an_alias_names_is_never_scheduled_for_deletion(
    kms: Any, make_backend: Any
) -> None:
    """A rotated alias chain: the old keys are retired, the alias's key is kept (the chain is
    walked through keys pending deletion, so the next listing still finds the alias's key)."""
    create_key(kms, alias="alias/prune-chain")
    backend = await make_backend(key_ids=["alias/prune-chain"])
    await backend.create_version()  # moves the alias, tags the new key with the old one
    await backend.create_version()
    report, newest = await prune_later(backend)
    assert not report.failed and len(report.done) == 2
    alias_key = kms.describe_key(KeyId="alias/prune-chain")["KeyMetadata"]
    assert alias_key["Arn"] == newest.version_id and alias_key["KeyState"] == "Enabled"
    assert [v.version_id for v in await backend.list_versions()] == [newest.version_id]
