"""Running the real `keysvc` command: in this process where no process boundary is under test
(`run`), in a process of its own where one is (`run_process`, `serving`)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner

from keysvc.cli import cli
from keysvc.cli.common import run_cli

KEYSVC = [sys.executable, "-m", "keysvc"]


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`keysvc ARGS` as `python -m keysvc` runs it (keysvc.cli.common.run_cli: its exit status,
    its one-line errors), in this process: click's isolation gives it its own stdin, stdout,
    stderr and environment (without the KEYSVC_* and OTF_* variables of this one, `env` added),
    and logging as a fresh process has it. Called from a thread other than the main one, or
    while an event loop runs (beside a service in this process, whose log lines it would
    capture), it runs in a process of its own instead, as run_process does."""
    if threading.current_thread() is not threading.main_thread() or _loop_running():
        return run_process(*args, env=env, input=input, timeout=timeout)
    environment: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith(("KEYSVC_", "OTF_"))
    }
    environment.update(env or {})
    saved_environ = dict(os.environ)
    with _fresh_logging(), CliRunner().isolation(input=input, env=environment) as (out, err, _):
        try:
            code = run_cli(cli, list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    os.environ.clear()
    os.environ.update(saved_environ)  # also what the command itself set
    return subprocess.CompletedProcess(["keysvc", *args], code, stdout, stderr)


def run_process(*args: str, env: dict[str, str] | None = None, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m keysvc ARGS` in a process of its own (without this process's KEYSVC_* and
    OTF_* variables, `env` added)."""
    merged = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSVC_", "OTF_"))}
    merged.update(env or {})
    return subprocess.run(
        [*KEYSVC, *args], capture_output=True, text=True, env=merged, input=input, timeout=timeout
    )


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@contextmanager
def _fresh_logging() -> Iterator[None]:
    """Logging as in a new process for the command's run: no handler on the root logger (so
    warnings reach its stderr through logging's last resort, as they do there), root level
    WARNING; this process's handlers, levels and switches (logs.configure sets them) put back
    afterwards."""
    root = logging.getLogger()
    access = logging.getLogger("aiohttp.access")
    saved = (root.handlers[:], root.level, access.level, logging._srcfile, logging.logThreads,
             logging.logProcesses, logging.logMultiprocessing)
    root.handlers[:] = []
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:], level, access_level, *switches = saved
        root.setLevel(level)
        access.setLevel(access_level)
        (logging._srcfile, logging.logThreads, logging.logProcesses,
         logging.logMultiprocessing) = switches


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keysvc: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@contextmanager
def serving(
    *args: str,
    url: str,
    timeout: float = 30,
    preexec_fn: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    command: list[str] = KEYSVC,
) -> Iterator[subprocess.Popen[str]]:
    """`keysvc serve ARGS` (with `env` added to the environment) until /readyz answers 200;
    stopped with SIGTERM afterwards. `preexec_fn` runs in the child before keysvc starts (to
    lower a resource limit). Its log (stderr) is a pipe, or the file `log` for a run that logs
    more than a pipe holds. `command` replaces `python -m keysvc` (a test-only variant of it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSVC_", "OTF_"))
           } | (env or {})
    stderr = subprocess.PIPE if log is None else log.open("w")
    process = subprocess.Popen([*command, "serve", *args], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=stderr,
                               preexec_fn=preexec_fn)
    if log is not None:
        stderr.close()
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                shown = process.stderr.read() if log is None else log.read_text()
                raise AssertionError(f"serve exited {process.returncode}: {shown}")
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "keysvc serve did not become ready"
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def config_file(tmp_path: Path, keys: Path, extra: str = "", port: int = 8080) -> Path:
    """A keysvc.toml on the file backend `keys`, with one client (token `cli-test-token`,
    every scope); `extra` goes in at the top level, before the first table."""
    token = private(tmp_path / "token", "cli-test-token\n")
    path = tmp_path / "keysvc.toml"
    path.write_text(
        f'issuer = "http://127.0.0.1:{port}"\n{extra}\n'
        f'[server]\nport = {port}\n'
        f'[[clients]]\nname = "t"\ntoken_file = "{token}"\n'
        f'scopes = ["tokens:issue", "keys:read", "keys:rotate", "sign"]\n'
        f'[[backends]]\nname = "local"\ntype = "file"\npath = "{keys}"\n'
    )
    return path
