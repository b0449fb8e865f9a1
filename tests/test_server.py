"""Supervising several workers: a worker that dies takes the whole service down with a status
that says why, so the supervisor (Kubernetes, systemd) restarts it whole."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keysvc.connections import RESERVED_FDS
from keysvc.server import exit_status
from tests.cli import config_file, serving
from tests.conftest import write_key
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


def listening(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on `port` (IPv4 loopback or any)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            inodes.add(f"socket:[{fields[9]}]")
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


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


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metric(url: str, sample: str) -> float:
    _, text = get(url + "/metrics")
    for line in text.decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_idle_and_half_sent_connections_past_the_fd_limit_do_not_lock_a_client_out(
    tmp_path: Path, key_dir: Path
) -> None:
    """With 256 file descriptors, 300 connections that send nothing or half a header: a real
    client is still served. Without a cap below the limit, accept() fails with EMFILE and the
    event loop resets every new connection, the real client's too."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = config_file(tmp_path, key_dir, port=port)

    def lower_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    held: list[socket.socket] = []
    with serving("--config", str(config), url=url, preexec_fn=lower_fd_limit) as process:
        try:
            for i in range(300):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                if i % 2:
                    sock.sendall(b"POST /v1/tokens HTTP/1.1\r\nHost: x\r\nAuthoriz")
                held.append(sock)
            for _ in range(3):
                status, body = get(url + "/.well-known/jwks")
                assert status == 200 and json.loads(body)["keys"]
            assert metric(url, "keysvc_connections_limit") == 256 - RESERVED_FDS
            assert metric(url, 'keysvc_connections_dropped_total{reason="evicted"}') >= 300 - 128
        finally:
            for sock in held:
                sock.close()
        process.terminate()
        process.wait(30)
        stderr = process.stderr.read()
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    (budget,) = [e for e in lines if "does not fit the file-descriptor limit" in e["message"]]
    assert budget["level"] == "warning" and "capping connections at 128" in budget["message"]
    at_cap = [e for e in lines if "connection limit reached" in e["message"]]
    assert 1 <= len(at_cap) <= 3, at_cap  # at most one line per 10 s, not one per connection
    assert "Traceback" not in stderr and '"level":"error"' not in stderr.replace(" ", "")


def test_sighup_refreshes_the_ring_and_the_process_keeps_serving(
    tmp_path: Path, key_dir: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = config_file(tmp_path, key_dir, port=port)  # refresh_interval: 30 s
    with serving("--config", str(config), url=url) as process:
        assert len(json.loads(get(url + "/.well-known/jwks")[1])["keys"]) == 1
        # A request in progress (its body still arriving) when the signal comes.
        slow = socket.create_connection(("127.0.0.1", port))
        body = b'{"claims": {"sub": "s"}}'
        slow.sendall(b"POST /v1/sign HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer cli-test-token"
                     b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:5])
        write_key(key_dir, "ec-p256", datetime.now(UTC) - timedelta(minutes=5))

        process.send_signal(signal.SIGHUP)

        wait_for(lambda: len(json.loads(get(url + "/.well-known/jwks")[1])["keys"]) == 2, 10)
        slow.sendall(body[5:])
        reply = b""
        while chunk := slow.recv(65536):
            reply += chunk
        slow.close()
        assert reply.startswith(b"HTTP/1.1 200"), reply
        assert process.poll() is None
    stderr = process.stderr.read()
    assert "SIGHUP: re-reading the key backends now" in stderr
    assert "Traceback" not in stderr


@contextmanager
def two_workers(
    tmp_path: Path, key_dir: Path
) -> Iterator[tuple[subprocess.Popen[str], int, list[int]]]:
    """`keysvc serve --workers 2`, once both workers listen: (supervisor, port, worker pids)."""
    port = free_port()
    config = config_file(tmp_path, key_dir, port=port)
    with serving(
        "--config", str(config), "--workers", "2", url=f"http://127.0.0.1:{port}"
    ) as process:
        wait_for(lambda: len(workers_of(process.pid)) == 2)
        workers = workers_of(process.pid)
        wait_for(lambda: all(listening(pid, port) for pid in workers))
        yield process, port, workers


def test_sighup_to_the_supervisor_refreshes_every_worker(tmp_path: Path, key_dir: Path) -> None:
    with two_workers(tmp_path, key_dir) as (process, port, workers):
        url = f"http://127.0.0.1:{port}"
        write_key(key_dir, "ec-p256", datetime.now(UTC) - timedelta(minutes=5))

        process.send_signal(signal.SIGHUP)

        # Each request on a new connection, spread over both workers by SO_REUSEPORT: all of
        # them must see the new key (not only the worker that happened to refresh first).
        wait_for(lambda: len(json.loads(get(url + "/.well-known/jwks")[1])["keys"]) == 2, 10)
        for _ in range(20):
            assert len(json.loads(get(url + "/.well-known/jwks")[1])["keys"]) == 2
        assert process.poll() is None and all(alive(pid) for pid in workers)
        process.terminate()
        process.wait(60)
        stderr = process.stderr.read()
    assert process.returncode == 0, stderr
    assert stderr.count("SIGHUP: re-reading the key backends now") == 2, stderr
    assert "Traceback" not in stderr


def test_workers_die_with_a_killed_supervisor(tmp_path: Path, key_dir: Path) -> None:
    with two_workers(tmp_path, key_dir) as (process, port, workers):
        process.kill()  # SIGKILL: the supervisor can do nothing about it

        process.wait(10)
        wait_for(lambda: not any(alive(pid) for pid in workers), 30)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_sigterm_drains_within_drain_timeout_even_with_a_body_arriving(
    tmp_path: Path, key_dir: Path
) -> None:
    """A request whose body never ends holds the stop for drain_timeout at most (aiohttp's own
    default is 60 s, past Kubernetes' 30 s grace period)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = config_file(tmp_path, key_dir, port=port)
    config.write_text(
        config.read_text().replace("[server]\n", '[server]\ndrain_timeout = "2s"\nbody_timeout = "1h"\n')
    )
    with serving("--config", str(config), url=url) as process:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /v1/sign HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer cli-test-token"
                     b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.5)  # the handler is reading the body
        started = time.monotonic()
        process.terminate()
        process.wait(40)
        took = time.monotonic() - started
        slow.close()
        stderr = process.stderr.read()
    assert process.returncode == 0, stderr
    assert took < 20, took  # 2 s of drain, generously bounded; aiohttp's default waits 60 s
    assert "Traceback" not in stderr
