"""Signing through KMS: every signature must verify, with `cryptography` alone, against the
public key KMS's GetPublicKey returns, over the full JWS signing input (so the backend must
have sent the right digest with MessageType=DIGEST and the right KMS algorithm)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from keysvc import jose
from keysvc.backends import BackendError

from .conftest import create_key

A = jose.Algorithm
MESSAGE = b"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJvcmdhbml6YXRpb24ifQ"


def verify_independently(public_der: bytes, alg: jose.Algorithm, signature: bytes) -> None:
    """Verify as a relying party would, spelled out with cryptography's primitives."""
    public_key: Any = serialization.load_der_public_key(public_der)
    if alg is A.RS256:
        public_key.verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    elif alg is A.PS256:
        # RFC 7518: MGF1-SHA256 and a 32-byte salt, exactly (not "auto").
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        public_key.verify(signature, MESSAGE, pss, hashes.SHA256())
    elif alg is A.ES256:
        public_key.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))
    else:
        assert alg is A.ES384
        public_key.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA384()))


@pytest.mark.parametrize(
    ("key_spec", "algorithms"),
    [
        ("RSA_2048", {A.RS256, A.PS256}),
        ("RSA_3072", {A.RS256, A.PS256}),
        ("RSA_4096", {A.RS256, A.PS256}),
        ("ECC_NIST_P256", {A.ES256}),
        ("ECC_NIST_P384", {A.ES384}),
    ],
)
async def test_every_algorithm_verifies(
    kms: Any, make_backend: Any, key_spec: str, algorithms: set[jose.Algorithm]
) -> None:
    meta = create_key(kms, key_spec)
    backend = await make_backend(key_ids=[meta["KeyId"]])
    (version,) = await backend.list_versions()
    assert version.algorithms == algorithms
    public_der = kms.get_public_key(KeyId=meta["KeyId"])["PublicKey"]
    for alg in sorted(algorithms):
        signature = await backend.sign(version, alg, MESSAGE)
        verify_independently(public_der, alg, signature)
        if alg.is_ecdsa:
            # DER as KMS returns it; the ring's generic conversion yields a valid JWS r‖s.
            raw = jose.der_to_raw(signature, alg)
            assert len(raw) == 2 * alg.ec_coordinate_size
            jose.verify_local(version.public_key, alg, MESSAGE, raw)


async def test_signature_over_other_bytes_does_not_verify(kms: Any, make_backend: Any) -> None:
    """The independent check can fail: a signature of another message is rejected."""
    meta = create_key(kms, "ECC_NIST_P256")
    backend = await make_backend(key_ids=[meta["Arn"]])
    (version,) = await backend.list_versions()
    signature = await backend.sign(version, A.ES256, MESSAGE + b"x")
    public_der = kms.get_public_key(KeyId=meta["KeyId"])["PublicKey"]
    with pytest.raises(InvalidSignature):
        verify_independently(public_der, A.ES256, signature)


@pytest.mark.parametrize(
    ("key_spec", "alg", "kms_algorithm", "digest"),
    [
        ("RSA_2048", A.RS256, "RSASSA_PKCS1_V1_5_SHA_256", hashlib.sha256),
        ("RSA_2048", A.PS256, "RSASSA_PSS_SHA_256", hashlib.sha256),
        ("ECC_NIST_P384", A.ES384, "ECDSA_SHA_384", hashlib.sha384),
    ],
)
async def test_sign_sends_only_the_digest(
    kms: Any, make_backend: Any, faults: Any, key_spec: str, alg: jose.Algorithm,
    kms_algorithm: str, digest: Any,
) -> None:
    """The signing input never leaves the process: KMS gets its hash, as MessageType=DIGEST."""
    meta = create_key(kms, key_spec)
    backend = await make_backend(key_ids=[meta["Arn"]])
    (version,) = await backend.list_versions()
    faults.clear()
    await backend.sign(version, alg, MESSAGE)
    (request,) = faults.requests("Sign")
    assert request["MessageType"] == "DIGEST"
    assert request["SigningAlgorithm"] == kms_algorithm
    assert request["KeyId"] == meta["Arn"]
    assert base64.b64decode(request["Message"]) == digest(MESSAGE).digest()


async def test_an_algorithm_the_key_lacks_is_refused(kms: Any, make_backend: Any) -> None:
    meta = create_key(kms, "ECC_NIST_P256")
    backend = await make_backend(key_ids=[meta["Arn"]])
    (version,) = await backend.list_versions()
    with pytest.raises(BackendError, match="cannot sign ES384"):
        await backend.sign(version, A.ES384, MESSAGE)


async def test_a_key_disabled_after_listing_fails_clearly(kms: Any, make_backend: Any) -> None:
    meta = create_key(kms, "ECC_NIST_P256")
    backend = await make_backend(key_ids=[meta["Arn"]])
    (version,) = await backend.list_versions()
    kms.disable_key(KeyId=meta["KeyId"])
    with pytest.raises(BackendError, match="disabled or pending deletion") as caught:
        await backend.sign(version, A.ES256, MESSAGE)
    assert meta["Arn"] in str(caught.value)
