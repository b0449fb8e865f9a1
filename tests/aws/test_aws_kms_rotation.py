"""Rotation (a new KMS key) and revocation (DisableKey), seen through KMS's own API."""

from __future__ import annotations

from typing import Any

import pytest

from keysvc.backends import BackendError, OperationNotSupported
from keysvc.backends.aws_kms import PREVIOUS_KEY_TAG

from .conftest import REGION, create_key


def tags_of(kms: Any, key_id: str) -> dict[str, str]:
    return {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key_id)["Tags"]}


def alias_target(kms: Any, alias: str) -> str:
    return kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]


def key_count(kms: Any) -> int:
    return len(kms.list_keys()["Keys"])


async def test_rotation_with_tag_discovery(kms: Any, make_backend: Any) -> None:
    old = create_key(kms, "ECC_NIST_P256", tags={"keysvc": "prod"})
    newest = create_key(kms, "ECC_NIST_P384", tags={"keysvc": "prod"})
    backend = await make_backend(tag="keysvc=prod")
    version = await backend.create_version()
    meta = kms.describe_key(KeyId=version.version_id)["KeyMetadata"]
    assert meta["KeySpec"] == "ECC_NIST_P384"  # the newest key's spec
    assert meta["KeyUsage"] == "SIGN_VERIFY"
    assert meta["KeyState"] == "Enabled"
    assert tags_of(kms, version.version_id)["keysvc"] == "prod"
    assert version.created_at == meta["CreationDate"]
    listed = {v.version_id for v in await backend.list_versions()}
    assert listed == {old["Arn"], newest["Arn"], version.version_id}


async def test_rotation_moves_the_alias_and_keeps_old_keys_published(
    kms: Any, make_backend: Any
) -> None:
    first = create_key(kms, "RSA_2048", alias="alias/signer")
    backend = await make_backend(key_ids=["alias/signer"])
    second = await backend.create_version()
    assert alias_target(kms, "alias/signer") == second.version_id
    assert tags_of(kms, second.version_id)[PREVIOUS_KEY_TAG] == first["Arn"]
    assert kms.describe_key(KeyId=second.version_id)["KeyMetadata"]["KeySpec"] == "RSA_2048"
    third = await backend.create_version()
    assert alias_target(kms, "alias/signer") == third.version_id
    expected = {first["Arn"], second.version_id, third.version_id}
    assert {v.version_id for v in await backend.list_versions()} == expected
    # Another replica (a fresh process) derives the same ring from KMS alone.
    replica = await make_backend(key_ids=["alias/signer"])
    assert {v.version_id for v in await replica.list_versions()} == expected
    # Revoking the middle key hides it, while the chain still reaches the oldest one.
    await backend.disable_version(second)
    assert kms.describe_key(KeyId=second.version_id)["KeyMetadata"]["KeyState"] == "Disabled"
    assert {v.version_id for v in await replica.list_versions()} == {
        first["Arn"], third.version_id
    }


async def test_alias_given_as_arn(kms: Any, make_backend: Any) -> None:
    first = create_key(kms, "ECC_NIST_P256", alias="alias/by-arn")
    alias_arn = f"arn:aws:kms:{REGION}:123456789012:alias/by-arn"
    backend = await make_backend(key_ids=[alias_arn])
    second = await backend.create_version()
    assert alias_target(kms, "alias/by-arn") == second.version_id
    listed = {v.version_id for v in await backend.list_versions()}
    assert listed == {first["Arn"], second.version_id}


async def test_alias_history_ends_at_a_deleted_key(kms: Any, make_backend: Any) -> None:
    gone = f"arn:aws:kms:{REGION}:123456789012:key/00000000-0000-0000-0000-000000000000"
    current = create_key(kms, alias="alias/orphan", tags={PREVIOUS_KEY_TAG: gone})
    backend = await make_backend(key_ids=["alias/orphan"])
    assert [v.version_id for v in await backend.list_versions()] == [current["Arn"]]


async def test_key_spec_setting_and_empty_ring_default(kms: Any, make_backend: Any) -> None:
    create_key(kms, "ECC_NIST_P256", tags={"r": "1"})
    backend = await make_backend(tag="r=1", key_spec="RSA_3072")
    version = await backend.create_version()
    assert kms.describe_key(KeyId=version.version_id)["KeyMetadata"]["KeySpec"] == "RSA_3072"
    empty = await make_backend(tag="r=empty")
    first = await empty.create_version()
    assert kms.describe_key(KeyId=first.version_id)["KeyMetadata"]["KeySpec"] == "RSA_2048"
    assert [v.version_id for v in await empty.list_versions()] == [first.version_id]


async def test_rotation_refused_when_the_new_key_could_not_be_found_again(
    kms: Any, make_backend: Any
) -> None:
    fixed = create_key(kms)
    create_key(kms, alias="alias/one")
    create_key(kms, alias="alias/two")
    before = key_count(kms)
    backend = await make_backend(key_ids=[fixed["Arn"]])
    with pytest.raises(OperationNotSupported, match="fixed key ids and no tag"):
        await backend.create_version()
    backend = await make_backend(key_ids=["alias/one", "alias/two"])
    with pytest.raises(OperationNotSupported, match="2 aliases"):
        await backend.create_version()
    assert key_count(kms) == before  # nothing half-done


async def test_failed_alias_update_disables_the_new_key(
    kms: Any, make_backend: Any, faults: Any
) -> None:
    first = create_key(kms, alias="alias/stuck")
    backend = await make_backend(key_ids=["alias/stuck"])
    faults.inject("UpdateAlias", code="AccessDeniedException", message="not allowed")
    with pytest.raises(BackendError, match="could not move alias/stuck") as caught:
        await backend.create_version()
    orphans = [k["KeyArn"] for k in kms.list_keys()["Keys"] if k["KeyArn"] != first["Arn"]]
    assert len(orphans) == 1 and orphans[0] in str(caught.value)
    assert kms.describe_key(KeyId=orphans[0])["KeyMetadata"]["KeyState"] == "Disabled"
    assert alias_target(kms, "alias/stuck") == first["Arn"]
    assert [v.version_id for v in await backend.list_versions()] == [first["Arn"]]
