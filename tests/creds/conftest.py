"""The run side's fixtures: the real keysvc service (RSA key, so Azure's RS256 rule holds),
run contexts, and helpers that call `apply` the way a runner does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import stat
import sys
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from keysvc.creds import Result, Run, TokenClient, apply
from keysvc.creds.http import RetryPolicy
from tests.conftest import file_config, write_key
from tests.service import RunningService, start_service
from tests.verification import verify_once

CONTEXT = Run("acme", "networking", "ws-8pNkEB3sF5Q9", "run-Yb2n8qzM4jCP", "plan")
REPO = Path(__file__).resolve().parents[2]
QUICK_RETRY = RetryPolicy(attempts=3, backoff=0.05)


@pytest.fixture
async def keysvc(tmp_path: Path) -> AsyncIterator[RunningService]:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    write_key(keys, "rsa-2048", datetime.now(UTC) - timedelta(hours=1))
    async with start_service(file_config(keys)) as svc:
        yield svc


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


def client_for(svc: RunningService) -> TokenClient:
    return TokenClient(svc.url, svc.client_token, retry=QUICK_RETRY)


async def run_apply(
    svc: RunningService, env: Mapping[str, str], workdir: Path, phase: str = "plan"
) -> Result:
    """`apply` in a thread, as a runner would call it, while the service runs on this loop."""
    context = Run(
        CONTEXT.organization, CONTEXT.workspace, CONTEXT.workspace_id, CONTEXT.run_id, phase
    )  # type: ignore[arg-type]
    return await asyncio.to_thread(apply, dict(env), context, workdir, client_for(svc))


async def verified(
    svc: RunningService, token: str, audience: str, phase: str = "plan"
) -> dict[str, Any]:
    """The token's claims, verified with PyJWT against the JWKS the service served."""
    claims = await verify_once(svc.url, token, audience)
    assert claims["terraform_run_phase"] == phase
    assert claims["terraform_run_id"] == CONTEXT.run_id
    assert claims["sub"] == f"organization:acme:workspace:networking:run_phase:{phase}"
    return claims


@contextlib.asynccontextmanager
async def serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Run `app` on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry below `directory`: relative name → (mode, content)."""
    result = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        result[str(path.relative_to(directory))] = (stat.S_IMODE(st.st_mode), content)
    return result


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 120
) -> tuple[int, str, str]:
    """`python -m keysvc ARGS` in a child process with exactly `env` (plus PATH); one that has
    not finished after `timeout` seconds (blocked) is killed and fails the test."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keysvc",
        *args,
        env={"PATH": os.environ.get("PATH", ""), **env},
        cwd=REPO,  # `-m` puts the working directory first: this checkout's keysvc runs
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"keysvc {' '.join(args)} was still running after {timeout}s")
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def invoke_cli(
    args: list[str],
    env: Mapping[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, str]:
    """The real `keysvc` entry point in this process, with exactly `env` as TFC_* variables."""
    from keysvc.cli import cli
    from keysvc.cli.common import run_cli as main

    for name in list(os.environ):
        if name.startswith("TFC_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["keysvc", *args])
    capsys.readouterr()
    code = main(cli)
    out, err = capsys.readouterr()
    return code, out, err


def token_file_for(svc: RunningService, directory: Path) -> Path:
    path = directory / "client-token"
    path.write_text(svc.client_token + "\n")
    path.chmod(0o600)
    return path


def cli_apply_args(
    svc: RunningService, token_file: Path, workdir: Path, phase: str = "plan", *extra: str
) -> list[str]:
    return [
        "creds",
        "apply",
        "--url",
        svc.url,
        "--token-file",
        str(token_file),
        "--workdir",
        str(workdir),
        "--organization",
        CONTEXT.organization,
        "--workspace",
        CONTEXT.workspace,
        "--workspace-id",
        CONTEXT.workspace_id,
        "--run-id",
        CONTEXT.run_id,
        "--phase",
        phase,
        *extra,
    ]
