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
    "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL_A": "t@p.iam",
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
