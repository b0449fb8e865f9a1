"""End to end: three `keysvc serve` replicas on one key directory, the schedule's two commands
(`keys rotate --if-older-than`, `keys prune`, the real CLI in subprocesses) running beside them
in a loop at a period of seconds, and clients issuing tokens from the replicas throughout, each
token verified by strict caching verifiers (tests/verification.py: they cache each JWKS for the
max-age it was sent with and never refetch on an unknown kid) that fetch from another replica
than the one that signed: at once, and again just before the token expires. Zero failures,
across several rotations and prunes.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from tests.cli import run
from tests.service import RUN, free_port
from tests.verification import CachingVerifier

from .deployment import TOKEN, Deployment, get

ROTATION = {"publish_lead": "3s", "jwks_max_age": "1s", "refresh_interval": "250ms",
            "period": "4s", "prune_margin": "1s"}
TOKENS = {"default_ttl": "2s", "max_ttl": "2s"}
MOST_PUBLISHED = 3
"""A key is published for at most period + publish_lead + max_ttl + jwks_max_age (10s, with a
new one at most every period (4s): floor(6s / 4s) + 2 keys at once."""
ROTATIONS = 3
DEADLINE = 50.0


@dataclass
class Results:
    issued: int = 0
    verified: int = 0
    failures: list[str] = field(default_factory=list)
    kids: list[str] = field(default_factory=list)
    rotations: list[dict[str, Any]] = field(default_factory=list)
    pruned: list[dict[str, Any]] = field(default_factory=list)
    most_published: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def issue(url: str) -> dict[str, Any]:
    request = urllib.request.Request(
        url + "/v1/tokens", data=json.dumps(RUN).encode(), method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)  # type: ignore[no-any-return]


def schedule(config: Path, results: Results, stop: threading.Event) -> None:
    """The CronJob, run back to back: rotate if due, then prune."""
    while not stop.is_set():
        rotated = run("keys", "rotate", "--config", str(config), "--if-older-than", "--json")
        pruned = run("keys", "prune", "--config", str(config), "--json")
        for done in (rotated, pruned):
            if done.returncode != 0:
                results.fail(f"{done.args[3:5]}: exit {done.returncode}: {done.stderr.strip()}")
        if rotated.returncode == 0 and json.loads(rotated.stdout)["rotated"]:
            results.rotations.append(json.loads(rotated.stdout))
        if pruned.returncode == 0:
            results.pruned += json.loads(pruned.stdout)["pruned"]


def clients(urls: list[str], issuer: str, results: Results, stop: threading.Event) -> None:
    """Tokens from each replica in turn, each verified at once by a verifier that reads
    another replica, and again just before it expires by a third."""
    verifiers = [CachingVerifier(issuer, base_url=url) for url in urls]
    later: list[tuple[float, str, CachingVerifier]] = []
    turn = 0
    while not stop.is_set() or later:
        now = time.time()
        for due, token, verifier in [item for item in later if item[0] <= now]:
            later.remove((due, token, verifier))
            check(verifier, token, results, "just before it expired")
        if stop.is_set():
            time.sleep(0.05)
            continue
        signer = turn % len(urls)
        turn += 1
        try:
            reply = issue(urls[signer])
        except OSError as exc:
            results.fail(f"replica {signer} refused a token: {exc}")
            continue
        results.issued += 1
        if not results.kids or results.kids[-1] != reply["kid"]:
            results.kids.append(reply["kid"])
        check(verifiers[(signer + 1) % len(urls)], reply["token"], results, "at once")
        exp = jwt.decode(reply["token"], options={"verify_signature": False})["exp"]
        later.append((exp - 0.4, reply["token"], verifiers[(signer + 2) % len(urls)]))
        time.sleep(0.05)


def check(verifier: CachingVerifier, token: str, results: Results, when: str) -> None:
    try:
        verifier.verify(token, RUN["audience"])
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, then asserted on
        kid = jwt.get_unverified_header(token)["kid"]
        results.fail(f"{kid} {when}: {type(exc).__name__}: {exc}")
    else:
        with results.lock:
            results.verified += 1


def watch(urls: list[str], results: Results, stop: threading.Event) -> None:
    while not stop.is_set():
        for url in urls:
            keys = json.loads(get(url + "/.well-known/jwks")[0])["keys"]
            results.most_published = max(results.most_published, len(keys))
        time.sleep(0.2)


def test_three_replicas_scheduled_rotation_and_prune_with_zero_failures(tmp_path: Path) -> None:
    deployment = Deployment.create(tmp_path, rotation=ROTATION, tokens=TOKENS)
    urls = [deployment.issuer] + [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    results = Results()
    stop = threading.Event()
    with ExitStack() as stack:
        for url in urls:
            stack.enter_context(deployment.serve(url))
        workers = [
            threading.Thread(target=schedule, args=(deployment.config, results, stop)),
            threading.Thread(target=clients, args=(urls, deployment.issuer, results, stop)),
            threading.Thread(target=watch, args=(urls, results, stop)),
        ]
        for worker in workers:
            worker.start()
        started = time.monotonic()
        try:
            while (len(results.rotations) < ROTATIONS or len(results.pruned) < ROTATIONS - 1
                   or len(results.kids) < ROTATIONS):
                assert time.monotonic() - started < DEADLINE, results
                assert not results.failures, results.failures
                time.sleep(0.2)
        finally:
            stop.set()
            for worker in workers:
                worker.join(60)
        jwks = {get(url + "/.well-known/jwks")[0] for url in urls}

    assert not results.failures, results.failures
    assert results.verified >= 2 * results.issued - 3 and results.issued >= 30, results
    # Each rotation's key took over signing, in order, and the retired ones were pruned.
    created = [r["kid"] for r in results.rotations]
    assert results.kids[1:] == created[:len(results.kids) - 1], (results.kids, created)
    assert {p["kid"] for p in results.pruned} <= {results.kids[0], *created}
    assert not {p["kid"] for p in results.pruned} & {results.kids[-1]}
    assert results.most_published <= MOST_PUBLISHED, results.most_published
    assert len(jwks) == 1, "the replicas serve one JWKS"
    left = sorted(p.name for p in deployment.keys.glob("*.pem"))
    assert len(left) <= MOST_PUBLISHED, left
