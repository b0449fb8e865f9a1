"""Vault through a real OpenBao server over TLS: `apply` logs in with the keysvc token, the
run's Vault client works with what was written, and `clean` revokes the token."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keysvc.creds import VaultLoginError, clean
from keysvc.creds.manifest import MANIFEST_NAME
from tests.creds.conftest import cli_apply_args, mode_of, run_apply, run_cli, token_file_for
from tests.creds.openbao import OpenBao, start_openbao
from tests.service import RunningService


@pytest.fixture
async def bao(tmp_path: Path, keysvc: RunningService) -> AsyncIterator[OpenBao]:
    async with start_openbao(tmp_path) as server:
        await server.trust_keysvc(keysvc.url)
        await server.ok("POST", "secret/data/app", {"data": {"password": "s3cret"}})
        yield server


def vault_env(bao: OpenBao, tag: str = "", **extra: str) -> dict[str, str]:
    return {
        f"TFC_VAULT_PROVIDER_AUTH{tag}": "true",
        f"TFC_VAULT_ADDR{tag}": bao.address,
        f"TFC_VAULT_RUN_ROLE{tag}": "tfc-role",
        f"TFC_VAULT_ENCODED_CACERT{tag}": base64.b64encode(bao.ca_file.read_bytes()).decode(),
        **extra,
    }


def read_secret_with_hvac(env: dict[str, str]) -> str:
    """The Vault client library, configured only from the variables apply printed."""
    import hvac

    client = hvac.Client(
        url=env["VAULT_ADDR"], token=env["VAULT_TOKEN"], verify=env["VAULT_CACERT"]
    )
    secret = client.secrets.kv.v2.read_secret_version(path="app", raise_on_deleted_version=True)
    return str(secret["data"]["data"]["password"])


async def test_login_write_use_and_revoke(
    bao: OpenBao, keysvc: RunningService, workdir: Path
) -> None:
    result = await run_apply(keysvc, vault_env(bao), workdir)
    token = (workdir / "vault_token").read_text()
    assert result.env == {
        "VAULT_ADDR": bao.address,
        "VAULT_TOKEN": token,
        "VAULT_CACERT": str(workdir / "vault_ca_cert.pem"),
    }
    assert (workdir / "vault_ca_cert.pem").read_bytes() == bao.ca_file.read_bytes()
    assert mode_of(workdir / "vault_token") == 0o600
    assert await asyncio.to_thread(read_secret_with_hvac, result.env) == "s3cret"

    info = await bao.ok("GET", "auth/token/lookup-self", token=token)
    assert info["data"]["display_name"] == "jwt-organization:acme:workspace:networking"
    assert "tfc" in info["data"]["policies"]
    assert info["data"]["meta"]["role"] == "tfc-role"

    record = json.loads((workdir / MANIFEST_NAME).read_text())["vault"]
    assert record == [{"token_file": "vault_token"}]  # the address is clean's to know
    assert token not in (workdir / MANIFEST_NAME).read_text()

    await asyncio.to_thread(clean, workdir, vault_env(bao))
    assert list(workdir.iterdir()) == []
    status, _ = await bao.call("GET", "auth/token/lookup-self", token=token)
    assert status == 403  # revoked


async def test_second_apply_revokes_the_first_token(
    bao: OpenBao, keysvc: RunningService, workdir: Path
) -> None:
    await run_apply(keysvc, vault_env(bao), workdir, "plan")
    plan_token = (workdir / "vault_token").read_text()
    await run_apply(keysvc, vault_env(bao), workdir, "apply")
    apply_token = (workdir / "vault_token").read_text()
    assert (await bao.call("GET", "auth/token/lookup-self", token=plan_token))[0] == 403
    assert (await bao.call("GET", "auth/token/lookup-self", token=apply_token))[0] == 200


async def test_multiple_configurations_and_auth_path(
    bao: OpenBao, keysvc: RunningService, workdir: Path
) -> None:
    await bao.trust_keysvc(keysvc.url, mount="tfc/jwt", role="other")
    env = {
        **vault_env(bao),
        **vault_env(
            bao,
            "_SECOND",
            TFC_VAULT_AUTH_PATH_SECOND="/tfc/jwt/",
            TFC_VAULT_APPLY_ROLE_SECOND="other",
        ),
    }
    result = await run_apply(keysvc, env, workdir, "apply")
    assert result.env == {}
    tfvars = json.loads((workdir / "vault_dynamic_credentials.auto.tfvars.json").read_text())
    second = {
        "token_filename": str(workdir / "vault_SECOND_token"),
        "address": bao.address,
        "namespace": "",
        "ca_cert_file": str(workdir / "vault_SECOND_ca_cert.pem"),
    }
    assert tfvars == {
        "tfc_vault_dynamic_credentials": {
            "default": {
                **second,
                "token_filename": str(workdir / "vault_token"),
                "ca_cert_file": str(workdir / "vault_ca_cert.pem"),
            },
            "aliases": {"SECOND": second},
        }
    }
    token = (workdir / "vault_SECOND_token").read_text()
    info = await bao.ok("GET", "auth/token/lookup-self", token=token)
    assert info["data"]["meta"]["role"] == "other"
    assert info["data"]["path"] == "auth/tfc/jwt/login"


async def test_refused_login_writes_nothing_and_gives_back_other_tokens(
    bao: OpenBao, keysvc: RunningService, workdir: Path, tmp_path: Path
) -> None:
    """The default configuration logs in, the tagged one is refused: one-line error, nothing
    written, and the token the first login obtained is revoked."""
    env = {**vault_env(bao), **vault_env(bao, "_B"), "TFC_VAULT_RUN_ROLE_B": "no-such-role"}
    code, out, err = await run_cli(
        *cli_apply_args(keysvc, token_file_for(keysvc, tmp_path), workdir), env=env
    )
    assert code == 2 and out == ""
    assert err.startswith(
        f"keysvc: error: Vault JWT login at {bao.address} (auth path 'jwt', "
        "role 'no-such-role') failed: HTTP 400"
    )
    assert err.count("\n") == 1
    assert list(workdir.iterdir()) == []
    tokens = await bao.ok("LIST", "auth/token/accessors")
    assert len(tokens["data"]["keys"]) == 1  # the root token alone


async def test_untrusted_certificate_is_a_clear_error(
    bao: OpenBao, keysvc: RunningService, workdir: Path
) -> None:
    env = vault_env(bao)
    del env["TFC_VAULT_ENCODED_CACERT"]
    with pytest.raises(VaultLoginError, match="TLS error: .*CERTIFICATE_VERIFY_FAILED"):
        await run_apply(keysvc, env, workdir)
    assert list(workdir.iterdir()) == []


async def test_namespace(bao: OpenBao, keysvc: RunningService, workdir: Path) -> None:
    await bao.ok("POST", "sys/namespaces/team")
    await bao.trust_keysvc(keysvc.url, namespace="team")
    env = vault_env(bao, TFC_VAULT_NAMESPACE="team")
    result = await run_apply(keysvc, env, workdir)
    assert result.env["VAULT_NAMESPACE"] == "team"
    info = await bao.ok("GET", "auth/token/lookup-self", token=result.env["VAULT_TOKEN"])
    assert info["data"]["namespace_path"] == "team/"
    await asyncio.to_thread(clean, workdir, env)
    status, _ = await bao.call(
        "GET", "auth/token/lookup-self", token=result.env["VAULT_TOKEN"], namespace="team"
    )
    assert status == 403


async def test_clean_warns_but_succeeds_when_vault_is_gone(
    keysvc: RunningService, workdir: Path, tmp_path: Path
) -> None:
    """Revocation is best effort: the files go even when Vault cannot be reached."""
    async with start_openbao(tmp_path) as server:
        await server.trust_keysvc(keysvc.url)
        env = vault_env(server)
        await run_apply(keysvc, env, workdir)
        address = server.address
    code, out, err = await run_cli("creds", "clean", "--workdir", str(workdir), env=env)
    assert code == 0 and out == ""
    assert err.startswith(f"keysvc: warning: could not revoke the Vault token at {address}: ")
    assert err.count("\n") == 1
    assert list(workdir.iterdir()) == []
