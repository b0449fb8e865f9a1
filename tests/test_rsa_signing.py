"""`tokens.rsa_signing` in the running service.

The sign timeout bounds an in-process RSA key's queue as it bounds a remote backend: under more
concurrent requests than a slow key can sign within `tokens.sign_timeout`, the ones beyond it get
503 with Retry-After, none gets a 500, and every 200 carries a token that verifies (PyJWT,
against the JWKS the service serves). With either `tokens.rsa_signing`: "loop" refuses what
would wait too long as it arrives (once a signature's time is known) or when it reaches the head
of the queue, and signs nothing for a refused request; "threads" stops waiting at the timeout.

The slow key is the memory backend's key in this process, made slow on purpose: each signature
holds its thread for 50 ms (on the event loop with "loop", in a one-thread pool with
"threads"), as a large RSA key on a slow machine would."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from keysvc import jose
from keysvc.backends.base import KeyVersion
from keysvc.backends.memory import MemoryBackend, MemorySettings
from tests.conftest import file_config, write_key
from tests.service import RUN, start_service
from tests.verification import caching_verifier

DELAY = 0.05
BURST = 60
"""Requests at once: three times what the key signs within the 1 s timeout."""


class SlowKey(MemoryBackend):
    """An in-process key (the ring schedules it like a file key) that signs in DELAY seconds."""

    def __init__(self, name: str, settings: MemorySettings) -> None:
        super().__init__(name, settings)
        self.signed = 0
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slow-sign")

    def signs_at_once(self, version: KeyVersion, alg: jose.Algorithm) -> bool:
        return True

    def sign_now(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        time.sleep(DELAY)  # holds the thread, as an RSA signature does
        self.signed += 1
        return jose.sign_local(self.store.entry(version.version_id).private_key, alg, message)

    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self.sign_now, version, alg, message)

    async def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@pytest.mark.parametrize("rsa_signing", ["loop", "threads"])
async def test_requests_beyond_the_sign_timeout_get_503_and_every_200_verifies(
    rsa_signing: str,
) -> None:
    backend = SlowKey("slow", MemorySettings(key_type="rsa-2048"))
    config = {
        "tokens": {"sign_timeout": "1s", "rsa_signing": rsa_signing},
        "backends": [{"name": "slow", "type": "memory", "key_type": "rsa-2048"}],
    }
    code = "overloaded" if rsa_signing == "loop" else "backend_unavailable"
    errors = {"backend": "slow", "operation": "sign"}
    errors_before = sample("keysvc_backend_errors_total", errors)
    refused = {"endpoint": "tokens", "kid": "", "backend": "", "outcome": "overloaded"}
    refused_before = sample("keysvc_tokens_issued_total", refused)
    async with start_service(config, backends=[backend]) as svc:
        verifier = await caching_verifier(svc.url)
        issued = 0
        # The first burst comes before any signature was measured (the queue's deadline is kept
        # at its head), the second after (refused as they arrive).
        for _ in range(2):
            replies = await asyncio.gather(
                *(svc.request("POST", "/v1/tokens", json=RUN) for _ in range(BURST))
            )
            statuses = collections.Counter(status for status, _, _ in replies)
            assert set(statuses) == {200, 503}, statuses
            for status, headers, body in replies:
                if status == 503:
                    assert body["error"]["code"] == code, body
                    assert int(headers["Retry-After"]) >= 1
                else:
                    claims = await verifier.averify(body["token"], RUN["audience"])
                    assert claims["jti"] and body["alg"] == "RS256"
            issued += statuses[200]
            if rsa_signing == "loop":
                assert backend.signed == issued  # nothing signed for a refused request
            else:  # a signature in progress when its caller's timeout fires still ends
                assert backend.signed >= issued
        # Overload is counted as such, not as the backend's failure; a timeout of the backend's
        # own pool is the backend's.
        overloaded = sample("keysvc_tokens_issued_total", refused) - refused_before
        backend_errors = sample("keysvc_backend_errors_total", errors) - errors_before
        if rsa_signing == "loop":
            assert (overloaded, backend_errors) == (2 * BURST - issued, 0)
        else:
            assert (overloaded, backend_errors) == (0, 2 * BURST - issued)


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(("rsa_signing", "workers", "warned"), [
    ("loop", 1, True),
    ("loop", 2, False),
    ("threads", 1, False),
])
async def test_a_loop_signer_with_fewer_workers_than_cores_is_warned_about(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    rsa_signing: str,
    workers: int,
    warned: bool,
) -> None:
    """On the loop a worker signs RSA on one core: with fewer workers than cores, say so."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})  # two cores, here and in CI
    write_key(tmp_path, "rsa-2048")
    config = {
        **file_config(tmp_path),
        "server": {"workers": workers},
        "tokens": {"rsa_signing": rsa_signing},
    }
    with caplog.at_level(logging.WARNING, logger="keysvc.service"):
        async with start_service(config) as svc:
            await svc.issue()
    lines = [r.getMessage() for r in caplog.records if "rsa_signing" in r.getMessage()]
    if warned:
        assert lines == [
            'tokens.rsa_signing = "loop" signs RSA on each worker\'s event loop, one core per'
            " worker: 1 worker(s) leave 1 of this machine's 2 cores to other work; set"
            ' server.workers = 2, or rsa_signing = "threads"'
        ]
    else:
        assert lines == []
