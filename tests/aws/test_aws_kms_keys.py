"""AwsKmsBackend against moto: which KMS keys form the ring, and what each version carries."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from keysvc import jose
from keysvc.backends import load_backend_class
from keysvc.backends.aws_kms import AwsKmsBackend
from keysvc.errors import ConfigError

from .conftest import create_key

A = jose.Algorithm


def public_key_of(kms: Any, key_id: str) -> Any:
    der = kms.get_public_key(KeyId=key_id)["PublicKey"]
    return serialization.load_der_public_key(der)


def same_public_key(a: Any, b: Any) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return a.public_bytes(der, spki) == b.public_bytes(der, spki)


def test_registered_under_entry_point() -> None:
    assert load_backend_class("aws_kms") is AwsKmsBackend
    assert AwsKmsBackend.signature_encoding == "der"


async def test_key_ids_by_id_arn_and_alias(kms: Any, make_backend: Any) -> None:
    by_id = create_key(kms, "ECC_NIST_P256")
    by_arn = create_key(kms, "RSA_2048")
    by_alias = create_key(kms, "ECC_NIST_P384", alias="alias/keysvc-signer")
    create_key(kms, "ECC_NIST_P256")  # not configured: not listed
    backend = await make_backend(
        key_ids=[by_id["KeyId"], by_arn["Arn"], "alias/keysvc-signer"]
    )
    versions = {v.version_id: v for v in await backend.list_versions()}
    assert set(versions) == {by_id["Arn"], by_arn["Arn"], by_alias["Arn"]}
    for meta in (by_id, by_arn, by_alias):
        version = versions[meta["Arn"]]
        assert version.created_at == meta["CreationDate"]
        assert version.created_at.tzinfo is not None
        assert same_public_key(version.public_key, public_key_of(kms, meta["Arn"]))
    assert versions[by_id["Arn"]].algorithms == {A.ES256}
    assert versions[by_arn["Arn"]].algorithms == {A.RS256, A.PS256}
    assert versions[by_alias["Arn"]].algorithms == {A.ES384}


async def test_the_same_key_twice_is_one_version(kms: Any, make_backend: Any) -> None:
    meta = create_key(kms, alias="alias/both")
    backend = await make_backend(key_ids=[meta["KeyId"], "alias/both"])
    assert [v.version_id for v in await backend.list_versions()] == [meta["Arn"]]


async def test_tag_discovery(kms: Any, make_backend: Any) -> None:
    ring = [
        create_key(kms, "ECC_NIST_P256", tags={"keysvc": "prod"}),
        create_key(kms, "RSA_3072", tags={"keysvc": "prod", "team": "x"}),
    ]
    create_key(kms, "ECC_NIST_P256", tags={"keysvc": "staging"})
    create_key(kms, "ECC_NIST_P256")
    # An encryption key sharing the tag is not a signing candidate: skipped, not an error.
    create_key(kms, "SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", tags={"keysvc": "prod"})
    for tag in ({"key": "keysvc", "value": "prod"}, "keysvc=prod"):
        backend = await make_backend(tag=tag)
        assert {v.version_id for v in await backend.list_versions()} == {m["Arn"] for m in ring}


async def test_key_ids_and_tag_together_are_a_union(kms: Any, make_backend: Any) -> None:
    fixed = create_key(kms)
    tagged = create_key(kms, tags={"ring": "a"})
    backend = await make_backend(key_ids=[fixed["Arn"]], tag="ring=a")
    assert {v.version_id for v in await backend.list_versions()} == {fixed["Arn"], tagged["Arn"]}


async def test_disabled_and_pending_deletion_keys_are_not_published(
    kms: Any, make_backend: Any
) -> None:
    keys = [create_key(kms, tags={"k": "v"}) for _ in range(3)]
    kms.disable_key(KeyId=keys[1]["KeyId"])
    kms.schedule_key_deletion(KeyId=keys[2]["KeyId"], PendingWindowInDays=7)
    for settings in ({"tag": "k=v"}, {"key_ids": [k["Arn"] for k in keys]}):
        backend = await make_backend(**settings)
        assert [v.version_id for v in await backend.list_versions()] == [keys[0]["Arn"]]
    kms.enable_key(KeyId=keys[1]["KeyId"])
    assert {v.version_id for v in await backend.list_versions()} == {
        keys[0]["Arn"], keys[1]["Arn"]
    }


@pytest.mark.parametrize(
    ("usage", "spec", "fragment"),
    [
        ("SIGN_VERIFY", "ECC_SECG_P256K1", "KeySpec ECC_SECG_P256K1"),
        ("SIGN_VERIFY", "ECC_NIST_P521", "KeySpec ECC_NIST_P521"),
        ("ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT", "KeyUsage ENCRYPT_DECRYPT"),
    ],
)
async def test_unsupported_keys_are_refused_clearly(
    kms: Any, make_backend: Any, usage: str, spec: str, fragment: str
) -> None:
    meta = create_key(kms, spec, usage=usage)
    backend = await make_backend(key_ids=[meta["KeyId"]])
    with pytest.raises(ConfigError) as caught:
        await backend.list_versions()
    assert fragment in str(caught.value)
    assert meta["Arn"] in str(caught.value)


async def test_public_key_fetched_once_per_key(kms: Any, make_backend: Any, faults: Any) -> None:
    keys = [create_key(kms, tags={"k": "v"}) for _ in range(2)]
    backend = await make_backend(tag="k=v")
    faults.clear()
    for _ in range(3):
        assert len(await backend.list_versions()) == 2
    assert faults.count("GetPublicKey") == 2
    assert faults.count("DescribeKey") == 3 * len(keys)  # key state is read on every refresh
