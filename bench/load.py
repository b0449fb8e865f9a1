"""The load generator: wrk, driven by a Lua script whose `done()` hook prints one JSON line
with throughput, error counts and latency percentiles.

wrk's own CPU time comes from `os.wait4` (the rusage of exactly that child), and the CPU the
servers and everything else on the machine used during the run from /proc, so a result can say
how much of the two cores the server actually got.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procs import ProcessTree, machine_cpu_seconds

MARKER = "WRK_RESULT "

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,'
    .. '"max_us":%.0f,"mean_us":%.1f}\\n',
    "MARKER", summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
""".replace('"MARKER"', json.dumps(MARKER))


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here (ASCII)


def write_script(
    path: Path,
    *,
    body: bytes | None = None,
    token: str | None = None,
    content_type: str = "application/json",
) -> Path:
    """A wrk script: POST `body` (labelled `content_type`) with a bearer token, or a plain GET
    when body is None."""
    lines = []
    if body is not None:
        lines += [
            'wrk.method = "POST"',
            f"wrk.body = {_lua_string(body.decode('ascii'))}",
            f"wrk.headers[\"Content-Type\"] = {_lua_string(content_type)}",
        ]
    if token is not None:
        lines.append(f'wrk.headers["Authorization"] = {_lua_string("Bearer " + token)}')
    path.write_text("\n".join(lines) + "\n" + _DONE)
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    """Non-2xx answers, timeouts and socket errors."""
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    wrk_cpu_share: float
    """wrk's CPU time / wall time (1.0 = one full core)."""
    server_cpu_share: float
    """The server's process tree: CPU time / wall time."""
    other_cpu_share: float
    """Everything else on the machine (other users, steal excluded) over the same interval."""

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.errors) / self.seconds

    @property
    def rate_per_server_core(self) -> float:
        return self.rate / self.server_cpu_share if self.server_cpu_share else 0.0


class LoadError(RuntimeError):
    pass


def wrk(
    url: str,
    script: Path,
    *,
    seconds: float,
    threads: int = 2,
    connections: int = 64,
    server: ProcessTree | None = None,
) -> LoadResult:
    """Run wrk once against `url` and return what it measured."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    server_before = server.cpu_seconds() if server else 0.0
    machine_before = machine_cpu_seconds()
    began = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err)
        # A watchdog instead of a wait timeout: os.wait4 gives the rusage of exactly this child.
        watchdog = threading.Timer(seconds + 30, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: never leave wrk running
            proc.kill()
            proc.wait()
            raise
        finally:
            watchdog.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - began
        out.seek(0)
        err.seek(0)
        text, error_text = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    wrk_cpu = usage.ru_utime + usage.ru_stime
    server_cpu = (server.cpu_seconds() - server_before) if server else 0.0
    machine_cpu = machine_cpu_seconds() - machine_before
    if proc.returncode != 0 or MARKER not in text:
        raise LoadError(f"wrk failed (exit {proc.returncode}): {error_text.strip()[-300:]}")
    data = json.loads(text.split(MARKER, 1)[1].splitlines()[0])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        requests=data["requests"],
        errors=errors,
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        wrk_cpu_share=wrk_cpu / wall,
        server_cpu_share=server_cpu / wall,
        other_cpu_share=max(0.0, machine_cpu - server_cpu - wrk_cpu) / wall,
    )
