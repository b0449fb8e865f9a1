"""`clean` (and a second `apply`) in a work directory the run's Terraform code rewrote: it never
follows a symlink, opens a FIFO or device, reads outside the directory, blocks, or sends a
thing to an address the run chose. Every test runs real listeners (the Vault the runner's
environment names, and one the run would like a token sent to) and checks what reached them.
An edited manifest makes clean remove less, never more, and it says so."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from keysvc.creds import WorkdirError
from keysvc.creds.manifest import CREDENTIAL_NAME, MANIFEST_NAME
from keysvc.creds.providers import PROVIDERS
from tests.creds.conftest import run_apply, run_cli, serve, snapshot
from tests.service import RunningService

TOKEN = "hvs.CAESIJuIuV4L0gt8Q0m4p9i7p2w"
SECRET = "hvs.secret-of-the-runner-0123456789"


@dataclass
class Listener:
    """A TCP port that records every connection and every byte sent to it."""

    url: str = ""
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)


@contextlib.asynccontextmanager
async def attacker() -> AsyncIterator[Listener]:
    found = Listener()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        found.connections += 1
        with contextlib.suppress(TimeoutError, ConnectionError):
            found.received += await asyncio.wait_for(reader.read(65536), 2)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    found.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield found
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class FakeVault:
    """The Vault the runner's TFC_VAULT_* variables name: JWT logins and token revocations."""

    url: str = ""
    revoked: list[str] = field(default_factory=list)
    issued: int = 0

    def env(self, tag: str = "") -> dict[str, str]:
        return {
            f"TFC_VAULT_PROVIDER_AUTH{tag}": "true",
            f"TFC_VAULT_ADDR{tag}": self.url,
            f"TFC_VAULT_RUN_ROLE{tag}": "tfc",
        }


@pytest.fixture
async def vault() -> AsyncIterator[FakeVault]:
    state = FakeVault()

    async def login(request: web.Request) -> web.Response:
        state.issued += 1
        return web.json_response({"auth": {"client_token": f"hvs.issued{state.issued}"}})

    async def revoke(request: web.Request) -> web.Response:
        state.revoked.append(request.headers["X-Vault-Token"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/v1/auth/jwt/login", login)
    app.router.add_post("/v1/auth/token/revoke-self", revoke)
    async with serve(app) as url:
        state.url = url
        yield state


def plant(workdir: Path, record: dict[str, Any] | None = None, files: list[str] | None = None) -> None:
    """What the run leaves: a manifest naming a Vault token file (with `record`'s fields)."""
    manifest = {
        "keysvc_creds": 1,
        "files": files if files is not None else ["vault_token"],
        "vault": [{"token_file": "vault_token", **(record or {})}],
    }
    (workdir / MANIFEST_NAME).write_text(json.dumps(manifest))


async def clean(workdir: Path, env: dict[str, str]) -> tuple[int, str, str]:
    return await run_cli("creds", "clean", "--workdir", str(workdir), env=env, timeout=60)


async def test_the_manifests_address_and_ca_are_never_used(
    vault: FakeVault, workdir: Path
) -> None:
    """Was: clean POSTed the token as X-Vault-Token to the address in the manifest. Now the
    token goes to the Vault of clean's own environment, and the run's listener gets nothing."""
    async with attacker() as evil:
        (workdir / "vault_token").write_text(TOKEN)
        (workdir / "vault_ca_cert.pem").write_text("the run's own CA\n")
        plant(
            workdir,
            {"address": evil.url, "namespace": "x", "timeout": 60, "ca_cert_file": "vault_ca_cert.pem"},
            files=["vault_ca_cert.pem", "vault_token"],
        )
        code, out, err = await clean(workdir, vault.env())
    assert (code, out, err) == (0, "", "")
    assert vault.revoked == [TOKEN]
    assert evil.connections == 0
    assert list(workdir.iterdir()) == []


async def test_a_token_file_swapped_for_a_symlink_is_never_read(
    vault: FakeVault, workdir: Path, tmp_path: Path
) -> None:
    """Was: the file the symlink points at (outside the directory) was read and its contents
    sent to the manifest's listener. Now it is not read: the link goes, its target stays."""
    secret = tmp_path / "runner-secret"
    secret.write_text(SECRET)
    async with attacker() as evil:
        (workdir / "vault_token").symlink_to(secret)
        plant(workdir, {"address": evil.url})
        code, out, err = await clean(workdir, vault.env())
    assert (code, out) == (0, "")
    assert err == (
        "keysvc: warning: the Vault token in vault_token was not revoked: vault_token is a"
        " symbolic link, not the file keysvc wrote\n"
    )
    assert evil.connections == 0 and vault.revoked == []
    assert secret.read_text() == SECRET and list(workdir.iterdir()) == []


async def test_a_hard_link_to_a_file_outside_is_never_read(
    vault: FakeVault, workdir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "runner-secret"
    secret.write_text(SECRET)
    os.link(secret, workdir / "vault_token")
    plant(workdir)
    code, out, err = await clean(workdir, vault.env())
    assert code == 0 and "vault_token has other hard links" in err
    assert vault.revoked == []
    assert secret.read_text() == SECRET and list(workdir.iterdir()) == []


@pytest.mark.parametrize("name", ["vault_token", "aws_token", MANIFEST_NAME])
async def test_a_fifo_never_blocks_clean(vault: FakeVault, workdir: Path, name: str) -> None:
    """Was: a FIFO named like a credential file made clean hang forever, removing nothing."""
    (workdir / "aws_token").write_text("a token\n")
    plant(workdir, files=["aws_token", "vault_token"])
    (workdir / name).unlink(missing_ok=True)
    os.mkfifo(workdir / name)
    code, out, err = await clean(workdir, vault.env())
    if name == MANIFEST_NAME:  # nothing says what apply wrote: nothing is removed
        assert (code, out) == (2, "")
        assert err.startswith(f"keysvc: error: {workdir / name} is not a regular file; nothing")
        assert sorted(p.name for p in workdir.iterdir()) == [MANIFEST_NAME, "aws_token"]
    else:
        assert (code, out) == (0, "")
        assert list(workdir.iterdir()) == []  # the FIFO's name is removed like any other
    assert vault.revoked == []


async def test_a_device_is_never_opened(vault: FakeVault, workdir: Path) -> None:
    """A character device (here /dev/zero's numbers) named like the token: never opened, never
    read (it would never end), its name removed."""
    os.mknod(workdir / "vault_token", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    plant(workdir)
    code, out, err = await clean(workdir, vault.env())
    assert code == 0 and "vault_token is not a regular file" in err
    assert vault.revoked == [] and list(workdir.iterdir()) == []


async def test_huge_files_are_not_read(vault: FakeVault, workdir: Path) -> None:
    (workdir / "vault_token").write_text("A" * 100_000)
    plant(workdir)
    code, _, err = await clean(workdir, vault.env())
    assert code == 0 and "vault_token is larger than 16384 bytes" in err
    assert vault.revoked == [] and list(workdir.iterdir()) == []
    (workdir / MANIFEST_NAME).write_bytes(b" " * (2 << 20) + b"{}")
    code, _, err = await clean(workdir, vault.env())
    assert code == 2 and "is larger than 1048576 bytes; nothing was removed" in err


async def test_a_symlinked_manifest_is_refused(workdir: Path, tmp_path: Path) -> None:
    """It could name files of another directory's manifest, or be a link to anything."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "aws_token").write_text("keep\n")
    (elsewhere / MANIFEST_NAME).write_text(
        json.dumps({"keysvc_creds": 1, "files": ["aws_token"], "vault": []})
    )
    (workdir / "aws_token").write_text("keep too\n")
    (workdir / MANIFEST_NAME).symlink_to(elsewhere / MANIFEST_NAME)
    before = snapshot(tmp_path)
    code, out, err = await clean(workdir, {})
    assert (code, out) == (2, "")
    assert err.startswith(f"keysvc: error: {workdir / MANIFEST_NAME} is a symbolic link; nothing")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "files",
    [["../victim"], ["/etc/passwd"], ["main.tf"], ["."], [".."], [".terraform"], ["aws_token/x"]],
    ids=str,
)
async def test_a_manifest_naming_what_apply_never_writes_removes_nothing(
    workdir: Path, tmp_path: Path, files: list[str]
) -> None:
    (tmp_path / "victim").write_text("keep\n")
    (workdir / "main.tf").write_text("keep\n")
    (workdir / ".terraform").mkdir()
    (workdir / "aws_token").write_text("a credential\n")
    (workdir / MANIFEST_NAME).write_text(
        json.dumps({"keysvc_creds": 1, "files": ["aws_token", *files], "vault": []})
    )
    before = snapshot(tmp_path)
    code, out, err = await clean(workdir, {})
    assert (code, out) == (2, "") and "is not a keysvc credentials manifest" in err
    assert snapshot(tmp_path) == before


async def test_a_symlinked_work_directory_is_refused(tmp_path: Path) -> None:
    """The run swapped its directory (or a parent it owns) for a link to somewhere holding a
    manifest and files of the same names."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "aws_token").write_text("not the run's\n")
    (elsewhere / MANIFEST_NAME).write_text(
        json.dumps({"keysvc_creds": 1, "files": ["aws_token"], "vault": []})
    )
    (tmp_path / "work").symlink_to(elsewhere)
    code, _, err = await clean(tmp_path / "work", {})
    assert code == 2 and err == (
        f"keysvc: error: work directory {tmp_path / 'work'} is a symbolic link; give the"
        " directory itself\n"
    )
    parent = tmp_path / "run"
    parent.symlink_to(tmp_path)  # /…/run/elsewhere, where run is the run's own link
    os.lchown(parent, 10001, 10001)
    code, _, err = await clean(parent / "elsewhere", {})
    assert code == 2 and "run is a symbolic link not owned by root" in err
    assert (elsewhere / "aws_token").exists()
    os.lchown(parent, 0, 0)  # a link root made (as /var/run -> /run) is followed
    code, out, err = await clean(parent / "elsewhere", {})
    assert (code, err) == (0, "") and list(elsewhere.iterdir()) == []


async def test_without_vault_settings_the_token_goes_nowhere(workdir: Path) -> None:
    async with attacker() as evil:
        (workdir / "vault_token").write_text(TOKEN)
        plant(workdir, {"address": evil.url})
        code, out, err = await clean(workdir, {})
        bad, _, bad_err = await clean(workdir, {})
    assert (code, out) == (0, "")
    assert err == (
        "keysvc: warning: the Vault token in vault_token was not revoked:"
        " TFC_VAULT_PROVIDER_AUTH and TFC_VAULT_ADDR are not set where keysvc runs (the Vault"
        " address is never taken from the work directory)\n"
    )
    assert evil.connections == 0 and list(workdir.iterdir()) == []
    assert (bad, bad_err) == (0, "")  # nothing left to remove


async def test_a_directory_in_place_of_a_file_is_left_and_reported(workdir: Path) -> None:
    (workdir / "aws_token").mkdir()
    (workdir / "aws_config.ini").write_text("x\n")
    (workdir / MANIFEST_NAME).write_text(
        json.dumps({"keysvc_creds": 1, "files": ["aws_config.ini", "aws_token"], "vault": []})
    )
    code, out, err = await run_cli(
        "creds", "clean", "--workdir", str(workdir), "--json", env={}, timeout=60
    )
    assert code == 0 and json.loads(out) == {"removed": [str(workdir / "aws_config.ini")]}
    assert err == (
        f"keysvc: warning: {workdir / 'aws_token'} is a directory, not a file keysvc wrote:"
        " left in place\n"
    )
    assert [p.name for p in workdir.iterdir()] == ["aws_token"]


async def test_a_second_apply_revokes_the_first_token_at_its_own_vault(
    keysvc: RunningService, vault: FakeVault, workdir: Path
) -> None:
    """apply replaces what an earlier apply wrote, revoking its token: at the Vault of apply's
    environment too, not at the address the run wrote into the manifest in between."""
    await run_apply(keysvc, vault.env(), workdir, "plan")
    first = (workdir / "vault_token").read_text()
    recorded = json.loads((workdir / MANIFEST_NAME).read_text())
    assert recorded["vault"] == [{"token_file": "vault_token"}]  # no address to edit
    async with attacker() as evil:
        recorded["vault"][0]["address"] = evil.url
        (workdir / MANIFEST_NAME).write_text(json.dumps(recorded))
        await run_apply(keysvc, vault.env(), workdir, "apply")
    assert vault.revoked == [first] and evil.connections == 0
    code, _, err = await clean(workdir, vault.env())
    assert (code, err) == (0, "") and vault.revoked == [first, "hvs.issued2"]


def test_every_name_a_provider_writes_is_one_clean_accepts() -> None:
    """The manifest check is built from the providers' declared names; a render that used
    another name would fail (FileNames refuses it), and these are what clean accepts."""
    for provider in PROVIDERS:
        for tag in ("", "_A", "_team_2"):
            for name in provider.files:
                assert CREDENTIAL_NAME.fullmatch(f"{provider.provider}{tag}_{name}")
        assert CREDENTIAL_NAME.fullmatch(f"{provider.provider}_dynamic_credentials.auto.tfvars.json")
    for other in ("main.tf", "aws_token.bak", "aws_", "_token", "aws_TYPE", "gcp_config.ini"):
        assert not CREDENTIAL_NAME.fullmatch(other), other


async def test_apply_refuses_a_symlinked_work_directory(
    keysvc: RunningService, tmp_path: Path
) -> None:
    """apply writes only into the directory itself: a link would put the credentials (and the
    manifest clean trusts) wherever it points."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "work").symlink_to(elsewhere)
    env = {"TFC_AWS_PROVIDER_AUTH": "true", "TFC_AWS_RUN_ROLE_ARN": "arn:aws:iam::1:role/r"}
    with pytest.raises(WorkdirError, match="work/? is a symbolic link; give the directory itself"):
        await run_apply(keysvc, env, tmp_path / "work")
    assert list(elsewhere.iterdir()) == []
