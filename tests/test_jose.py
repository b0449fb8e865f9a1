"""JOSE primitives against published vectors and an independent implementation (PyJWT)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

from keysvc import jose, keygen
from keysvc.jose import Algorithm

# RFC 7638 section 3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjB"
    "ZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8"
    "KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_"
    "xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

ALL = [
    ("rsa-2048", Algorithm.RS256),
    ("rsa-2048", Algorithm.PS256),
    ("ec-p256", Algorithm.ES256),
    ("ec-p384", Algorithm.ES384),
    ("ed25519", Algorithm.EdDSA),
]


def test_rfc7638_thumbprint() -> None:
    numbers = rsa.RSAPublicNumbers(65537, int.from_bytes(jose.b64url_decode(RFC7638_N), "big"))
    assert jose.thumbprint(numbers.public_key()) == RFC7638_THUMBPRINT


@pytest.mark.parametrize(("key_type", "alg"), ALL)
def test_signatures_verify_with_pyjwt(key_type: str, alg: Algorithm) -> None:
    key = keygen.generate(key_type)  # type: ignore[arg-type]
    kid = jose.thumbprint(key.public_key())
    message = jose.signing_input(jose.encode_header(kid, alg), {"sub": "x", "n": "é"})
    token = jose.compact(message, jose.sign_local(key, alg, message))
    assert jwt.get_unverified_header(token) == {"alg": alg.value, "kid": kid, "typ": "JWT"}
    jwk = jwt.PyJWK(jose.public_jwk(key.public_key(), alg))
    assert jwt.decode(token, jwk, algorithms=[alg.value]) == {"sub": "x", "n": "é"}
    jose.verify_local(key.public_key(), alg, message, jose.b64url_decode(token.split(".")[2]))
    with pytest.raises(InvalidSignature):
        jose.verify_local(key.public_key(), alg, message + b"x", jose.b64url_decode(token.split(".")[2]))


@pytest.mark.parametrize(("key_type", "alg"), ALL)
def test_public_jwk_has_only_whitelisted_fields(key_type: str, alg: Algorithm) -> None:
    key = keygen.generate(key_type)  # type: ignore[arg-type]
    published = jose.public_jwk(key.public_key(), alg)
    assert set(published) <= set(jose.PUBLIC_JWK_FIELDS)
    assert published["use"] == "sig" and published["alg"] == alg.value
    assert published["kid"] == jose.thumbprint(key.public_key())
    assert "d" not in published and "p" not in published


def test_der_raw_roundtrip_keeps_fixed_width() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    for _ in range(20):  # small r or s values must be left-padded to 48 bytes
        der = key.sign(b"m", ec.ECDSA(Algorithm.ES384.hash))
        raw = jose.der_to_raw(der, Algorithm.ES384)
        assert len(raw) == 96
        assert jose.raw_to_der(raw) == der


def test_algorithm_choice() -> None:
    rsa_key = keygen.generate("rsa-2048").public_key()
    assert jose.default_algorithm(rsa_key) is Algorithm.RS256
    assert jose.choose_algorithm(rsa_key, Algorithm.PS256) is Algorithm.PS256
    assert jose.choose_algorithm(rsa_key, None, frozenset({Algorithm.PS256})) is Algorithm.PS256
    ec_key = keygen.generate("ec-p384").public_key()
    assert jose.choose_algorithm(ec_key, Algorithm.PS256) is Algorithm.ES384
    with pytest.raises(jose.UnsupportedKeyError):
        jose.choose_algorithm(ec_key, None, frozenset({Algorithm.ES256}))


def test_unsupported_keys_refused() -> None:
    small = rsa.generate_private_key(65537, 1024).public_key()
    with pytest.raises(jose.UnsupportedKeyError, match="2048-4096"):
        jose.check_supported(small)
    k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    with pytest.raises(jose.UnsupportedKeyError, match="P-256 or P-384"):
        jose.check_supported(k1)


def test_signing_input_is_compact_json() -> None:
    header = jose.encode_header("k", Algorithm.ES256)
    assert json.loads(jose.b64url_decode(header)) == {"alg": "ES256", "kid": "k", "typ": "JWT"}
    message = jose.signing_input(header, {"a": 1})
    assert jose.b64url_decode(message.split(b".")[1]) == b'{"a":1}'


@pytest.mark.parametrize(
    ("alg", "digest"),
    [(Algorithm.RS256, hashlib.sha256), (Algorithm.PS256, hashlib.sha256),
     (Algorithm.ES256, hashlib.sha256), (Algorithm.ES384, hashlib.sha384)],
)
def test_digest_is_what_a_kms_signs(alg: Algorithm, digest: Any) -> None:
    assert alg.digest(b"header.payload") == digest(b"header.payload").digest()


def test_eddsa_has_no_digest() -> None:
    with pytest.raises(ValueError) as refused:
        Algorithm.EdDSA.digest(b"header.payload")
    assert str(refused.value) == "EdDSA signs the message itself, not a digest"


def test_describe_key() -> None:
    assert jose.describe_key(keygen.generate("rsa-2048").public_key()) == "RSA-2048"
    assert jose.describe_key(keygen.generate("ec-p384").public_key()) == "EC secp384r1"
    assert jose.describe_key(keygen.generate("ed25519").public_key()) == "Ed25519"
    assert jose.describe_key(x25519.X25519PrivateKey.generate().public_key()) == "X25519PublicKey"


def rsa_public_key(bits: int) -> rsa.RSAPublicKey:
    """An RSA public key of exactly `bits` bits (a modulus, not a real key: only sizes count)."""
    return rsa.RSAPublicNumbers(65537, (1 << (bits - 1)) | 1).public_key()


def test_rsa_sizes_from_2048_to_4096_bits_are_supported() -> None:
    for bits in (2048, 3072, 4096):
        jose.check_supported(rsa_public_key(bits))
    for bits in (2047, 4097):
        with pytest.raises(jose.UnsupportedKeyError) as refused:
            jose.check_supported(rsa_public_key(bits))
        assert str(refused.value) == f"RSA keys must be 2048-4096 bits, got {bits}"


def test_other_key_types_are_refused_by_name() -> None:
    with pytest.raises(jose.UnsupportedKeyError) as refused:
        jose.check_supported(x25519.X25519PrivateKey.generate().public_key())
    assert str(refused.value) == "unsupported key type X25519PublicKey"


def test_rsa_defaults_to_rs256_and_a_key_limited_elsewhere_says_so() -> None:
    rsa_key = keygen.generate("rsa-2048").public_key()
    assert jose.choose_algorithm(rsa_key, None) is Algorithm.RS256
    assert jose.choose_algorithm(rsa_key, Algorithm.ES256) is Algorithm.RS256
    ec_key = keygen.generate("ec-p384").public_key()
    with pytest.raises(jose.UnsupportedKeyError) as refused:
        jose.choose_algorithm(ec_key, None, frozenset({Algorithm.ES256}))
    assert str(refused.value) == "no JWS algorithm fits this EC secp384r1 key"


@pytest.mark.parametrize(
    ("data", "encoded"),
    [(b"", b""), (b"f", b"Zg"), (b"fo", b"Zm8"), (b"foo", b"Zm9v"), (b"\x00\x00\x17", b"AAAX"),
     (b"\xfb\xff", b"-_8"), (b"\xfb\xef\xbe", b"----")],
)
def test_base64url_without_padding(data: bytes, encoded: bytes) -> None:
    """RFC 7515 section 2: url-safe alphabet, trailing '=' removed (and nothing else)."""
    assert jose.b64url(data) == encoded
    assert jose.b64url_decode(encoded) == data
    assert jose.b64url_decode(encoded.decode()) == data


def test_the_protected_header_is_compact_json() -> None:
    """Compact JSON, without the spaces json.dumps puts in by default: every token carries it."""
    header = jose.encode_header("k", Algorithm.ES256)
    assert jose.b64url_decode(header) == b'{"alg":"ES256","kid":"k","typ":"JWT"}'
