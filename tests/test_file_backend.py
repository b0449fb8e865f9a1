"""The file backend on real files: formats, permissions, creation times, atomic rotation."""

from __future__ import annotations

import os
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from keysvc import jose, keygen
from keysvc.backends.base import OperationNotSupported
from keysvc.backends.file import EPOCH, FileBackend, FileSettings, created_at_from_name
from keysvc.errors import ConfigError

FORMATS = {
    "pkcs1": serialization.PrivateFormat.TraditionalOpenSSL,
    "pkcs8": serialization.PrivateFormat.PKCS8,
    "openssh": serialization.PrivateFormat.OpenSSH,
}


def pem(key, fmt: str) -> bytes:  # type: ignore[no-untyped-def]
    return key.private_bytes(serialization.Encoding.PEM, FORMATS[fmt], serialization.NoEncryption())


def write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("key_type", ["rsa-2048", "ec-p256", "ec-p384", "ed25519"])
@pytest.mark.parametrize("fmt", ["pkcs1", "pkcs8", "openssh"])
async def test_formats_load_and_sign(tmp_path: Path, key_type: str, fmt: str) -> None:
    key = keygen.generate(key_type)  # type: ignore[arg-type]
    if fmt == "pkcs1" and key_type == "ed25519":
        fmt = "pkcs8"  # Ed25519 has no traditional format
    path = write(tmp_path / "key.pem", pem(key, fmt))
    backend = FileBackend("f", FileSettings(path=path))
    (version,) = await backend.list_versions()
    assert version.created_at == EPOCH  # no timestamp in the name: the oldest possible key
    alg = jose.default_algorithm(version.public_key)
    signature = await backend.sign(version, alg, b"input")
    jose.verify_local(key.public_key(), alg, b"input", signature)
    await backend.close()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
async def test_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "key.pem", keygen.private_pem(keygen.generate("ec-p256")), mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        await FileBackend("f", FileSettings(path=path)).list_versions()


async def test_errors_name_the_file_never_the_contents(tmp_path: Path) -> None:
    secret = keygen.private_pem(keygen.generate("ec-p256"))
    path = write(tmp_path / "broken.pem", secret[:-40])
    with pytest.raises(ConfigError) as info:
        await FileBackend("f", FileSettings(path=path)).list_versions()
    assert "broken.pem" in str(info.value) and "PRIVATE" not in str(info.value)
    encrypted = keygen.generate("ec-p256").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    write(path, encrypted)
    with pytest.raises(ConfigError, match="encrypted"):
        await FileBackend("f", FileSettings(path=path)).list_versions()


async def test_small_rsa_key_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = write(tmp_path / "k.pem", keygen.private_pem(rsa.generate_private_key(65537, 1024)))
    with pytest.raises(ConfigError, match="2048-4096"):
        await FileBackend("f", FileSettings(path=path)).list_versions()


async def test_public_key_must_match(tmp_path: Path) -> None:
    key, other = keygen.generate("ec-p256"), keygen.generate("ec-p256")
    path = write(tmp_path / "private.pem", keygen.private_pem(key))
    good = write(tmp_path / "public.pem", keygen.public_pem(key.public_key()), 0o644)
    bad = write(tmp_path / "other.pem", keygen.public_pem(other.public_key()), 0o644)
    assert await FileBackend("f", FileSettings(path=path, public_key_path=good)).list_versions()
    with pytest.raises(ConfigError, match="does not match"):
        await FileBackend("f", FileSettings(path=path, public_key_path=bad)).list_versions()


def test_creation_time_from_name() -> None:
    assert created_at_from_name("key-20261127T145700Z.pem") == datetime(
        2026, 11, 27, 14, 57, tzinfo=UTC
    )
    assert created_at_from_name("key-20261127T145700.250000Z.pem").microsecond == 250000
    assert created_at_from_name("otfd.pem") == EPOCH


@pytest.mark.parametrize(
    "name", ["key-20261399T999999Z.pem", "key-20260230T000000Z.pem", "key-00001127T145700Z.pem"]
)
async def test_impossible_timestamp_in_a_name_is_a_config_error(tmp_path: Path, name: str) -> None:
    """A name whose stamp is no date (month 13, February 30th, year 0) fails the listing with
    the file named, as an unreadable key does: no bare ValueError, no guessed creation time."""
    directory = tmp_path / "keys"
    directory.mkdir()
    secret = keygen.private_pem(keygen.generate("ec-p256"))
    write(directory / "key-20260101T000000Z.pem", keygen.private_pem(keygen.generate("ec-p256")))
    write(directory / name, secret)
    backend = FileBackend("f", FileSettings(path=directory))
    with pytest.raises(ConfigError) as info:
        await backend.list_versions()
    message = str(info.value)
    assert str(directory / name) in message and "not a valid UTC date" in message
    assert "PRIVATE" not in message
    (directory / name).rename(directory / "key-20260102T000000Z.pem")
    assert len(await backend.list_versions()) == 2  # renamed, it loads with the others
    await backend.close()


async def test_rotation_is_atomic_private_and_survives_a_copy(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    backend = FileBackend("f", FileSettings(path=directory, key_type="ec-p384"))
    first = await backend.create_version()
    second = await backend.create_version()
    assert second.created_at > first.created_at
    files = sorted(directory.iterdir())
    assert [f.name for f in files] == sorted([first.version_id, second.version_id])  # no temp left
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    # A copy (new inodes, new mtimes, like a Kubernetes Secret mount) gives the same versions.
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    for f in copy.iterdir():
        os.utime(f, (0, 0))
    listed = await FileBackend("g", FileSettings(path=copy)).list_versions()
    assert [(v.created_at, jose.thumbprint(v.public_key)) for v in listed] == [
        (first.created_at, jose.thumbprint(first.public_key)),
        (second.created_at, jose.thumbprint(second.public_key)),
    ]
    await backend.close()


async def test_rotation_keeps_the_newest_key_type(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    write(directory / "key-20260101T000000Z.pem", keygen.private_pem(keygen.generate("ed25519")))
    version = await FileBackend("f", FileSettings(path=directory)).create_version()
    assert keygen.key_type_of(version.public_key) == "ed25519"


async def test_directory_ignores_hidden_and_other_files(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    write(directory / "key-20260101T000000Z.pem", keygen.private_pem(keygen.generate("ec-p256")))
    write(directory / ".key-20260102T000000Z.pem.tmp-1", b"partial")
    write(directory / "README", b"notes", 0o644)
    (directory / "..data").mkdir()
    assert len(await FileBackend("f", FileSettings(path=directory)).list_versions()) == 1


async def test_single_file_cannot_rotate(tmp_path: Path) -> None:
    path = write(tmp_path / "k.pem", keygen.private_pem(keygen.generate("ec-p256")))
    with pytest.raises(OperationNotSupported, match="directory"):
        await FileBackend("f", FileSettings(path=path)).create_version()


async def test_revoke_renames_and_stops_listing(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    backend = FileBackend("f", FileSettings(path=directory, key_type="ec-p256"))
    version = await backend.create_version()
    await backend.create_version()
    await backend.disable_version(version)
    assert version.version_id not in [v.version_id for v in await backend.list_versions()]
    assert (directory / (version.version_id + ".revoked")).exists()
