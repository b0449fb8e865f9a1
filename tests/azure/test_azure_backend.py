"""The Azure Key Vault backend, through the real azure-keyvault-keys aio clients, against the
HTTPS fake vault: listing, signing (verified with cryptography alone), rotation, revocation."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from keysvc.backends.base import (
    BackendError,
    BackendUnavailable,
    NotFound,
    PermissionDenied,
)
from keysvc.errors import ConfigError
from keysvc.jose import Algorithm
from tests.azure.conftest import KEY, BackendFactory
from tests.fakes.azure_kv import FakeKeyVault

MESSAGE = b"eyJhbGciOiJSUzI1NiIsImtpZCI6IngiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ0ZXN0In0"


def verify(public_key: object, alg: Algorithm, message: bytes, signature: bytes) -> None:
    """JWS signature check with cryptography only (independent of keysvc.jose)."""
    if alg is Algorithm.RS256:
        assert isinstance(public_key, rsa.RSAPublicKey)
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    elif alg is Algorithm.PS256:
        assert isinstance(public_key, rsa.RSAPublicKey)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        public_key.verify(signature, message, pss, hashes.SHA256())
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        size = 32 if alg is Algorithm.ES256 else 48
        assert len(signature) == 2 * size, "JWS ECDSA signatures are raw r||s"
        der = utils.encode_dss_signature(
            int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        )
        digest = hashes.SHA256() if alg is Algorithm.ES256 else hashes.SHA384()
        public_key.verify(der, message, ec.ECDSA(digest))


async def test_lists_enabled_versions_across_pages(
    vault: FakeKeyVault, make_backend: BackendFactory
) -> None:
    base = int(time.time()) - 5000
    ids = [vault.create_key(KEY, "RSA-HSM", created=base + i * 100) for i in range(5)]
    vault.version(KEY, ids[1]).enabled = False
    backend = make_backend()
    versions = await backend.list_versions()
    assert [v.version_id for v in versions] == [ids[0], ids[2], ids[3], ids[4]]
    assert vault.calls["list"] == 3  # five versions, two per page: the nextLinks were followed
    for version in versions:
        fake = vault.version(KEY, version.version_id)
        assert version.created_at == datetime.fromtimestamp(fake.created, UTC)
        assert version.created_at.tzinfo is not None
        expected = fake.private_key.public_key().public_numbers()
        assert version.public_key.public_numbers() == expected  # type: ignore[union-attr]
    gets = vault.calls["get"]
    assert gets == 4
    again = await backend.list_versions()
    assert [v.version_id for v in again] == [v.version_id for v in versions]
    assert vault.calls["get"] == gets, "public keys of known versions are not fetched again"
    vault.version(KEY, ids[0]).exp = int(time.time()) - 1  # expired: Key Vault will not sign
    vault.version(KEY, ids[2]).nbf = int(time.time()) + 3600  # not valid yet
    assert [v.version_id for v in await backend.list_versions()] == [ids[3], ids[4]]
    for fake in vault.versions(KEY):
        fake.enabled = False
    assert await backend.list_versions() == [], "every version revoked: nothing to publish"


@pytest.mark.parametrize(
    ("kty", "size", "crv", "alg"),
    [
        ("RSA-HSM", 2048, "", Algorithm.RS256),
        ("RSA", 3072, "", Algorithm.PS256),
        ("EC", 0, "P-256", Algorithm.ES256),
        ("EC-HSM", 0, "P-384", Algorithm.ES384),
    ],
)
async def test_signs_each_algorithm(
    vault: FakeKeyVault, make_backend: BackendFactory, kty: str, size: int, crv: str, alg: Algorithm
) -> None:
    vault.create_key(KEY, kty, size=size or 2048, crv=crv or "P-256", created=1_700_000_000)
    backend = make_backend()
    (version,) = await backend.list_versions()
    signature = await backend.sign(version, alg, MESSAGE)
    verify(version.public_key, alg, MESSAGE, signature)
    with pytest.raises(Exception):  # noqa: B017 - the signature must not verify another message
        verify(version.public_key, alg, MESSAGE + b"x", signature)
    gets = vault.calls["get"]
    await backend.sign(version, alg, MESSAGE + b"2")
    assert vault.calls["sign"] == 2
    assert vault.calls["get"] == gets, "the version's CryptographyClient is cached and needs no GET"


async def test_refuses_an_algorithm_the_key_cannot_sign(
    vault: FakeKeyVault, make_backend: BackendFactory
) -> None:
    vault.create_key(KEY, "EC", crv="P-256")
    backend = make_backend()
    (version,) = await backend.list_versions()
    with pytest.raises(BackendError, match="cannot sign ES384"):
        await backend.sign(version, Algorithm.ES384, MESSAGE)
    assert vault.calls["sign"] == 0


@pytest.mark.parametrize(
    ("kty", "crv", "expected"),
    [("EC", "P-521", "EC P-521"), ("EC-HSM", "P-256K", "EC-HSM P-256K")],
)
async def test_unsupported_key_types_are_refused_by_name(
    vault: FakeKeyVault, make_backend: BackendFactory, kty: str, crv: str, expected: str
) -> None:
    version_id = vault.create_key(KEY, kty, crv=crv)
    with pytest.raises(ConfigError) as info:
        await make_backend().list_versions()
    message = str(info.value)
    assert expected in message and version_id in message and "RSA 2048-4096" in message


async def test_small_rsa_keys_and_verify_only_keys_are_refused(
    vault: FakeKeyVault, make_backend: BackendFactory
) -> None:
    vault.create_key(KEY, "RSA", size=1024)
    with pytest.raises(ConfigError, match="RSA keys must be 2048-4096 bits, got 1024"):
        await make_backend().list_versions()
    vault.create_key("verify-only", "RSA", key_ops=["verify"])
    with pytest.raises(ConfigError, match="does not allow the sign operation"):
        await make_backend(key="verify-only").list_versions()


async def test_rotate_adds_a_version_of_the_same_type(
    vault: FakeKeyVault, make_backend: BackendFactory
) -> None:
    first = vault.create_key(KEY, "EC-HSM", crv="P-384", created=1_700_000_000)
    backend = make_backend()
    created = await backend.create_version()
    assert vault.calls["rotate"] == 1
    assert created.version_id != first
    assert isinstance(created.public_key, ec.EllipticCurvePublicKey)
    assert created.public_key.curve.name == "secp384r1"
    assert abs(created.created_at.timestamp() - time.time()) < 5
    listed = await backend.list_versions()
    assert [v.version_id for v in listed] == [first, created.version_id]
    verify(
        created.public_key,
        Algorithm.ES384,
        MESSAGE,
        await backend.sign(created, Algorithm.ES384, MESSAGE),
    )


async def test_disable_version_stops_listing_and_signing(
    vault: FakeKeyVault, make_backend: BackendFactory
) -> None:
    old = vault.create_key(KEY, "RSA-HSM", created=1_700_000_000)
    new = vault.create_key(KEY, "RSA-HSM", created=1_700_000_100)
    backend = make_backend()
    versions = await backend.list_versions()
    await backend.disable_version(versions[0])
    assert vault.calls["update"] == 1
    assert vault.version(KEY, old).enabled is False and vault.version(KEY, new).enabled is True
    assert [v.version_id for v in await backend.list_versions()] == [new]
    with pytest.raises(BackendError, match="must be enabled") as info:
        await backend.sign(versions[0], Algorithm.RS256, MESSAGE)
    assert not isinstance(info.value, BackendUnavailable)


async def test_missing_key_is_a_clear_error(make_backend: BackendFactory) -> None:
    with pytest.raises(NotFound, match="'keysvc-signing' does not exist in https"):
        await make_backend().list_versions()


async def test_missing_permission_is_a_clear_error_without_the_token(
    vault: FakeKeyVault, make_backend: BackendFactory
) -> None:
    vault.create_key(KEY, "RSA-HSM")
    backend = make_backend(operations=frozenset({"get", "list"}))
    (version,) = await backend.list_versions()
    with pytest.raises(BackendError) as info:
        await backend.sign(version, Algorithm.RS256, MESSAGE)
    message = str(info.value)
    assert "HTTP 403 Forbidden" in message and "Key Vault Crypto User" in message
    assert isinstance(info.value, PermissionDenied)
    with pytest.raises(BackendError, match="HTTP 403"):
        await backend.create_version()
    assert vault.calls["rotate"] == 1 and len(vault.versions(KEY)) == 1


async def test_a_token_the_vault_rejects_is_a_clear_error(
    vault: FakeKeyVault, make_backend: BackendFactory
) -> None:
    from tests.azure.credentials import StaticTokenCredential

    vault.create_key(KEY, "RSA-HSM")
    credential = StaticTokenCredential("not-a-token-the-vault-issued")
    with pytest.raises(BackendError, match="HTTP 401") as info:
        await make_backend(credential=credential).list_versions()
    assert "not-a-token" not in str(info.value)
