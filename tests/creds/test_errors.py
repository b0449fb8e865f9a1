"""Bad input through the command line: one line naming the variable, exit 2, nothing written;
keysvc unreachable or refusing: a clear error after brief retries, no partial credentials."""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import pytest
from aiohttp import web

from tests.creds.conftest import cli_apply_args, invoke_cli, run_cli, snapshot, token_file_for
from tests.service import RunningService

GCP_OK = {
    "TFC_GCP_PROVIDER_AUTH": "true",
    "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "terraform@acme.iam.gserviceaccount.com",
    "TFC_GCP_WORKLOAD_PROVIDER_NAME": "projects/123/locations/global/workloadIdentityPools/pool/providers/p",
}
AWS_OK = {"TFC_AWS_PROVIDER_AUTH": "true", "TFC_AWS_RUN_ROLE_ARN": "arn:aws:iam::1:role/r"}

BAD = [
    ({"TFC_AWS_PROVIDER_AUTH": "yes"}, "TFC_AWS_PROVIDER_AUTH: 'yes' is not a boolean"),
    ({"TFC_AZURE_PROVIDER_AUTH_X": ""}, "TFC_AZURE_PROVIDER_AUTH_X: '' is not a boolean"),
    ({"TFC_AWS_PROVIDER_AUTHX": "true"}, "TFC_AWS_PROVIDER_AUTHX: malformed tag"),
    ({"TFC_AWS_PROVIDER_AUTH_bad-tag": "true"}, "TFC_AWS_PROVIDER_AUTH_bad-tag: malformed tag"),
    ({"TFC_AWS_PROVIDER_AUTH_": "true"}, "TFC_AWS_PROVIDER_AUTH_: malformed tag"),
    (
        {"TFC_GCP_PROVIDER_AUTH_TYPE": "true"},
        "TFC_GCP_PROVIDER_AUTH_TYPE: the tag 'TYPE' is reserved",
    ),
    (
        {"TFC_WORKLOAD_IDENTITY_AUDIENCE_a.b": "x"},
        "TFC_WORKLOAD_IDENTITY_AUDIENCE_a.b: malformed tag",
    ),
    (
        {"TFC_AWS_PROVIDER_AUTH": "true"},
        "TFC_AWS_RUN_ROLE_ARN: required when TFC_AWS_PROVIDER_AUTH is true",
    ),
    (
        {"TFC_AWS_PROVIDER_AUTH_A": "true", "TFC_AWS_RUN_ROLE_ARN": "r"},
        "TFC_AWS_RUN_ROLE_ARN_A: required when TFC_AWS_PROVIDER_AUTH_A is true",
    ),
    (
        {"TFC_AWS_PROVIDER_AUTH": "true", "TFC_AWS_RUN_ROLE_ARN": "a\nb"},
        "TFC_AWS_RUN_ROLE_ARN: must be a single line",
    ),
    (
        {"TFC_AZURE_PROVIDER_AUTH": "true"},
        "TFC_AZURE_RUN_CLIENT_ID: required when TFC_AZURE_PROVIDER_AUTH is true",
    ),
    (
        {**GCP_OK, "TFC_GCP_WORKLOAD_PROVIDER_NAME": "projects/123/pools/p"},
        "TFC_GCP_WORKLOAD_PROVIDER_NAME: the workload identity provider must be projects/<number>",
    ),
    (
        {
            **GCP_OK,
            "TFC_GCP_WORKLOAD_PROVIDER_NAME": "",
            "TFC_GCP_PROJECT_NUMBER": "1",
            "TFC_GCP_WORKLOAD_POOL_ID": "a/b",
            "TFC_GCP_WORKLOAD_PROVIDER_ID": "c",
        },
        "TFC_GCP_PROJECT_NUMBER + TFC_GCP_WORKLOAD_POOL_ID + TFC_GCP_WORKLOAD_PROVIDER_ID: the",
    ),
    (
        {**GCP_OK, "TFC_GCP_WORKLOAD_PROVIDER_NAME": "", "TFC_GCP_PROJECT_NUMBER": "1"},
        "TFC_GCP_WORKLOAD_POOL_ID: required when TFC_GCP_PROVIDER_AUTH is true",
    ),
    (
        {**GCP_OK, "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": ""},
        "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL: required when TFC_GCP_PROVIDER_AUTH is true",
    ),
    (
        {**GCP_OK, "TFC_GCP_PRINCIPAL_TYPE": "user"},
        "TFC_GCP_PRINCIPAL_TYPE: must be service_account or workload_pool",
    ),
    (
        {"TFC_KUBERNETES_PROVIDER_AUTH": "true"},
        "TFC_KUBERNETES_WORKLOAD_IDENTITY_AUDIENCE: required when TFC_KUBERNETES_PROVIDER_AUTH is true",
    ),
    (
        {"TFC_VAULT_PROVIDER_AUTH": "true", "TFC_VAULT_RUN_ROLE": "r"},
        "TFC_VAULT_ADDR: required when TFC_VAULT_PROVIDER_AUTH is true",
    ),
    (
        {
            "TFC_VAULT_PROVIDER_AUTH": "true",
            "TFC_VAULT_ADDR": "vault:8200",
            "TFC_VAULT_RUN_ROLE": "r",
        },
        "TFC_VAULT_ADDR: must be an http:// or https:// URL",
    ),
    (
        {"TFC_VAULT_PROVIDER_AUTH": "true", "TFC_VAULT_ADDR": "https://127.0.0.1:9"},
        "TFC_VAULT_RUN_ROLE: required when TFC_VAULT_PROVIDER_AUTH is true",
    ),
    (
        {
            "TFC_VAULT_PROVIDER_AUTH": "true",
            "TFC_VAULT_ADDR": "https://127.0.0.1:9",
            "TFC_VAULT_RUN_ROLE": "r",
            "TFC_VAULT_ENCODED_CACERT": base64.b64encode(b"not a certificate").decode(),
        },
        "TFC_VAULT_ENCODED_CACERT: must be a base64-encoded PEM CA certificate",
    ),
    (
        {
            "TFC_VAULT_PROVIDER_AUTH": "true",
            "TFC_VAULT_ADDR": "https://127.0.0.1:9",
            "TFC_VAULT_RUN_ROLE": "r",
            "TFC_VAULT_CLIENT_TIMEOUT": "soon",
        },
        "TFC_VAULT_CLIENT_TIMEOUT: must be a whole number of seconds",
    ),
    (
        {
            "TFC_VAULT_PROVIDER_AUTH": "true",
            "TFC_VAULT_ADDR": "https://127.0.0.1:9",
            "TFC_VAULT_RUN_ROLE": "r",
            "TFC_VAULT_CLIENT_TIMEOUT": "\u00b2",  # isdigit(), but int() refuses it
        },
        "TFC_VAULT_CLIENT_TIMEOUT: must be a whole number of seconds from 1 to 3600",
    ),
    (
        {
            "TFC_VAULT_PROVIDER_AUTH": "true",
            "TFC_VAULT_ADDR": "https://127.0.0.1:9",
            "TFC_VAULT_RUN_ROLE": "r",
            "TFC_VAULT_AUTH_PATH": "../sys",
        },
        "TFC_VAULT_AUTH_PATH: must be a Vault mount path",
    ),
    # every setting gets the same one-line check, not only the AWS role ARN
    (
        {"TFC_AZURE_PROVIDER_AUTH": "true", "TFC_AZURE_RUN_CLIENT_ID": "a\nb"},
        "TFC_AZURE_RUN_CLIENT_ID: must be a single line of printable characters (U+000A at"
        " character 2)",
    ),
    (
        {"TFC_AZURE_PROVIDER_AUTH": "true", "TFC_AZURE_RUN_CLIENT_ID": "a\udcffb"},
        "TFC_AZURE_RUN_CLIENT_ID: must be a single line of printable characters (a byte that"
        " is not UTF-8",
    ),
    (
        {**GCP_OK, "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "t@iam.google.com\nx"},
        "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL: must be a single line",
    ),
    (
        {**GCP_OK, "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "a/b:c@iam.google.com"},
        "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL: must be a service account email",
    ),
    (
        {**GCP_OK, "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "terraform"},
        "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL: must be a service account email",
    ),
    *(  # a person's address, or a look-alike domain, is no service account
        (
            {**GCP_OK, "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": email},
            "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL: must be a service account email:"
            " NAME@PROJECT.iam.gserviceaccount.com",
        )
        for email in (
            "someone@gmail.com",
            "t@gserviceaccount.com",
            "t@p.iam.gserviceaccount.com.evil.example",
            "t@p.iam.gserviceaccount.comx",
        )
    ),
    (
        {"TFC_WORKLOAD_IDENTITY_AUDIENCE_X": "a\rb"},
        "TFC_WORKLOAD_IDENTITY_AUDIENCE_X: must be a single line",
    ),
    (
        {
            "TFC_VAULT_PROVIDER_AUTH": "true",
            "TFC_VAULT_ADDR": "http://127.0.0.1:abc",
            "TFC_VAULT_RUN_ROLE": "r",
        },
        "TFC_VAULT_ADDR: has a bad port",
    ),
    (
        {
            "TFC_VAULT_PROVIDER_AUTH": "true",
            "TFC_VAULT_ADDR": "https://admin:s3cret@vault.example.com",
            "TFC_VAULT_RUN_ROLE": "r",
        },
        "TFC_VAULT_ADDR: must not contain a user name or password",
    ),
    (
        {
            "TFC_VAULT_PROVIDER_AUTH": "true",
            "TFC_VAULT_ADDR": "https://127.0.0.1:9",
            "TFC_VAULT_RUN_ROLE": "r",
            "TFC_VAULT_NAMESPACE": "a\nb",
        },
        "TFC_VAULT_NAMESPACE: must be a single line",
    ),
    (
        {
            "TFC_VAULT_PROVIDER_AUTH": "true",
            "TFC_VAULT_ADDR": "https://127.0.0.1:9",
            "TFC_VAULT_RUN_ROLE": "r",
            "TFC_VAULT_NAMESPACE": "\u00e9quipe",
        },
        "TFC_VAULT_NAMESPACE: must be printable ASCII without spaces",
    ),
]


@pytest.mark.parametrize(("env", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_variable_is_one_line_exit_2_nothing_written(
    env: dict[str, str],
    message: str,
    workdir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In-process through the real CLI entry point; no keysvc is needed since nothing may be
    requested (the URL points at a closed port, so a request would fail differently)."""
    (workdir / "main.tf").write_text("# the user's configuration\n")
    before = snapshot(workdir)
    # a valid AWS configuration too: the bad variable must stop everything, AWS included
    full = {**AWS_OK, **env} if not any(k.startswith("TFC_AWS") for k in env) else env
    token = tmp_path / "t"
    token.write_text("client-token")
    token.chmod(0o600)
    code, out, err = invoke_cli(
        cli_apply_args_for(f"http://127.0.0.1:{closed_port()}", token, workdir),
        full,
        monkeypatch,
        capsys,
    )
    assert code == 2, err
    assert out == ""
    assert err.startswith(f"keysvc: error: {message}"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "s3cret" not in err
    assert snapshot(workdir) == before


def closed_port() -> int:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_keysvc_unreachable_is_retried_then_reported(workdir: Path, tmp_path: Path) -> None:
    port = closed_port()
    token = tmp_path / "t"
    token.write_text("secret-client-token")
    token.chmod(0o600)
    args = cli_apply_args_for(f"http://127.0.0.1:{port}", token, workdir)
    started = time.monotonic()
    code, out, err = await run_cli(*args, env=AWS_OK)
    elapsed = time.monotonic() - started
    assert code == 2 and out == ""
    assert err.startswith(f"keysvc: error: keysvc at http://127.0.0.1:{port} did not issue a token")
    assert "after 4 attempts" in err and "secret-client-token" not in err
    assert 3.0 < elapsed < 30  # 0.5 + 1 + 2 s of back-off: brief, but not instant
    assert list(workdir.iterdir()) == []


def cli_apply_args_for(url: str, token: Path, workdir: Path) -> list[str]:
    return [
        "creds",
        "apply",
        "--url",
        url,
        "--token-file",
        str(token),
        "--workdir",
        str(workdir),
        "--organization",
        "acme",
        "--workspace",
        "networking",
        "--workspace-id",
        "ws-1",
        "--run-id",
        "run-1",
        "--phase",
        "plan",
    ]


async def test_keysvc_refusal_is_reported_with_its_error(
    keysvc: RunningService, workdir: Path, tmp_path: Path
) -> None:
    token = tmp_path / "wrong"
    token.write_text("not-the-client-token")
    token.chmod(0o600)
    code, _, err = await run_cli(*cli_apply_args_for(keysvc.url, token, workdir), env=AWS_OK)
    assert code == 2
    assert err.startswith(
        f"keysvc: error: keysvc at {keysvc.url} refused a token for audience "
        "'aws.workload.identity': HTTP 401"
    ), err
    assert "not-the-client-token" not in err
    assert list(workdir.iterdir()) == []


async def test_refused_run_name_fails_before_anything_is_written(
    keysvc: RunningService, workdir: Path, tmp_path: Path
) -> None:
    """A token refused after another one was issued: nothing of the first is written."""
    args = cli_apply_args(keysvc, token_file_for(keysvc, tmp_path), workdir)
    args[args.index("--workspace") + 1] = "bad:name"
    code, _, err = await run_cli(*args, env=AWS_OK)
    assert code == 2 and "HTTP 400" in err
    assert list(workdir.iterdir()) == []


async def test_group_readable_token_file_is_refused(
    keysvc: RunningService, workdir: Path, tmp_path: Path
) -> None:
    token = token_file_for(keysvc, tmp_path)
    token.chmod(0o640)
    code, _, err = await run_cli(*cli_apply_args(keysvc, token, workdir), env=AWS_OK)
    assert code == 2 and "accessible by group or others" in err and keysvc.client_token not in err
    assert list(workdir.iterdir()) == []


async def test_missing_workdir_is_an_error(keysvc: RunningService, tmp_path: Path) -> None:
    code, _, err = await run_cli(
        *cli_apply_args(keysvc, token_file_for(keysvc, tmp_path), tmp_path / "absent"), env=AWS_OK
    )
    assert code == 2 and "does not exist" in err


async def test_503_is_retried_then_succeeds(
    keysvc: RunningService, workdir: Path, tmp_path: Path
) -> None:
    """A proxy in front of the real keysvc answers 503 twice, as keysvc does while its backend
    is unreachable; the token still arrives."""
    seen: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(len(seen))
        if len(seen) <= 2:
            return web.json_response(
                {"error": {"code": "backend_unavailable", "message": "try later"}},
                status=503,
                headers={"Retry-After": "0"},
            )
        async with keysvc.session.post(
            keysvc.url + request.path, data=await request.read(), headers=request.headers
        ) as upstream:
            return web.Response(
                status=upstream.status, body=await upstream.read(), content_type="application/json"
            )

    app = web.Application()
    app.router.add_post("/v1/tokens", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        args = cli_apply_args(keysvc, token_file_for(keysvc, tmp_path), workdir)
        args[args.index("--url") + 1] = f"http://127.0.0.1:{port}"
        code, out, err = await run_cli(*args, env=AWS_OK)
    finally:
        await runner.cleanup()
    assert code == 0, err
    assert len(seen) == 3
    assert f"AWS_WEB_IDENTITY_TOKEN_FILE={workdir}/aws_token" in out.splitlines()
