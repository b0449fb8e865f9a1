"""JOSE encoding: algorithms, JWKs, key ids and JWS signature formats.

Everything here is pure and backend-agnostic: it turns public keys into JWKs and kids, turns a
backend's signature into the JWS form, and lays out compact JWTs. The hot path (header and
payload encoding) is hand-rolled json + base64 because it runs once per token; JWK work, which
runs once per key version, goes through jwcrypto.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
from typing import Any, Union

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from jwcrypto import jwk

PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey]
PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey]

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 4096


class UnsupportedKeyError(ValueError):
    """A key no JWS verifier of interest accepts (wrong type, curve or size)."""


class Algorithm(str, enum.Enum):
    """The JWS algorithms keysvc signs with."""

    RS256 = "RS256"
    PS256 = "PS256"
    ES256 = "ES256"
    ES384 = "ES384"
    EdDSA = "EdDSA"

    @property
    def hash(self) -> hashes.HashAlgorithm | None:
        """The message digest this algorithm signs, None for EdDSA (which hashes internally)."""
        if self is Algorithm.ES384:
            return hashes.SHA384()
        if self is Algorithm.EdDSA:
            return None
        return hashes.SHA256()

    @property
    def is_rsa(self) -> bool:
        return self in (Algorithm.RS256, Algorithm.PS256)

    @property
    def is_ecdsa(self) -> bool:
        return self in (Algorithm.ES256, Algorithm.ES384)

    @property
    def ec_coordinate_size(self) -> int:
        """Bytes per coordinate (r or s) in a raw JWS ECDSA signature."""
        return {Algorithm.ES256: 32, Algorithm.ES384: 48}[self]

    def digest(self, message: bytes) -> bytes:
        """The digest a KMS signs for this algorithm (ValueError for EdDSA, which takes messages)."""
        if self is Algorithm.ES384:
            return hashlib.sha384(message).digest()
        if self is Algorithm.EdDSA:
            raise ValueError("EdDSA signs the message itself, not a digest")
        return hashlib.sha256(message).digest()


_CURVE_ALGORITHM = {"secp256r1": Algorithm.ES256, "secp384r1": Algorithm.ES384}


def describe_key(public_key: Any) -> str:
    """A short human name such as 'RSA-4096', 'EC P-256' or 'Ed25519'."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA-{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {public_key.curve.name}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(public_key).__name__


def check_supported(public_key: Any) -> None:
    """Raise UnsupportedKeyError unless the key is RSA 2048-4096, EC P-256/P-384 or Ed25519."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= public_key.key_size <= MAX_RSA_BITS:
            raise UnsupportedKeyError(
                f"RSA keys must be {MIN_RSA_BITS}-{MAX_RSA_BITS} bits, got {public_key.key_size}"
            )
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in _CURVE_ALGORITHM:
            raise UnsupportedKeyError(
                f"EC keys must use P-256 or P-384, got {public_key.curve.name}"
            )
        return
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return
    raise UnsupportedKeyError(f"unsupported key type {describe_key(public_key)}")


def algorithms_for(public_key: PublicKey) -> frozenset[Algorithm]:
    """Every algorithm this key can sign with."""
    check_supported(public_key)
    if isinstance(public_key, rsa.RSAPublicKey):
        return frozenset({Algorithm.RS256, Algorithm.PS256})
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return frozenset({_CURVE_ALGORITHM[public_key.curve.name]})
    return frozenset({Algorithm.EdDSA})


def default_algorithm(public_key: PublicKey) -> Algorithm:
    """RSA → RS256 (what every cloud accepts), P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA."""
    if isinstance(public_key, rsa.RSAPublicKey):
        check_supported(public_key)
        return Algorithm.RS256
    (only,) = algorithms_for(public_key)
    return only


def choose_algorithm(
    public_key: PublicKey, preferred: Algorithm | None, allowed: frozenset[Algorithm] | None = None
) -> Algorithm:
    """The algorithm a key signs with: the preferred one where the key (and its backend) can,
    otherwise the key's own default, otherwise anything the backend allows."""
    possible = algorithms_for(public_key)
    if allowed is not None:
        possible &= allowed
    if not possible:
        raise UnsupportedKeyError(f"no JWS algorithm fits this {describe_key(public_key)} key")
    if preferred in possible:
        return preferred
    default = default_algorithm(public_key)
    if default in possible:
        return default
    return sorted(possible, key=lambda a: a.value)[0]


# --- JWK and kid -------------------------------------------------------------------------------

PUBLIC_JWK_FIELDS = ("kty", "kid", "use", "alg", "n", "e", "crv", "x", "y")
"""What keysvc ever publishes: exactly GCP's whitelist for uploaded JWKS, so no x5c/x5t."""


def _jwcrypto_key(public_key: PublicKey) -> jwk.JWK:
    return jwk.JWK.from_pyca(public_key)


def thumbprint(public_key: PublicKey) -> str:
    """RFC 7638 SHA-256 JWK thumbprint, base64url without padding: the kid, as otfd computes it."""
    return _jwcrypto_key(public_key).thumbprint(hashes.SHA256())


def public_jwk(public_key: PublicKey, alg: Algorithm) -> dict[str, str]:
    """The public JWK published for a key version, with kid, use and alg."""
    exported = _jwcrypto_key(public_key).export_public(as_dict=True)
    exported.update(kid=thumbprint(public_key), use="sig", alg=alg.value)
    return {name: exported[name] for name in PUBLIC_JWK_FIELDS if name in exported}


def jwks_document(keys: list[dict[str, str]]) -> dict[str, Any]:
    return {"keys": list(keys)}


# --- signatures --------------------------------------------------------------------------------


def der_to_raw(signature: bytes, alg: Algorithm) -> bytes:
    """DER ECDSA (what KMSs return) → fixed-width r‖s (what JWS requires)."""
    r, s = utils.decode_dss_signature(signature)
    size = alg.ec_coordinate_size
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def raw_to_der(signature: bytes) -> bytes:
    """Fixed-width r‖s → DER, for verifying a JWS ECDSA signature with cryptography."""
    half = len(signature) // 2
    return utils.encode_dss_signature(
        int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
    )


def pss_padding() -> padding.PSS:
    """RFC 7518 PS256: MGF1 with SHA-256 and a salt as long as the hash (32 bytes)."""
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


_ECDSA = {Algorithm.ES256: ec.ECDSA(hashes.SHA256()), Algorithm.ES384: ec.ECDSA(hashes.SHA384())}
_RSA_PADDING = {Algorithm.RS256: padding.PKCS1v15(), Algorithm.PS256: pss_padding()}
_SHA256 = hashes.SHA256()
"""Signature parameters built once: a fresh `ec.ECDSA(hashes.SHA256())` per call costs a
quarter of an ES256 signature. They are immutable, so sharing them across threads is safe."""


def sign_local(private_key: PrivateKey, alg: Algorithm, message: bytes) -> bytes:
    """Sign with an in-process private key and return the JWS-form signature."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return der_to_raw(private_key.sign(message, _ECDSA[alg]), alg)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(message, _RSA_PADDING[alg], _SHA256)
    return private_key.sign(message)


def verify_local(public_key: PublicKey, alg: Algorithm, message: bytes, signature: bytes) -> None:
    """Verify a JWS-form signature; raises cryptography's InvalidSignature on mismatch."""
    if isinstance(public_key, rsa.RSAPublicKey):
        pad = pss_padding() if alg is Algorithm.PS256 else padding.PKCS1v15()
        public_key.verify(signature, message, pad, hashes.SHA256())
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(raw_to_der(signature), message, ec.ECDSA(alg.hash))
    else:
        public_key.verify(signature, message)


# --- compact JWT layout ------------------------------------------------------------------------


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64url_decode(data: str | bytes) -> bytes:
    if isinstance(data, str):
        data = data.encode("ascii")
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


def encode_header(kid: str, alg: Algorithm) -> bytes:
    """The base64url protected header, computed once per key version."""
    header = {"alg": alg.value, "kid": kid, "typ": "JWT"}
    return b64url(json.dumps(header, separators=(",", ":")).encode())


def signing_input(header_b64: bytes, claims: dict[str, Any]) -> bytes:
    """`header.payload`: the claims as compact UTF-8 JSON (orjson, the same text as
    json.dumps with separators=(",", ":"), ensure_ascii=False, for a tenth of the time).

    Raises TypeError for what JSON cannot carry faithfully: a key that is not a string, an
    integer beyond 64 bits (and writes NaN or infinity as null: callers refuse those first)."""
    return header_b64 + b"." + b64url(orjson.dumps(claims))


def compact(signing_input_: bytes, signature: bytes) -> str:
    return (signing_input_ + b"." + b64url(signature)).decode("ascii")
