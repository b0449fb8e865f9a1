"""JOSE primitives against published vectors and an independent implementation (PyJWT)."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa

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
