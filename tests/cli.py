"""Running the real `keysvc` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

KEYSVC = [sys.executable, "-m", "keysvc"]


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    merged = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSVC_", "OTF_"))}
    merged.update(env or {})
    return subprocess.run(
        [*KEYSVC, *args], capture_output=True, text=True, env=merged, input=input, timeout=timeout
    )


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
