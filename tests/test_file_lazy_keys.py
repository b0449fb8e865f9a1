"""The file backend reads RSA private keys for their public keys alone, and checks a key (that
its parts agree) before its first signature: listing many versions costs milliseconds, and
only a key that signs pays for the check, once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from keysvc import jose, keygen
from keysvc.backends.file import CheckedOnUse, FileBackend, FileSettings, name_for
from keysvc.errors import BackendError
from keysvc.keyring import KeyRing, Lifecycle
from keysvc.secrets import write_private_file
from tests.conftest import write_key

LIFE = Lifecycle(timedelta(hours=24), timedelta(minutes=15), timedelta(hours=2))
NOW = datetime.now(UTC)


async def test_only_the_keys_that_may_sign_are_checked_and_only_once(tmp_path: Path) -> None:
    for days in (30, 20, 10, 5):
        write_key(tmp_path, "rsa-2048", NOW - timedelta(days=days))
    backend = FileBackend("local", FileSettings(path=tmp_path))
    ring = KeyRing([backend], LIFE)
    await ring.refresh(raise_errors=True)
    handles = [k.version.handle for k in ring.all_keys()]
    assert all(isinstance(h, CheckedOnUse) for h in handles)
    signer = ring.view().signer
    assert signer is not None and signer.version.handle is handles[-1]
    for _ in range(3):
        signature = await ring.sign(signer, b"header.payload")
        jose.verify_local(signer.version.public_key, signer.alg, b"header.payload", signature)
    # The two newest are checked (ahead, in the background, or at the first signature); the
    # older ones, which never sign again, never are.
    deadline = time.monotonic() + 60
    while not handles[-2].checked:  # checked in the background, ahead of any signature
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert [h.checked for h in handles] == [False, False, True, True]
    checked = handles[-1]._key
    await ring.refresh(raise_errors=True)  # files unchanged: the same, checked, handle
    assert ring.view().signer.version.handle._key is checked  # type: ignore[union-attr]
    await ring.close()


def broken_rsa_pem() -> bytes:
    """An RSA key whose CRT part dmp1 is wrong: it parses, but cryptography's check refuses
    it (signing with it could leak the key)."""
    good = keygen.generate("rsa-2048")
    assert isinstance(good, rsa.RSAPrivateKey)
    n = good.private_numbers()
    broken = rsa.RSAPrivateNumbers(
        n.p, n.q, n.d, n.dmp1 ^ 2, n.dmq1, n.iqmp, n.public_numbers
    ).private_key(unsafe_skip_rsa_key_validation=True)
    return keygen.private_pem(broken)


async def test_a_key_that_fails_its_check_is_published_but_never_signs(tmp_path: Path) -> None:
    write_private_file(tmp_path / name_for(NOW - timedelta(days=2)), broken_rsa_pem())
    backend = FileBackend("local", FileSettings(path=tmp_path))
    ring = KeyRing([backend], LIFE)
    await ring.refresh(raise_errors=True)
    signer = ring.view().signer
    assert signer is not None
    with pytest.raises(BackendError, match="cannot sign"):
        await ring.sign(signer, b"header.payload")
    with pytest.raises(BackendError, match="cannot sign"):  # and again: never half-checked
        await ring.sign(signer, b"header.payload")
    await ring.close()
