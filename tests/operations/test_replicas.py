"""Three `keysvc serve` processes on one key directory agree on the JWKS and the signing key at
every moment across a rotation, without talking to each other: the ring is a function of the
key versions and the clock.

Each sample asks the three replicas at the same moment. The only allowed disagreements are the
ones the lifecycle predicts: the JWKS right after the new key file appears (until every replica
has refreshed), and samples whose requests straddle an instant at which state changes by the
clock (the new key's `signs_from`, the old key's `published_until`).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tests.cli import run
from tests.service import free_port

from .deployment import FAST_LEAD, Deployment, get

REFRESH_SLACK = 1.0  # refresh_interval is 250ms; allow for a loaded machine
CLOCK_SLACK = 0.05


@dataclass
class Sample:
    start: float
    end: float
    jwks: list[bytes]
    signers: list[str]

    def straddles(self, instant: float) -> bool:
        return self.start - CLOCK_SLACK <= instant <= self.end + CLOCK_SLACK


def observe(url: str) -> tuple[bytes, str]:
    jwks, _ = get(url + "/.well-known/jwks")
    ready, _ = get(url + "/readyz")
    return jwks, json.loads(ready)["signing_kid"]


def kids(jwks: bytes) -> list[str]:
    return [k["kid"] for k in json.loads(jwks)["keys"]]


def test_three_replicas_agree_at_every_moment_across_a_rotation(tmp_path: Path) -> None:
    deployment = Deployment.create(tmp_path)  # publish lead 6s, max-age 1s, max_ttl 1s
    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
    samples: list[Sample] = []
    with ExitStack() as stack, ThreadPoolExecutor(3) as pool:
        for url in urls:
            stack.enter_context(deployment.serve(url))
        before = list(pool.map(observe, urls))
        assert len({jwks for jwks, _ in before}) == 1 and len({s for _, s in before}) == 1
        (old_kid,) = kids(before[0][0])

        new_kid, created = deployment.rotate()
        signs_from = created + FAST_LEAD
        retired = signs_from + 2  # old key: published for max_ttl + jwks_max_age after it stops
        while time.time() < retired + 1:
            start = time.time()
            observed = list(pool.map(observe, urls))
            samples.append(
                Sample(start, time.time(), [j for j, _ in observed], [s for _, s in observed])
            )
            time.sleep(0.1)

    assert samples[0].start < signs_from - 4, "sampling must begin well before the switch"
    old_jwks, both_jwks, new_jwks = before[0][0], set(), set()
    for sample in samples:
        if not sample.straddles(signs_from):
            assert len(set(sample.signers)) == 1, sample
            expected = new_kid if sample.start > signs_from else old_kid
            assert sample.signers[0] == expected, sample
        if sample.straddles(retired):
            continue
        if sample.start > created + REFRESH_SLACK:
            assert len(set(sample.jwks)) == 1, sample
        for jwks in sample.jwks:
            listed = kids(jwks)
            if sample.end < retired:
                assert listed in ([old_kid], [old_kid, new_kid]), listed
                if listed == [old_kid]:
                    assert jwks == old_jwks and sample.start < created + REFRESH_SLACK
                else:
                    both_jwks.add(jwks)
            else:
                assert listed == [new_kid]
                new_jwks.add(jwks)
    # one byte-identical document per phase, shared by all replicas
    assert len(both_jwks) == 1 and len(new_jwks) == 1
    first_with_new = min(s.end for s in samples if all(new_kid in kids(j) for j in s.jwks))
    assert first_with_new + 1 <= signs_from, (
        "every replica publishes the key a max-age before it signs"
    )
    assert {s.signers[0] for s in samples} == {old_kid, new_kid}

    # and `keysvc publish` writes the very bytes the replicas serve
    out = tmp_path / "www"
    published = run("publish", "--config", str(deployment.config), "--to", str(out))
    assert published.returncode == 0, published.stderr
    assert (out / ".well-known" / "jwks").read_bytes() == new_jwks.pop()
