"""A third-party backend, as a separate package would ship it: found through its entry point
with no change to keysvc, checked by keysvc.testing.backend_contract without pytest, and told
apart by its capabilities (it lists and signs only, so the CLI says it cannot rotate or revoke
before trying)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from keysvc import jose
from tests import cli
from tests.conftest import write_key

PLUGIN = '''
"""acme_keys: the PEM files of a directory, listed and signed; no rotation, no revocation."""
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from keysvc import jose
from keysvc.backends import BackendSettings, KeyBackend, KeyVersion


class PemSettings(BackendSettings):
    path: Path


class PemBackend(KeyBackend):
    Settings = PemSettings

    async def list_versions(self):
        versions = []
        for path in sorted(self.settings.path.glob("*.pem")):
            key = serialization.load_pem_private_key(path.read_bytes(), None)
            created = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            versions.append(KeyVersion(path.name, created, key.public_key(), handle=key))
        return versions

    async def sign(self, version, alg, message):
        return jose.sign_local(version.handle, alg, message)
'''

OWN_TESTS = '''
"""The plugin's own contract run: plain asyncio, no pytest."""
import asyncio
import os
import sys
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keysvc.testing.backend_contract import ContractSubject, run_contract

from acme_keys import PemBackend, PemSettings


class Subject(ContractSubject):
    backend_class = PemBackend

    def make_backend(self):
        return PemBackend("acme", PemSettings(path=Path(sys.argv[1])))

    async def add_version(self, backend):
        """The backend cannot create versions: add a key the way its operators do."""
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = Path(sys.argv[1]) / f"{uuid.uuid4().hex}.pem"
        path.write_bytes(pem)
        os.chmod(path, 0o600)


print(" ".join(asyncio.run(run_contract(Subject()))))
'''


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    """A directory holding the installed plugin: its module and its dist-info (entry point)."""
    site = tmp_path / "site"
    (site / "acme_keys").mkdir(parents=True)
    (site / "acme_keys" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    (site / "acme_keys" / "contract_check.py").write_text(textwrap.dedent(OWN_TESTS))
    info = site / "acme_keys-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-keys\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[keysvc.backends]\nacme_pem = acme_keys:PemBackend\n")
    return site


def environment(plugin_path: Path) -> dict[str, str]:
    """The plugin found on PYTHONPATH: a process of its own (cli.run_process) sees it."""
    return {"PYTHONPATH": os.pathsep.join([str(plugin_path), *sys.path[1:]])}


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "acme-keys"
    directory.mkdir()
    write_key(directory, "ec-p256")
    return directory


def test_the_plugins_own_contract_run_needs_no_pytest(plugin_path: Path, keys: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "acme_keys.contract_check", str(keys)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, **environment(plugin_path)},
    )
    assert result.returncode == 0, result.stderr
    # A backend that lists and signs only: the checks for capabilities it lacks and for outages
    # it cannot have are not selected; every other one ran and passed.
    assert result.stdout.split() == [
        "listing_is_stable", "signatures_verify", "signature_is_by_the_requested_version",
        "close_works",
    ]


def test_the_cli_uses_the_plugin_and_says_what_it_cannot_do(
    plugin_path: Path, keys: Path, tmp_path: Path
) -> None:
    (key,) = keys.iterdir()
    public = serialization.load_pem_private_key(key.read_bytes(), None).public_key()
    config = tmp_path / "keysvc.toml"
    config.write_text(
        'issuer = "https://keys.example.com"\n[[backends]]\nname = "acme"\ntype = "acme_pem"\n'
        f'path = "{keys}"\n'
    )
    env = environment(plugin_path)
    listed = cli.run_process("keys", "list", "--config", str(config), "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["keys"]
    assert row["backend"] == "acme" and row["alg"] == "ES256"
    assert row["kid"] == jose.thumbprint(public)  # type: ignore[arg-type]

    rotated = cli.run_process("keys", "rotate", "--config", str(config), env=env)
    cli.assert_one_line_error(
        rotated, "backend 'acme' cannot rotate: PemBackend has no CreatesVersions capability"
    )
    revoked = cli.run_process("keys", "revoke", row["kid"], "--config", str(config), env=env)
    cli.assert_one_line_error(
        revoked, "still listed", "backend 'acme' cannot revoke: PemBackend has no"
        " DisablesVersions capability"
    )


def test_errors_list_the_plugins_type_with_the_built_in_ones(
    plugin_path: Path, tmp_path: Path
) -> None:
    """The backend types an error lists come from the entry points, so installed plugins too."""
    config = tmp_path / "keysvc.toml"
    for table, problem in (
        ('path = "/keys"\n', "backends[0]: type is required (acme_pem, aws_kms, azure_kv, file,"),
        ('type = "acme"\n', "backends[0]: unknown backend type 'acme' (known: acme_pem, aws_kms,"),
    ):
        config.write_text(f'issuer = "https://keys.example.com"\n[[backends]]\n{table}')
        listed = cli.run_process("keys", "list", "--config", str(config), env=environment(plugin_path))
        cli.assert_one_line_error(listed, problem)
