"""Azure Key Vault JSON Web Keys → cryptography public keys.

Key Vault hands out a version's public key as a JWK whose big integers are already bytes
(`JsonWebKey.n`, `.e`, `.x`, `.y`), with its own key types: RSA and RSA-HSM, EC and EC-HSM
(P-256, P-384, P-521, P-256K), oct and oct-HSM. keysvc signs JWTs with RSA 2048-4096
(RS256/PS256) and EC P-256 (ES256) or P-384 (ES384) only; everything else is refused by name.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keysvc import jose

_CURVES: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}
SUPPORTED = "RSA 2048-4096 (RS256, PS256), EC P-256 (ES256) or EC P-384 (ES384)"


class UnsupportedAzureKey(ValueError):
    """A key version keysvc cannot sign JWTs with; the message names what it is."""


def _name(value: Any) -> str:
    """The SDK's str enums (JsonWebKeyType, KeyCurveName) and plain strings alike."""
    return str(getattr(value, "value", value) or "unknown")


def _int(value: Any) -> int:
    if not value:
        raise UnsupportedAzureKey("the key's JWK lacks its public numbers")
    return int.from_bytes(bytes(value), "big")


def public_key_from_jwk(jwk: Any) -> jose.PublicKey:
    """Convert an azure-keyvault-keys `JsonWebKey` into a cryptography public key."""
    kty = _name(getattr(jwk, "kty", None))
    if kty in ("RSA", "RSA-HSM"):
        public: jose.PublicKey = rsa.RSAPublicNumbers(_int(jwk.e), _int(jwk.n)).public_key()
    elif kty in ("EC", "EC-HSM"):
        crv = _name(jwk.crv)
        if crv not in _CURVES:
            raise UnsupportedAzureKey(f"it is an {kty} {crv} key; keysvc signs with {SUPPORTED}")
        try:
            public = ec.EllipticCurvePublicNumbers(
                _int(jwk.x), _int(jwk.y), _CURVES[crv]
            ).public_key()
        except ValueError:
            raise UnsupportedAzureKey(f"its {crv} public point is not on the curve") from None
    else:
        raise UnsupportedAzureKey(f"it is an {kty} key; keysvc signs with {SUPPORTED}")
    try:
        jose.check_supported(public)
    except jose.UnsupportedKeyError as exc:
        raise UnsupportedAzureKey(f"{exc}; keysvc signs with {SUPPORTED}") from None
    return public
