"""RSA issuance must not starve the rest of the service: under RS256 saturation from many
connections, a JWKS GET and /healthz on a connection of their own are answered promptly, with
either `tokens.rsa_signing`. The bound is loose (1 s: this checks starvation, not speed; an
answer beside RSA issuance takes milliseconds), and the naive form, each handler signing
inline on the event loop, misses it by far: that form runs as a test-only variant of
`keysvc serve` (tests/inline_rsa_serve.py) to show that this test can fail.

Real processes throughout: `keysvc serve` with an RSA-4096 key directory, a token flood in a
process of its own (tests/token_flood.py), and the probe in this one."""

from __future__ import annotations

import http.client
import json
import math
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keysvc import jose, keygen
from keysvc.backends.file import name_for
from keysvc.secrets import write_private_file
from tests.cli import KEYSVC, private, serving
from tests.service import free_port

BOUND = 1.0
"""Seconds a probe may take: generous for a loaded machine, a fraction of what starvation takes."""
INLINE_STALL = 2.0
"""Seconds the flood should stall an inline signer for (see `flood_connections`)."""
MAX_CONNECTIONS = 2500
"""The most the flood opens (the service's connection cap is raised above it)."""
PROBES = 5
NAIVE = [sys.executable, "-m", "tests.inline_rsa_serve"]
TOKEN = "flood-client-token"


@dataclass(frozen=True)
class RsaKeys:
    directory: Path
    signature_seconds: float
    """One RSA-4096 signature on this machine now (the fastest of a few)."""

    @property
    def flood_connections(self) -> int:
        """Connections with a request each, so many that an inline signer, which signs every
        request that is ready in the same loop iteration, stalls INLINE_STALL seconds per
        iteration on this machine (a request needs more than one). The queued and threaded
        designs only queue them (within the test's sign timeout). A fast host needs well over
        a thousand (1.5 ms per signature: 1,334)."""
        return max(64, min(MAX_CONNECTIONS, math.ceil(INLINE_STALL / self.signature_seconds)))


@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> RsaKeys:
    directory = tmp_path_factory.mktemp("rsa-keys")
    directory.chmod(0o700)
    key = keygen.generate("rsa-4096")
    created = datetime.now(UTC) - timedelta(days=2)
    write_private_file(directory / name_for(created), keygen.private_pem(key))
    times = []
    for _ in range(5):
        started = time.perf_counter()
        jose.sign_local(key, jose.Algorithm.RS256, b"header.payload")
        times.append(time.perf_counter() - started)
    return RsaKeys(directory, min(times))


def issued(connection: http.client.HTTPConnection) -> float:
    """keysvc_tokens_issued_total over every label set with outcome "issued"."""
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    pattern = r'^keysvc_tokens_issued_total\{[^}]*outcome="issued"[^}]*\} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, text, re.M))


def probe(connection: http.client.HTTPConnection) -> list[float]:
    """Seconds each GET took, JWKS and /healthz in turn, stopping at the first over BOUND (a
    starved service would make the rest take as long)."""
    took: list[float] = []
    for path in ["/.well-known/jwks", "/healthz"] * PROBES:
        started = time.monotonic()
        try:
            connection.request("GET", path)
            reply = connection.getresponse()
            reply.read()
            assert reply.status == 200, (path, reply.status)
        except TimeoutError:
            took.append(float("inf"))
            break
        took.append(time.monotonic() - started)
        if took[-1] >= BOUND:
            break
        time.sleep(0.05)
    return took


def saturate_and_probe(
    tmp_path: Path, keys: RsaKeys, rsa_signing: str | None
) -> tuple[list[float], dict[str, int], float | None]:
    """Serve `keys` (one worker) with `rsa_signing`, or None for the naive inline variant;
    flood it with RS256 token requests and probe it meanwhile on a connection opened
    beforehand. Returns the probes' times, the flood's replies by status and the tokens issued
    while the probes ran (not counted for the inline variant, whose /metrics would take as
    long as the probes)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A long sign timeout: this is about starvation, not the queue's bound (that is
    # tests/test_rsa_signing.py), and a flood whose refused requests came straight back would
    # keep the loop busy refusing them.
    tokens = '[tokens]\nsign_timeout = "60s"\n'
    if rsa_signing:
        tokens += f'rsa_signing = "{rsa_signing}"\n'
    config = tmp_path / "keysvc.toml"
    config.write_text(
        f'issuer = "{url}"\n'
        'log_level = "warning"\n'  # no audit line per token on the pipe
        f'[server]\nport = {port}\ndrain_timeout = "1s"\n'
        f"max_connections = {2 * MAX_CONNECTIONS}\n{tokens}"
        f'[[clients]]\nname = "flood"\ntoken_file = "{private(tmp_path / "token", TOKEN)}"\n'
        'scopes = ["tokens:issue"]\n'
        f'[[backends]]\nname = "rsa"\ntype = "file"\npath = "{keys.directory}"\n'
    )
    connections = keys.flood_connections
    command = KEYSVC if rsa_signing else NAIVE
    with serving("--config", str(config), url=url, command=command):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.connect()
        flood = subprocess.Popen(
            [sys.executable, "-m", "tests.token_flood", url, TOKEN, str(connections)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert flood.stdout is not None
            ready, _, _ = select.select([flood.stdout], [], [], 60)
            assert ready and flood.stdout.readline().strip() == "flowing"
            time.sleep(0.5)  # every connection has its request in by now
            before = issued(connection) if rsa_signing else 0.0
            took = probe(connection)
            during = issued(connection) - before if rsa_signing else None
        finally:
            flood.terminate()
            out, _ = flood.communicate(timeout=60)
        connection.close()
    return took, json.loads(out.strip().splitlines()[-1]), during


@pytest.mark.parametrize("rsa_signing", ["loop", "threads"])
def test_jwks_and_healthz_are_answered_beside_rs256_saturation(
    tmp_path: Path, rsa_keys: RsaKeys, rsa_signing: str
) -> None:
    took, statuses, during = saturate_and_probe(tmp_path, rsa_keys, rsa_signing)
    assert len(took) == 2 * PROBES and max(took) < BOUND, took
    assert during is not None and during >= 1, "no token issued while the probes ran"
    assert statuses.get("200", 0) > 0 and set(statuses) <= {"200", "503"}, statuses


def test_the_bound_catches_rsa_signed_inline_in_each_handler(
    tmp_path: Path, rsa_keys: RsaKeys
) -> None:
    took, statuses, _ = saturate_and_probe(tmp_path, rsa_keys, None)
    assert max(took) >= BOUND, took
    assert statuses.get("200", 0) > 0, statuses
