"""Keys without a creation stamp, and `keysvc keys import`, which brings a key from elsewhere
into a key directory under a stamped name so it enters the lifecycle like a rotated key."""

from __future__ import annotations

import json
import logging
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from keysvc import jose, keygen
from keysvc.backends.file import FileBackend, FileSettings, created_at_from_name
from keysvc.errors import ConfigError
from tests.cli import assert_one_line_error, config_file, run
from tests.conftest import file_config, write_key
from tests.service import free_port, start_service

FORMATS = {
    "pkcs1": serialization.PrivateFormat.TraditionalOpenSSL,
    "pkcs8": serialization.PrivateFormat.PKCS8,
    "openssh": serialization.PrivateFormat.OpenSSH,
}


def otfd_key(path: Path, key_type: str = "ec-p256", fmt: str = "pkcs8") -> str:
    """A private key as otfd takes it (no stamp in the name); returns its kid."""
    key = keygen.generate(key_type)  # type: ignore[arg-type]
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, FORMATS[fmt], serialization.NoEncryption())
    )
    path.chmod(0o600)
    return jose.thumbprint(key.public_key())  # type: ignore[arg-type]


async def test_two_unstamped_files_are_refused_naming_both_and_the_fix(tmp_path: Path) -> None:
    """Both would count as created at the epoch: one would silently drop out of the JWKS."""
    keys = tmp_path / "keys"
    keys.mkdir()
    otfd_key(keys / "otfd.pem")
    write_key(keys)
    backend = FileBackend("local", FileSettings(path=keys))
    assert len(await backend.list_versions()) == 2  # one unstamped file is otfd's key: fine
    otfd_key(keys / "copied-in.pem")
    with pytest.raises(ConfigError) as info:
        await backend.list_versions()
    message = str(info.value)
    assert "copied-in.pem, otfd.pem" in message
    assert "keysvc keys import FILE --backend local" in message
    await backend.close()


def test_serve_refuses_two_unstamped_files_at_start(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    otfd_key(keys / "a.pem")
    otfd_key(keys / "b.pem")
    served = run("serve", "--config", str(config_file(tmp_path, keys, port=free_port())))
    assert served.returncode == 2 and "Traceback" not in served.stderr, served.stderr
    last = served.stderr.strip().splitlines()[-1]
    assert last.startswith("keysvc: error: ") and "(a.pem, b.pem)" in last
    assert "keysvc keys import" in last


async def test_refresh_refuses_a_second_unstamped_file_and_keeps_the_ring(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Copying a second key in the otfd way while serving: the refresh is refused (logged,
    naming both files) and the JWKS keeps both the keys it had, rather than one key vanishing."""
    keys = tmp_path / "keys"
    keys.mkdir()
    otfd_kid = otfd_key(keys / "otfd.pem")
    write_key(keys, "ec-p256", datetime.now(UTC) - timedelta(hours=1))
    async with start_service(file_config(keys)) as svc:
        before = sorted(k["kid"] for k in (await svc.jwks())["keys"])
        assert otfd_kid in before and len(before) == 2
        otfd_key(keys / "second.pem")
        errors = await svc.ring.refresh()
        assert isinstance(errors["local"], ConfigError)
        assert sorted(k["kid"] for k in (await svc.jwks())["keys"]) == before
        logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("otfd.pem, second.pem" in r.getMessage() for r in logged), caplog.text


def test_import_adds_a_stamped_pending_key(tmp_path: Path, key_dir: Path) -> None:
    config = config_file(tmp_path, key_dir)
    before = {p.name for p in key_dir.iterdir()}
    for fmt, key_type in (("pkcs1", "rsa-2048"), ("pkcs8", "ec-p384"), ("openssh", "ed25519")):
        source = tmp_path / f"from-elsewhere-{fmt}.pem"
        kid = otfd_key(source, key_type, fmt)
        original = source.read_bytes()
        started = datetime.now(UTC)
        result = run("keys", "import", str(source), "--config", str(config), "--json")
        assert result.returncode == 0, result.stderr
        reply = json.loads(result.stdout)
        path = Path(reply["path"])
        assert reply["kid"] == kid and reply["backend"] == "local" and path.parent == key_dir
        assert started <= created_at_from_name(path.name) <= datetime.now(UTC)
        assert reply["version"] == path.name and path.name.startswith("key-")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        loaded = serialization.load_pem_private_key(path.read_bytes(), None)
        assert jose.thumbprint(loaded.public_key()) == kid  # type: ignore[arg-type]
        assert source.read_bytes() == original  # FILE is left as it was
    listing = json.loads(run("keys", "list", "--config", str(config), "--json").stdout)["keys"]
    assert [k["state"] for k in listing] == ["active", "pending", "pending", "pending"]
    added = {p.name for p in key_dir.iterdir()} - before
    assert len(added) == 3 and all(n.endswith(".pem") for n in added)  # no temp file left


def test_import_from_standard_input_in_words(tmp_path: Path, key_dir: Path) -> None:
    source = tmp_path / "k.pem"
    kid = otfd_key(source)
    result = run("keys", "import", "-", "--config", str(config_file(tmp_path, key_dir)),
                 input=source.read_text())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"imported {kid} (ES256) into backend local as {key_dir}/key-")
    assert "published now, signs from" in result.stdout


def test_import_refuses_a_key_already_present_or_revoked(tmp_path: Path, key_dir: Path) -> None:
    config = config_file(tmp_path, key_dir)
    (present,) = key_dir.iterdir()
    assert_one_line_error(run("keys", "import", str(present), "--config", str(config)),
                          "already in the ring", f"version {present.name}")
    revoked = key_dir / "key-20200101T000000Z.pem"
    revoked_kid = otfd_key(revoked)
    assert run("keys", "revoke", revoked_kid, "--config", str(config)).returncode == 0
    copy = tmp_path / "copy.pem"
    copy.write_bytes(revoked.with_name(revoked.name + ".revoked").read_bytes())
    names = sorted(p.name for p in key_dir.iterdir())
    assert_one_line_error(run("keys", "import", str(copy), "--config", str(config)),
                          f"key {revoked_kid} was revoked")
    assert sorted(p.name for p in key_dir.iterdir()) == names
    other = tmp_path / "other"
    other.mkdir()
    (tmp_path / "two").mkdir()
    in_other = write_key(other)
    two = _two_backends(tmp_path / "two", key_dir, other)
    assert_one_line_error(
        run("keys", "import", str(in_other), "--config", str(two), "--backend", "local"),
        "already in the ring", f"backend b version {in_other.name}",
    )


def _two_backends(tmp_path: Path, first: Path, second: Path) -> Path:
    path = config_file(tmp_path, first)
    path.write_text(path.read_text() + f'[[backends]]\nname = "b"\ntype = "file"\npath = "{second}"\n')
    return path


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (lambda k: keygen.public_pem(k.public_key()), "is not a PEM private key"),
        (lambda k: b"hello\n", "is not a PEM private key"),
        (lambda k: b"", "is not a PEM private key"),
        (lambda k: b"-----BEGIN PRIVATE KEY-----\n" + b"A" * (2 << 20), "larger than"),
        (
            lambda k: k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"pass"),
            ),
            "is encrypted",
        ),
    ],
    ids=["public-key", "text", "empty", "huge", "encrypted"],
)
def test_import_refuses_what_is_not_an_unencrypted_private_key(
    tmp_path: Path, key_dir: Path, content, fragment: str  # type: ignore[no-untyped-def]
) -> None:
    source = tmp_path / "input.pem"
    source.write_bytes(content(keygen.generate("ec-p256")))
    names = sorted(p.name for p in key_dir.iterdir())
    result = run("keys", "import", str(source), "--config", str(config_file(tmp_path, key_dir)))
    assert_one_line_error(result, str(source), fragment)
    assert "PRIVATE KEY" not in result.stderr and "AAAA" not in result.stderr
    assert sorted(p.name for p in key_dir.iterdir()) == names


def test_import_needs_a_key_directory_and_a_readable_file(tmp_path: Path) -> None:
    single = tmp_path / "otfd.pem"
    otfd_key(single)
    config = config_file(tmp_path, single)
    source = tmp_path / "new.pem"
    otfd_key(source)
    assert_one_line_error(run("keys", "import", str(source), "--config", str(config)),
                          "single key file", "directory of PEM files to import")
    assert_one_line_error(run("keys", "import", str(tmp_path / "missing.pem"), "--config",
                              str(config)), "missing.pem")
