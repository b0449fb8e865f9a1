"""The Vault backend against a real OpenBao server: listing, signing, rotation, revocation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from keysvc import jose
from keysvc.backends.base import BackendError, OperationNotSupported
from keysvc.errors import ConfigError
from tests.vault.bao import BaoServer
from tests.vault.conftest import unique

MESSAGE = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvcmdhbml6YXRpb246YWNtZSJ9"

KEY_TYPES = {
    "rsa-2048": (rsa.RSAPublicKey, {jose.Algorithm.RS256, jose.Algorithm.PS256}),
    "rsa-4096": (rsa.RSAPublicKey, {jose.Algorithm.RS256, jose.Algorithm.PS256}),
    "ecdsa-p256": (ec.EllipticCurvePublicKey, {jose.Algorithm.ES256}),
    "ecdsa-p384": (ec.EllipticCurvePublicKey, {jose.Algorithm.ES384}),
    "ed25519": (ed25519.Ed25519PublicKey, {jose.Algorithm.EdDSA}),
}


@pytest.mark.parametrize("key_type", list(KEY_TYPES))
async def test_list_sign_rotate(bao: BaoServer, make_backend, key_type: str) -> None:
    name = unique(key_type)
    bao.create_key(name, key_type)
    backend = await make_backend(name)
    key_class, algorithms = KEY_TYPES[key_type]

    (first,) = await backend.list_versions()
    assert first.version_id == "1"
    assert isinstance(first.public_key, key_class)
    assert jose.algorithms_for(first.public_key) == algorithms
    assert abs(first.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert first.created_at.tzinfo is not None

    for alg in algorithms:
        signature = await backend.sign(first, alg, MESSAGE)
        jose.verify_local(first.public_key, alg, MESSAGE, signature)
        if alg.is_ecdsa:
            assert len(signature) == 2 * alg.ec_coordinate_size  # raw r‖s, not DER

    second = await backend.create_version()
    assert second.version_id == "2"
    assert second.created_at >= first.created_at
    listed = await backend.list_versions()
    assert [v.version_id for v in listed] == ["1", "2"]
    assert jose.thumbprint(listed[0].public_key) == jose.thumbprint(first.public_key)
    assert jose.thumbprint(second.public_key) != jose.thumbprint(first.public_key)

    # Signing names the version explicitly: version 1 still signs with version 1's key
    # although version 2 is Transit's latest.
    alg = min(algorithms)
    old = await backend.sign(first, alg, MESSAGE)
    jose.verify_local(first.public_key, alg, MESSAGE, old)
    new = await backend.sign(second, alg, MESSAGE)
    jose.verify_local(second.public_key, alg, MESSAGE, new)
    with pytest.raises(InvalidSignature):
        jose.verify_local(second.public_key, alg, MESSAGE, old)


async def test_pss_uses_hash_length_salt(bao: BaoServer, make_backend) -> None:
    """PS256 per RFC 7518 has a 32-byte salt; the strict check in jose.verify_local (salt 32)
    would fail on Vault's default (maximal) salt."""
    name = unique("pss")
    bao.create_key(name, "rsa-2048")
    backend = await make_backend(name)
    (version,) = await backend.list_versions()
    signature = await backend.sign(version, jose.Algorithm.PS256, MESSAGE)
    jose.verify_local(version.public_key, jose.Algorithm.PS256, MESSAGE, signature)
    with pytest.raises(InvalidSignature):
        jose.verify_local(version.public_key, jose.Algorithm.RS256, MESSAGE, signature)


@pytest.mark.parametrize("key_type", ["aes256-gcm96", "chacha20-poly1305", "ecdsa-p521"])
async def test_key_types_no_verifier_accepts_are_refused(bao: BaoServer, make_backend, key_type: str) -> None:
    name = unique(key_type)
    bao.create_key(name, key_type)
    backend = await make_backend(name)
    with pytest.raises(ConfigError) as err:
        await backend.list_versions()
    assert key_type in str(err.value) and "no JWS verifier accepts" in str(err.value)
    assert "ecdsa-p256" in str(err.value)  # says what would work
    with pytest.raises(ConfigError):
        await backend.create_version()
    # nothing was rotated on the refused key
    assert bao.request("GET", f"transit/keys/{name}")["data"]["latest_version"] == 1


async def test_missing_key_is_a_config_error(make_backend) -> None:
    backend = await make_backend("no-such-key")
    with pytest.raises(ConfigError, match="does not exist"):
        await backend.list_versions()


async def test_algorithm_that_does_not_fit_the_key(bao: BaoServer, make_backend, key_name: str) -> None:
    backend = await make_backend(key_name)
    (version,) = await backend.list_versions()
    with pytest.raises(BackendError, match="RS256 does not fit EC"):
        await backend.sign(version, jose.Algorithm.RS256, MESSAGE)


async def test_versions_below_min_available_are_not_listed(bao: BaoServer, make_backend) -> None:
    name = unique("trim")
    bao.create_key(name, "ed25519")
    for _ in range(3):
        bao.request("POST", f"transit/keys/{name}/rotate")
    bao.request("POST", f"transit/keys/{name}/config",
                {"min_decryption_version": 3, "min_encryption_version": 3})
    bao.request("POST", f"transit/keys/{name}/trim", {"min_available_version": 2})
    backend = await make_backend(name)
    assert [v.version_id for v in await backend.list_versions()] == ["3", "4"]


async def test_revocation_drops_the_version_and_older_ones(bao: BaoServer, make_backend) -> None:
    name = unique("revoke")
    bao.create_key(name, "ecdsa-p256")
    backend = await make_backend(name)
    await backend.create_version()
    await backend.create_version()
    v1, v2, v3 = await backend.list_versions()

    with pytest.raises(OperationNotSupported, match="newest version.*rotate first"):
        await backend.disable_version(v3)

    await backend.disable_version(v2)
    assert [v.version_id for v in await backend.list_versions()] == ["3"]
    # Vault itself refuses to sign with a revoked version, so a stale replica cannot use it.
    with pytest.raises(BackendError, match="less than the minimum"):
        await backend.sign(v2, jose.Algorithm.ES256, MESSAGE)
    with pytest.raises(BackendError):
        await backend.sign(v1, jose.Algorithm.ES256, MESSAGE)
    signature = await backend.sign(v3, jose.Algorithm.ES256, MESSAGE)
    jose.verify_local(v3.public_key, jose.Algorithm.ES256, MESSAGE, signature)


async def test_version_above_latest_fails_that_signature_only(bao: BaoServer, make_backend, key_name: str) -> None:
    backend = await make_backend(key_name)
    with pytest.raises(BackendError, match="higher than the latest"):
        await backend.sign_input(7, jose.Algorithm.ES256, jose.Algorithm.ES256.digest(MESSAGE))


async def test_a_key_inside_a_namespace(bao: BaoServer, make_backend) -> None:
    namespace = unique("team")
    bao.request("POST", f"sys/namespaces/{namespace}")
    bao.request("POST", "sys/mounts/transit", {"type": "transit"}, namespace=namespace)
    bao.request("POST", "transit/keys/scoped", {"type": "ecdsa-p256"}, namespace=namespace)
    backend = await make_backend("scoped", namespace=namespace)
    (version,) = await backend.list_versions()
    signature = await backend.sign(version, jose.Algorithm.ES256, MESSAGE)
    jose.verify_local(version.public_key, jose.Algorithm.ES256, MESSAGE, signature)
    outside = await make_backend("scoped")
    with pytest.raises(ConfigError, match="does not exist"):
        await outside.list_versions()
