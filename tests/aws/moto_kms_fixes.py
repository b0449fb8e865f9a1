"""Make moto 5.2.5's KMS Sign behave like real AWS KMS where keysvc depends on it.

moto ignores `MessageType=DIGEST` (it hashes the digest again), signs RSASSA-PSS with the
maximal salt length (real KMS uses a salt as long as the hash, as RFC 7518 PS256 requires) and
signs with disabled keys. Real KMS does none of that, and keysvc relies on all three. This
replaces moto's Sign handler, in the test process only, with one that signs the digest it is
given (`Prehashed`), uses salt = hash length, checks the digest length and refuses keys that are
not Enabled with KMS's error codes. moto's DisableKey, EnableKey and ScheduleKeyDeletion also
accept only bare key ids, where KMS takes key ARNs too (keysvc uses ARNs: they also name keys of
other accounts); those three resolve any key id form first. Everything else (keys, aliases, tags) stays moto's.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from moto.kms.exceptions import ValidationException
from moto.kms.models import KmsBackend
from moto.kms.responses import KmsResponse
from moto.core.exceptions import JsonRESTError

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"256": hashes.SHA256, "384": hashes.SHA384,
                                                  "512": hashes.SHA512}
_ORIGINAL_SIGN = KmsResponse.sign
_ORIGINAL_STATE_CHANGES = {
    name: getattr(KmsBackend, name)
    for name in ("disable_key", "enable_key", "schedule_key_deletion")
}


class _KeyStateError(JsonRESTError):
    code = 400


def _hash_for(algorithm: str) -> hashes.HashAlgorithm:
    return _HASHES[algorithm.rsplit("_", 1)[-1]]()


def _sign_like_kms(private_key: Any, algorithm: str, digest: bytes) -> bytes:
    hash_ = _hash_for(algorithm)
    prehashed = utils.Prehashed(hash_)
    if isinstance(private_key, rsa.RSAPrivateKey):
        if algorithm.startswith("RSASSA_PSS_"):
            pad: padding.AsymmetricPadding = padding.PSS(
                mgf=padding.MGF1(hash_), salt_length=padding.PSS.DIGEST_LENGTH
            )
        else:
            pad = padding.PKCS1v15()
        return private_key.sign(digest, pad, prehashed)
    assert isinstance(private_key, ec.EllipticCurvePrivateKey)
    return private_key.sign(digest, ec.ECDSA(prehashed))


def _sign(self: KmsResponse) -> str:
    key = self.kms_backend.describe_key(self._get_param("KeyId"))
    if key.key_state == "Disabled":
        raise _KeyStateError("DisabledException", f"{key.arn} is disabled.")
    if key.key_state != "Enabled":
        raise _KeyStateError("KMSInvalidStateException", f"{key.arn} is {key.key_state}.")
    algorithm = self._get_param("SigningAlgorithm")
    if algorithm not in key.signing_algorithms:
        raise ValidationException(f"{algorithm} is not valid for {key.key_spec}")
    message = self._get_param("Message")
    hash_ = _hash_for(algorithm)
    if self._get_param("MessageType", "RAW") == "DIGEST":
        if len(message) != hash_.digest_size:
            raise ValidationException(
                f"Digest is invalid length for algorithm {algorithm}."
            )
        digest = message
    else:
        hasher = hashes.Hash(hash_)
        hasher.update(message)
        digest = hasher.finalize()
    signature = _sign_like_kms(key.private_key.private_key, algorithm, digest)
    return json.dumps(
        {
            "KeyId": key.arn,
            "Signature": base64.b64encode(signature).decode(),
            "SigningAlgorithm": algorithm,
        }
    )


def _accepting_any_key_id(original: Any) -> Any:
    def change_state(self: KmsBackend, key_id: str, *args: Any) -> Any:
        return original(self, self.any_id_to_key_id(key_id), *args)

    return change_state


def install() -> None:
    """Patch moto's KMS (idempotent)."""
    KmsResponse.sign = _sign  # type: ignore[method-assign]
    for name, original in _ORIGINAL_STATE_CHANGES.items():
        setattr(KmsBackend, name, _accepting_any_key_id(original))


def uninstall() -> None:
    KmsResponse.sign = _ORIGINAL_SIGN  # type: ignore[method-assign]
    for name, original in _ORIGINAL_STATE_CHANGES.items():
        setattr(KmsBackend, name, original)
