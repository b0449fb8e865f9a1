"""Supervising several workers: a worker that dies takes the whole service down with a status
that says why, so the supervisor (Kubernetes, systemd) restarts it whole."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from keysvc.server import exit_status
from tests.cli import config_file, serving
from tests.service import free_port


def workers_of(pid: int) -> list[int]:
    """The worker processes of `keysvc serve` (its spawned children, not the resource tracker)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"spawn_main" in cmdline:
            found.append(int(entry))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize(("exitcode", "status"), [(0, 0), (1, 1), (-9, 137), (-15, 143), (None, 0)])
def test_exit_status_maps_signals_as_a_shell_does(exitcode: int | None, status: int) -> None:
    assert exit_status(exitcode) == status


def test_a_killed_worker_stops_the_service_with_its_status(tmp_path: Path, key_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving(
        "--config", str(config_file(tmp_path, key_dir, port=port)), "--workers", "2", url=url
    ) as process:
        wait_for(lambda: len(workers_of(process.pid)) == 2)
        victim, survivor = workers_of(process.pid)
        with urllib.request.urlopen(url + "/.well-known/jwks") as response:
            assert json.load(response)["keys"]

        os.kill(victim, signal.SIGKILL)

        process.wait(60)
        stderr = process.stderr.read()
        assert process.returncode == 128 + signal.SIGKILL, stderr
        assert not alive(survivor)  # stopped, not left serving on its own
    errors = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    (died,) = [e for e in errors if "killed by SIGKILL" in e["message"]]
    assert died["level"] == "error" and died["logger"] == "keysvc.server"
    assert f"pid {victim}" in died["message"] and "stopping the other 1 worker" in died["message"]
    assert "Traceback" not in stderr


def test_sigterm_stops_every_worker_with_status_0(tmp_path: Path, key_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving(
        "--config", str(config_file(tmp_path, key_dir, port=port)), "--workers", "2", url=url
    ) as process:
        wait_for(lambda: len(workers_of(process.pid)) == 2)
        workers = workers_of(process.pid)
        process.terminate()
        process.wait(60)
        stderr = process.stderr.read()
        assert process.returncode == 0, stderr
        assert not any(alive(pid) for pid in workers)
        assert '"level":"error"' not in stderr.replace(" ", ""), stderr
