"""The pure pieces of the Vault backend: Transit's time, key and signature formats."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from keysvc import jose
from keysvc.backends.base import BackendError
from keysvc.backends.vault import (
    decode_signature,
    parse_creation_time,
    parse_public_key,
    sign_parameters,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T15:37:09.405147913Z", datetime(2026, 11, 27, 15, 37, 9, 405147, tzinfo=UTC)),
        ("2026-11-27T15:37:09Z", datetime(2026, 11, 27, 15, 37, 9, tzinfo=UTC)),
        ("2026-11-27T16:37:09.5+01:00", datetime(2026, 11, 27, 15, 37, 9, 500000, tzinfo=UTC)),
    ],
)
def test_creation_times_become_utc(text: str, expected: datetime) -> None:
    parsed = parse_creation_time(text)
    assert parsed == expected and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_ed25519_public_keys_come_raw() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = base64.b64encode(key.public_bytes_raw()).decode()
    assert jose.thumbprint(parse_public_key(raw)) == jose.thumbprint(key)
    with pytest.raises(ValueError):
        parse_public_key("not base64!")


def test_signatures_in_either_base64_alphabet() -> None:
    blob = bytes(range(250, 256)) * 11  # encodes with '+' '/' in standard base64
    url = jose.b64url(blob).decode()
    std = base64.b64encode(blob).decode()
    assert "/" in std or "+" in std
    assert decode_signature(f"vault:v3:{url}", 3) == blob
    assert decode_signature(f"vault:v3:{std}", 3) == blob
    with pytest.raises(BackendError, match="another key version"):
        decode_signature(f"vault:v4:{url}", 3)


def test_sign_parameters_per_algorithm() -> None:
    assert sign_parameters(jose.Algorithm.PS256) == {
        "hash_algorithm": "sha2-256", "prehashed": True, "marshaling_algorithm": "jws",
        "signature_algorithm": "pss", "salt_length": "hash",
    }
    assert sign_parameters(jose.Algorithm.RS256)["signature_algorithm"] == "pkcs1v15"
    assert sign_parameters(jose.Algorithm.ES384)["hash_algorithm"] == "sha2-384"
    assert "prehashed" not in sign_parameters(jose.Algorithm.EdDSA)  # Ed25519 signs the message
