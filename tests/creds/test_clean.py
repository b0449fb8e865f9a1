"""`clean` removes exactly what `apply` wrote; a second `apply` replaces the first; a failure
while writing leaves no credentials at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from keysvc.creds import WorkdirError, clean
from keysvc.creds.manifest import MANIFEST_NAME
from tests.creds.conftest import cli_apply_args, run_apply, run_cli, snapshot, token_file_for
from tests.service import RunningService

EVERYTHING = {
    "TFC_AWS_PROVIDER_AUTH": "true",
    "TFC_AWS_RUN_ROLE_ARN": "arn:aws:iam::1:role/r",
    "TFC_GCP_PROVIDER_AUTH_A": "true",
    "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL_A": "t@p.iam.gserviceaccount.com",
    "TFC_GCP_WORKLOAD_PROVIDER_NAME_A": "projects/1/locations/global/workloadIdentityPools/p/providers/q",
    "TFC_AZURE_PROVIDER_AUTH": "true",
    "TFC_AZURE_RUN_CLIENT_ID": "c",
    "TFC_KUBERNETES_PROVIDER_AUTH": "true",
    "TFC_KUBERNETES_WORKLOAD_IDENTITY_AUDIENCE": "k",
    "TFC_WORKLOAD_IDENTITY_AUDIENCE": "manual",
}


def user_files(workdir: Path) -> None:
    """A Terraform configuration with names close to keysvc's own."""
    (workdir / "main.tf").write_text('provider "aws" {}\n')
    (workdir / "aws_token.bak").write_text("mine\n")
    (workdir / "terraform.tfvars").write_text('region = "eu"\n')
    (workdir / ".terraform").mkdir()
    (workdir / ".terraform" / "aws_token").write_text("also mine\n")


async def test_clean_after_apply_leaves_the_workdir_as_it_was(
    keysvc: RunningService, workdir: Path, tmp_path: Path
) -> None:
    user_files(workdir)
    before = snapshot(workdir)
    token = token_file_for(keysvc, tmp_path)
    for phase in ("plan", "apply"):
        code, _, err = await run_cli(*cli_apply_args(keysvc, token, workdir, phase), env=EVERYTHING)
        assert code == 0, err
        assert len(snapshot(workdir)) == len(before) + 9  # 8 credential files + manifest
    code, out, err = await run_cli("creds", "clean", "--workdir", str(workdir), env={})
    assert (code, out, err) == (0, "", "")
    assert snapshot(workdir) == before


async def test_clean_with_nothing_to_remove_succeeds(workdir: Path, tmp_path: Path) -> None:
    user_files(workdir)
    before = snapshot(workdir)
    for directory in (workdir, tmp_path / "never-created"):
        code, out, err = await run_cli("creds", "clean", "--workdir", str(directory), env={})
        assert (code, out, err) == (0, "", "")
    assert clean(workdir) == []
    assert snapshot(workdir) == before


async def test_second_apply_replaces_the_first(keysvc: RunningService, workdir: Path) -> None:
    first = await run_apply(keysvc, EVERYTHING, workdir, "plan")
    plan_token = (workdir / "aws_token").read_text()
    only_aws = {k: v for k, v in EVERYTHING.items() if k.startswith("TFC_AWS")}
    second = await run_apply(keysvc, only_aws, workdir, "apply")
    assert sorted(p.name for p in workdir.iterdir()) == [
        MANIFEST_NAME,
        "aws_config.ini",
        "aws_token",
    ]
    assert second.env["AWS_WEB_IDENTITY_TOKEN_FILE"] == first.env["AWS_WEB_IDENTITY_TOKEN_FILE"]
    assert (workdir / "aws_token").read_text() != plan_token
    assert json.loads((workdir / MANIFEST_NAME).read_text())["files"] == [
        "aws_config.ini",
        "aws_token",
    ]
    assert sorted(p.name for p in clean(workdir)) == ["aws_config.ini", "aws_token"]
    assert list(workdir.iterdir()) == []


async def test_apply_with_nothing_enabled_removes_an_earlier_apply(
    keysvc: RunningService, workdir: Path
) -> None:
    await run_apply(keysvc, EVERYTHING, workdir)
    result = await run_apply(keysvc, {}, workdir)
    assert result.env == {} and result.files == []
    assert list(workdir.iterdir()) == []


async def test_a_file_keysvc_did_not_write_is_never_overwritten(
    keysvc: RunningService, workdir: Path
) -> None:
    (workdir / "aws_config.ini").write_text("[default]\nregion = eu-west-1\n")
    before = snapshot(workdir)
    with pytest.raises(WorkdirError, match="aws_config.ini exists and was not written by keysvc"):
        await run_apply(keysvc, EVERYTHING, workdir)
    assert snapshot(workdir) == before


async def test_failure_while_writing_removes_every_credential(
    keysvc: RunningService, workdir: Path
) -> None:
    """The second apply cannot replace one of its files (a directory took its place): neither
    its own files nor the first apply's survive, and the manifest is gone."""
    user_files(workdir)
    before = snapshot(workdir)
    await run_apply(keysvc, EVERYTHING, workdir)
    (workdir / "kubernetes_token").unlink()
    (workdir / "kubernetes_token").mkdir()
    with pytest.raises(WorkdirError, match="writing credentials to .*kubernetes_token failed"):
        await run_apply(keysvc, EVERYTHING, workdir)
    os.rmdir(workdir / "kubernetes_token")
    assert snapshot(workdir) == before


def test_manifest_cannot_point_outside_the_workdir(workdir: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (workdir / MANIFEST_NAME).write_text(
        json.dumps({"keysvc_creds": 1, "files": ["../victim"], "vault": []})
    )
    with pytest.raises(WorkdirError, match="is not a keysvc credentials manifest"):
        clean(workdir)
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[]", "is not a keysvc credentials manifest"),
        (b'"aws_token"', "is not a keysvc credentials manifest"),
        (b"null", "is not a keysvc credentials manifest"),
        (b"\xff\xfe not json", "cannot be read (it is not JSON)"),
        (b"[" * 100_000, "cannot be read (it is not JSON)"),
        (
            json.dumps(
                {"keysvc_creds": 1, "files": ["vault_token"], "vault": [{"token_file": "../t"}]}
            ).encode(),
            "is not a keysvc credentials manifest",
        ),
        (
            json.dumps({"keysvc_creds": 1, "files": ["aws\ntoken"], "vault": []}).encode(),
            "is not a keysvc credentials manifest",
        ),
    ],
    ids=["list", "string", "null", "not-utf8", "deep", "token-outside", "newline-name"],
)
async def test_unreadable_manifest_is_one_line_and_nothing_is_removed(
    content: bytes, problem: str, workdir: Path
) -> None:
    """Was an AttributeError traceback for a JSON list. `clean` cannot know what `apply` wrote,
    so it removes nothing at all (not even files with keysvc's names) and says so; `apply`
    refuses the directory the same way rather than overwrite what it cannot account for."""
    user_files(workdir)
    (workdir / "aws_token").write_text("a credential, or the user's own file\n")
    (workdir / MANIFEST_NAME).write_bytes(content)
    before = snapshot(workdir)
    code, out, err = await run_cli("creds", "clean", "--workdir", str(workdir), env={})
    assert (code, out) == (2, "")
    assert err == (
        f"keysvc: error: {workdir / MANIFEST_NAME} {problem}; nothing was removed or replaced"
        " (remove the files keysvc wrote there, then this file, by hand)\n"
    )
    assert snapshot(workdir) == before


async def test_apply_refuses_a_workdir_with_an_unreadable_manifest(
    keysvc: RunningService, workdir: Path
) -> None:
    (workdir / MANIFEST_NAME).write_text("[]")
    with pytest.raises(WorkdirError, match="is not a keysvc credentials manifest; nothing was"):
        await run_apply(keysvc, EVERYTHING, workdir)
    assert [p.name for p in workdir.iterdir()] == [MANIFEST_NAME]


async def clean_with_vault_record(
    workdir: Path, files: list[str], record: dict[str, object]
) -> str:
    """`creds clean` over a manifest listing `files` and one Vault token record (a valid one,
    with `record`'s fields over it): it must succeed and leave the workdir empty. Its stderr."""
    manifest = {
        "keysvc_creds": 1,
        "files": files,
        "vault": [
            {
                "address": "http://127.0.0.1:1",
                "namespace": None,
                "timeout": 1,
                "token_file": "vault_token",
                "ca_cert_file": None,
                **record,
            }
        ],
    }
    (workdir / MANIFEST_NAME).write_text(json.dumps(manifest))
    code, out, err = await run_cli("creds", "clean", "--workdir", str(workdir), env={})
    assert (code, out) == (0, "")
    assert list(workdir.iterdir()) == []
    return err


@pytest.mark.parametrize(
    "record",
    [
        {"namespace": "a\nb"},
        {"namespace": ["team"]},
        {"timeout": [1]},
        {"timeout": "soon"},
        {"address": "http://127.0.0.1:abc"},
        {"address": "http://root:s3cret@127.0.0.1:1"},
        {"address": 8200},
        {"address": "https://127.0.0.1:1", "ca_cert_file": "vault_ca_cert.pem"},  # not a cert
    ],
    ids=lambda r: "-".join(f"{k}={v!r}" for k, v in r.items()),
)
async def test_clean_with_an_edited_vault_record_removes_files_without_sending_the_token(
    record: dict[str, object], workdir: Path
) -> None:
    """A manifest whose Vault record carries fields an older keysvc wrote, edited (bad header,
    timeout or address, a CA file that does not load): they are ignored, the token is sent
    only where clean's environment says (here nowhere: a warning says it was not revoked), the
    files still go. Were TypeError/ValueError/SSLError tracebacks (or an exit 2 leaving the
    files), one of them quoting the Vault token."""
    token = "hvs.s3cretVaultToken"
    (workdir / "vault_token").write_text(token)
    (workdir / "vault_ca_cert.pem").write_text("not a certificate\n")
    err = await clean_with_vault_record(workdir, ["vault_ca_cert.pem", "vault_token"], record)
    assert err == (
        "keysvc: warning: the Vault token in vault_token was not revoked:"
        " TFC_VAULT_PROVIDER_AUTH and TFC_VAULT_ADDR are not set where keysvc runs (the Vault"
        " address is never taken from the work directory)\n"
    )
    assert token not in err


async def test_clean_never_sends_a_token_file_that_is_not_one_token(workdir: Path) -> None:
    """The token file was edited to hold a second line: it is not sent as a header (http.client
    would refuse it with a message quoting it, in a traceback); the files still go."""
    (workdir / "vault_token").write_text("hvs.s3cretVaultToken\nX-Injected: 1\n")
    err = await clean_with_vault_record(workdir, ["vault_token"], {})
    assert err == (
        "keysvc: warning: the Vault token in vault_token was not revoked: the file was not"
        " written by keysvc\n"
    )


async def test_workdir_path_with_a_newline_is_refused(
    keysvc: RunningService, tmp_path: Path
) -> None:
    """Its path goes into aws_config.ini, a line-based file: a newline there would add a line."""
    workdir = tmp_path / "work\nrole_arn = arn:aws:iam::2:role"
    workdir.mkdir()
    token = token_file_for(keysvc, tmp_path)
    code, out, err = await run_cli(*cli_apply_args(keysvc, token, workdir), env=EVERYTHING)
    assert (code, out) == (2, "")
    assert err.startswith(
        "keysvc: error: the work directory path must be a single line of printable characters"
    )
    assert err.count("\n") == 1
    assert list(workdir.iterdir()) == []
