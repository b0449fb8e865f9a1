"""`keysvc creds apply|clean` as a runner calls them: output formats, the same paths for plan
and apply, and the import boundary (no backend, key ring or private key inside a run)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from keysvc.creds.output import dotenv
from tests.creds.conftest import REPO, cli_apply_args, run_cli, token_file_for, verified
from tests.service import RunningService

ENV = {
    "TFC_AWS_PROVIDER_AUTH": "true",
    "TFC_AWS_RUN_ROLE_ARN": "arn:aws:iam::1:role/r",
    "TFC_AZURE_PROVIDER_AUTH": "true",
    "TFC_AZURE_RUN_CLIENT_ID": "c-1",
}


def parse_dotenv(text: str) -> dict[str, str]:
    """Read dotenv output the way a POSIX shell would (`set -a; . file`)."""
    script = f"set -a\n{text}\nenv -0"
    out = subprocess.run(["sh", "-c", script], env={}, capture_output=True, check=True).stdout
    pairs = (item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith(("AWS_", "ARM_"))}


async def test_dotenv_and_json_print_the_same_variables(
    keysvc: RunningService, tmp_path: Path
) -> None:
    workdir = tmp_path / "a work dir with $pace"
    workdir.mkdir()
    token = token_file_for(keysvc, tmp_path)
    code, out, err = await run_cli(*cli_apply_args(keysvc, token, workdir), env=ENV)
    assert code == 0 and err == ""
    from_dotenv = parse_dotenv(out)
    code, out, err = await run_cli(
        *cli_apply_args(keysvc, token, workdir, "apply", "--format", "json"), env=ENV
    )
    assert code == 0 and err == ""
    from_json = json.loads(out)
    assert list(from_json) == [
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "ARM_CLIENT_ID",
        "ARM_OIDC_TOKEN",
        "ARM_USE_OIDC",
    ]
    # plan and apply name the same files; the tokens differ by phase
    assert {k: v for k, v in from_dotenv.items() if k != "ARM_OIDC_TOKEN"} == {
        k: v for k, v in from_json.items() if k != "ARM_OIDC_TOKEN"
    }
    assert from_json["AWS_WEB_IDENTITY_TOKEN_FILE"] == str(workdir / "aws_token")
    await verified(keysvc, from_dotenv["ARM_OIDC_TOKEN"], "api://AzureADTokenExchange", "plan")
    await verified(keysvc, from_json["ARM_OIDC_TOKEN"], "api://AzureADTokenExchange", "apply")


def test_dotenv_quotes_only_what_needs_it() -> None:
    assert dotenv({"A": "arn:aws:iam::1:role/r", "B": '/x y/$z"`\\'}) == (
        'A=arn:aws:iam::1:role/r\nB="/x y/\\$z\\"\\`\\\\"\n'
    )


async def test_no_provider_prints_no_variables_and_says_why(
    keysvc: RunningService, workdir: Path, tmp_path: Path
) -> None:
    token = token_file_for(keysvc, tmp_path)
    code, out, _ = await run_cli(*cli_apply_args(keysvc, token, workdir, "plan"), env=ENV)
    assert code == 0 and (workdir / "aws_token").exists()
    for output_format in ("dotenv", "json"):
        code, out, err = await run_cli(
            *cli_apply_args(keysvc, token, workdir, "apply", "--format", output_format), env={}
        )
        assert code == 0
        assert out == ("" if output_format == "dotenv" else "{}\n")
        # Not silent: the plan phase's files are gone, and the run is told why it gets none.
        assert err.startswith("keysvc: warning: no provider is enabled"), err
        assert "TFC_<AWS|GCP|AZURE|VAULT|KUBERNETES>_PROVIDER_AUTH" in err and str(workdir) in err
    assert list(workdir.iterdir()) == []


async def test_env_file_is_a_credential_file(
    keysvc: RunningService, workdir: Path, tmp_path: Path
) -> None:
    """--env-file: the variables (a token among them) go to a 0600 file inside the work
    directory that is in the manifest, replaced by the next apply and removed by clean."""
    token = token_file_for(keysvc, tmp_path)
    args = cli_apply_args(keysvc, token, workdir, "plan")
    code, out, err = await run_cli(*args, "--env-file", "keysvc.env", env=ENV)
    assert (code, out, err) == (0, "", "")
    written = workdir / "keysvc.env"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    variables = parse_dotenv(written.read_text())
    await verified(keysvc, variables["ARM_OIDC_TOKEN"], "api://AzureADTokenExchange", "plan")
    assert "keysvc.env" in json.loads((workdir / ".keysvc-creds.json").read_text())["files"]
    # The apply phase replaces it (a path naming the work directory works too), as JSON.
    apply_args = cli_apply_args(keysvc, token, workdir, "apply", "--format", "json")
    code, out, err = await run_cli(*apply_args, "--env-file", str(written), env=ENV)
    assert (code, out) == (0, "")
    assert set(json.loads(written.read_text())) >= {"ARM_OIDC_TOKEN", "AWS_ROLE_ARN"}
    code, out, _ = await run_cli("creds", "clean", "--workdir", str(workdir), "--json", env={})
    assert code == 0 and str(written) in json.loads(out)["removed"]
    assert list(workdir.iterdir()) == []


async def test_env_file_must_be_apply_s_own_file_inside_the_work_directory(
    keysvc: RunningService, workdir: Path, tmp_path: Path
) -> None:
    token = token_file_for(keysvc, tmp_path)
    args = cli_apply_args(keysvc, token, workdir, "plan")
    elsewhere = tmp_path / "keysvc.env"
    mine = workdir / "keysvc_mine.env"
    mine.write_text("KEEP=1\n")
    for env_file, fragment in (
        (str(elsewhere), "directly inside the work directory"),
        ("sub/keysvc.env", "directly inside the work directory"),
        ("..", "must be named keysvc.env, keysvc.json or keysvc_<NAME>.env|.json"),
        (".keysvc-creds.json", "must be named keysvc.env"),
        ("aws_token", "must be named keysvc.env"),
        ("main.tf", "must be named keysvc.env"),
        ("keysvc_mine.env", "was not written by keysvc"),
    ):
        code, out, err = await run_cli(*args, "--env-file", env_file, env=ENV)
        assert code == 2 and out == "", (env_file, err)
        assert err.startswith("keysvc: error: ") and fragment in err, (env_file, err)
    assert sorted(p.name for p in workdir.iterdir()) == ["keysvc_mine.env"]
    assert mine.read_text() == "KEEP=1\n" and not elsewhere.exists()


async def test_json_flags(keysvc: RunningService, workdir: Path, tmp_path: Path) -> None:
    """`--json`, as every keysvc command has: apply prints the variables, clean what it removed."""
    token = token_file_for(keysvc, tmp_path)
    code, out, _ = await run_cli(*cli_apply_args(keysvc, token, workdir, "plan", "--json"), env=ENV)
    assert code == 0 and json.loads(out)["ARM_USE_OIDC"] == "true"
    code, out, _ = await run_cli("creds", "clean", "--workdir", str(workdir), "--json", env={})
    assert code == 0
    assert sorted(json.loads(out)["removed"]) == sorted(
        str(workdir / n) for n in ("aws_config.ini", "aws_token", "azure_client_id", "azure_token")
    )
    code, out, _ = await run_cli("creds", "clean", "--workdir", str(workdir), "--json", env={})
    assert (code, json.loads(out)) == (0, {"removed": []})


async def test_help() -> None:
    for command in ("apply", "clean"):
        code, out, _ = await run_cli("creds", command, "--help", env={})
        assert code == 0 and "--workdir" in out


FORBIDDEN = (
    "keysvc.keyring",
    "keysvc.tokens",
    "keysvc.app",
    "keysvc.service",
    "keysvc.keygen",
    "keysvc.config",
    "keysvc.backends.file",
    "keysvc.backends.vault",
    "keysvc.backends.aws_kms",
    "keysvc.backends.gcp_kms",
    "keysvc.backends.azure_kv",
    "keysvc.backends.pkcs11",
    "aiohttp",
    "hvac",
    "boto3",
    "botocore",
    "google",
    "azure",
)


def loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_the_run_side_imports_no_backend_key_ring_or_server() -> None:
    package = loaded_after("import keysvc.creds")
    assert not {m for m in package if m.startswith(("keysvc.backends", "keysvc.jose"))}
    assert "cryptography" not in package  # no key material is ever handled here
    command = loaded_after("from keysvc.cli import cli; cli.get_command(None, 'creds')")
    assert "keysvc.cli.creds" in command
    assert not {m for m in command if m.split(".")[0] in FORBIDDEN or m in FORBIDDEN}
