"""The contract run through the whole service, for every backend.

Each backend's tests describe their backend as a `ServiceSubject` and declare a test class made
of the contracts below (`class TestVaultContract(ServiceContract, FaultContract)` with
`subject_class = VaultSubject`, beside a `subject` fixture). Every backend then passes the same
tests, through the real HTTP API where it is the service's promise:
- the backend-level contract (keysvc.testing.backend_contract), check by check;
- tokens of each key type the backend offers verify with PyJWT against the JWKS the service
  served, with the backend's key, and /v1/keys lists it;
- two rotations with zero failed verifications by a strict caching verifier (on a test's
  clock: the backend real, the lifecycle's seconds the test's);
- each fault the backend can suffer gives 503 + Retry-After while the JWKS is served from the
  last good ring, and the service recovers by itself;
- a backend down when the service starts: unready, then ready once it is back.
What only one backend has to say (a KMS call count, an alias moved) goes in its subject's
`check_tokens` / `check_rotations` hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import jwt
import pytest

from keysvc.backends.base import CreatesVersions
from keysvc.keygen import public_pem
from keysvc.config import merge
from keysvc.testing.backend_contract import Check, ContractSubject, checks_for
from tests.clock import VirtualClock
from tests.conftest import FAST_ROTATION
from tests.service import RUN, RunningService, backend_detail, start_service
from tests.verification import RotationReport, assert_rotation_without_failures, verify_once

SUB = "organization:acme:workspace:networking:run_phase:plan"
PRIVATE_FIELDS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k", "x5c", "x5t", "x5t#S256"}


@dataclass(frozen=True)
class KeyCase:
    """A key type the backend offers, and the token algorithm it signs with."""

    key_type: str
    """In the subject's own words (a Vault key type, a KMS algorithm, a keygen type)."""
    alg: str
    """The JWS algorithm tokens get."""
    algorithm: str | None = None
    """`tokens.algorithm` to configure (PS256 on an RSA key), if any."""

    @property
    def id(self) -> str:
        return f"{self.key_type}-{self.alg}"


@dataclass(frozen=True)
class FaultCase:
    """A fault the subject can inject, and what the service must answer while it lasts."""

    name: str
    details: tuple[str, ...] = ()
    """Texts of keysvc's log line behind the 503 (never in the reply itself)."""
    retry_after: str | None = None
    """The exact Retry-After, when the backend passes on the server's own."""
    refresh_fails: bool = True
    """Whether listing fails too (a corrupted signature does not stop listing)."""
    within: float = 10.0
    """How long the 503 may take: the backend's own deadlines, generously."""


KEYGEN_CASES = [
    KeyCase("ec-p256", "ES256"),
    KeyCase("ec-p384", "ES384"),
    KeyCase("rsa-2048", "RS256"),
    KeyCase("rsa-2048", "PS256", algorithm="PS256"),
    KeyCase("ed25519", "EdDSA"),
]
"""Every key type keysvc generates itself (keysvc.keygen): memory, file and PKCS#11 keys."""


class ServiceSubject(ContractSubject):
    """A backend as the service sees it: a `[[backends]]` table over keys the subject seeds."""

    name: ClassVar[str]
    """The backend's name in the config."""
    key_cases: ClassVar[list[KeyCase]]
    rotation_key: ClassVar[str]
    """The key type rotations and faults run with."""
    faults: ClassVar[list[FaultCase]] = [FaultCase("outage")]
    secrets: tuple[str, ...] = ()
    """Strings that must never reach a reply or the log (PINs, client secrets, tokens)."""

    def table(self) -> dict[str, Any]:
        """The `[[backends]]` table (with name and type) over the subject's keys."""
        raise NotImplementedError

    async def seed(self, key_type: str) -> None:
        """Make one key version of `key_type` exist before the service starts (created an
        hour ago where the backend lets the subject say so). By default through a backend."""
        async with _opened(self.make_backend()) as backend:
            assert isinstance(backend, CreatesVersions)
            await backend.create_version()

    async def inject(self, fault: str) -> None:
        """Start `fault` (by default the only one: "outage")."""
        assert fault == "outage", fault
        self._outage = self.outage()
        await self._outage.__aenter__()

    async def heal(self, fault: str) -> None:
        assert fault == "outage", fault
        await self._outage.__aexit__(None, None, None)

    async def check_tokens(self, svc: RunningService, issued: dict[str, Any]) -> None:
        """Backend-specific checks after a token and a /v1/sign answer were issued."""

    async def check_rotations(self, svc: RunningService, report: RotationReport) -> None:
        """Backend-specific checks after two rotations."""


@contextlib.asynccontextmanager
async def _opened(backend: Any) -> Any:
    try:
        await backend.open()
        yield backend
    finally:
        await backend.close()


def config(subject: ServiceSubject, **tokens: Any) -> dict[str, Any]:
    data = merge(FAST_ROTATION, {"backends": [subject.table()]})
    return merge(data, {"tokens": tokens}) if tokens else data


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def assert_no_secrets(subject: ServiceSubject, *texts: str) -> None:
    for secret in subject.secrets:
        for text in texts:
            assert secret not in text


async def issue_status(svc: RunningService) -> tuple[int, Any, Any]:
    return await svc.request("POST", "/v1/tokens", json=RUN)


async def eventually_ready(svc: RunningService, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (await svc.request("GET", "/readyz"))[0] != 200:  # the refresh loop recovers
        assert time.monotonic() < deadline, f"not ready {seconds:g}s after the backend was back"
        await asyncio.sleep(0.2)


class BackendContract:
    """The backend-level contract, one test per check that applies."""

    subject_class: ClassVar[type[ServiceSubject]]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        subject_class = self.subject_class
        if "check" in metafunc.fixturenames:
            metafunc.parametrize("check", checks_for(subject_class), ids=str)
        if "key_case" in metafunc.fixturenames:
            metafunc.parametrize("key_case", subject_class.key_cases, ids=lambda c: c.id)
        if "fault" in metafunc.fixturenames:
            metafunc.parametrize("fault", subject_class.faults, ids=lambda f: f.name)

    async def test_backend_contract(self, subject: ServiceSubject, check: Check) -> None:
        await check(subject)


class ServiceContract(BackendContract):
    """Tokens verify against the served JWKS, for every key type; two rotations, no failure."""

    async def test_tokens_verify_against_the_served_jwks(
        self, subject: ServiceSubject, key_case: KeyCase
    ) -> None:
        await subject.seed(key_case.key_type)
        tokens = {"algorithm": key_case.algorithm} if key_case.algorithm else {}
        async with start_service(config(subject, **tokens)) as svc:
            issued = await svc.issue()
            assert issued["alg"] == key_case.alg
            header = jwt.get_unverified_header(issued["token"])
            assert header["alg"] == key_case.alg and header["kid"] == issued["kid"]

            # The JWKS the service served holds the key, public fields only.
            (jwk,) = [k for k in (await svc.jwks())["keys"] if k["kid"] == issued["kid"]]
            assert jwk["alg"] == key_case.alg and jwk["use"] == "sig"
            assert not PRIVATE_FIELDS & set(jwk)
            (ring_key,) = [k for k in svc.ring.all_keys() if k.kid == issued["kid"]]
            assert public_pem(jwt.PyJWK(jwk).key) == public_pem(ring_key.version.public_key)

            claims = await verify_once(svc.url, issued["token"], RUN["audience"])
            assert claims["sub"] == SUB

            status, _, listing = await svc.request("GET", "/v1/keys")
            assert status == 200, listing
            (row,) = [k for k in listing["keys"] if k["kid"] == issued["kid"]]
            assert (row["backend"], row["state"]) == (subject.name, "active")
            assert row["alg"] == key_case.alg
            assert row["created_at"] == _iso(ring_key.version.created_at)

            status, _, signed = await svc.request(
                "POST", "/v1/sign", json={"claims": {"sub": "x", "aud": "y"}}
            )
            assert status == 200, signed
            assert (await verify_once(svc.url, signed["token"], "y"))["sub"] == "x"
            await subject.check_tokens(svc, issued)

    async def test_two_rotations_without_a_failed_verification(
        self, subject: ServiceSubject
    ) -> None:
        await subject.seed(subject.rotation_key)
        clock = VirtualClock()
        async with start_service(config(subject), refresh_loop=False, clock=clock) as svc:
            backend = svc.ring.backend(subject.name)
            assert isinstance(backend, CreatesVersions)
            report = await assert_rotation_without_failures(svc, backend.create_version, clock)
            await subject.check_rotations(svc, report)


class FaultContract:
    """Faults give 503 + Retry-After while the JWKS is served, and the service recovers; a
    backend down when the service starts leaves it unready until the backend is back."""

    async def test_fault_gives_503_while_the_jwks_is_served_then_recovers(
        self, subject: ServiceSubject, fault: FaultCase, caplog: pytest.LogCaptureFixture
    ) -> None:
        await subject.seed(subject.rotation_key)
        async with start_service(config(subject)) as svc:
            first = await svc.issue()
            jwks_before = await svc.jwks()

            await subject.inject(fault.name)
            try:
                started = time.monotonic()
                status, headers, body = await issue_status(svc)
                assert time.monotonic() - started < fault.within
                assert status == 503, body
                assert set(body["error"]) == {"code", "message"}
                assert "Traceback" not in json.dumps(body)
                assert body["error"]["code"] == "backend_unavailable", body
                assert headers["Retry-After"].isdigit() and int(headers["Retry-After"]) >= 1
                if fault.retry_after is not None:
                    assert headers["Retry-After"] == fault.retry_after
                detail = backend_detail(caplog, body)
                for text in fault.details:
                    assert text in detail, detail
                    assert text not in body["error"]["message"]
                assert_no_secrets(subject, json.dumps(body), detail)

                # The ring cannot refresh now, yet the JWKS is served from the last good ring.
                errors = await svc.ring.refresh()
                assert (subject.name in errors) == fault.refresh_fails, errors
                status, _, jwks = await svc.request("GET", "/.well-known/jwks")
                assert status == 200 and jwks["keys"] == jwks_before["keys"]
                assert (await svc.request("GET", "/.well-known/openid-configuration"))[0] == 200
                status, _, ready = await svc.request("GET", "/readyz")
                assert status == 200, ready
            finally:
                await subject.heal(fault.name)

            deadline = time.monotonic() + subject.recovery_seconds
            while (status := (await issue_status(svc))[0]) != 200:
                assert status == 503
                assert time.monotonic() < deadline, f"no recovery after {fault.name}"
                await asyncio.sleep(0.2)
            issued = await svc.issue()
            claims = await verify_once(svc.url, issued["token"], RUN["audience"])
            first_claims = jwt.decode(first["token"], options={"verify_signature": False})
            assert claims["jti"] != first_claims["jti"]
            assert await svc.ring.refresh() == {}
            assert (await svc.jwks())["keys"] == jwks_before["keys"]
        assert_no_secrets(subject, caplog.text)

    async def test_down_at_start_then_recovers(
        self, subject: ServiceSubject, caplog: pytest.LogCaptureFixture
    ) -> None:
        await subject.seed(subject.rotation_key)
        async with contextlib.AsyncExitStack() as stack:
            outage = subject.outage()
            await outage.__aenter__()
            in_outage = True
            try:
                svc = await stack.enter_async_context(start_service(config(subject)))
                status, _, _ = await svc.request("GET", "/readyz")
                assert status == 503
                status, headers, body = await issue_status(svc)
                assert status == 503 and int(headers["Retry-After"]) >= 1, body
            finally:
                in_outage = False
                await outage.__aexit__(None, None, None)
            assert not in_outage
            await eventually_ready(svc, subject.recovery_seconds)
            issued = await svc.issue()
            await verify_once(svc.url, issued["token"], RUN["audience"])
        assert_no_secrets(subject, caplog.text)


class EmptyStartContract:
    """A backend with no key yet: the service starts unready (503), and signs once a version
    is created (no restart)."""

    async def test_starts_unready_without_a_key_then_signs(self, subject: ServiceSubject) -> None:
        async with start_service(config(subject), refresh_loop=False) as svc:
            assert (await svc.request("GET", "/readyz"))[0] == 503
            status, headers, body = await issue_status(svc)
            assert status == 503 and int(headers["Retry-After"]) >= 1, body
            backend = svc.ring.backend(subject.name)
            assert isinstance(backend, CreatesVersions)
            version = await backend.create_version()
            await svc.ring.refresh()
            issued = await svc.issue()
            (row,) = (await svc.request("GET", "/v1/keys"))[2]["keys"]
            assert row["kid"] == issued["kid"] and row["created_at"] == _iso(version.created_at)
            await verify_once(svc.url, issued["token"], RUN["audience"])
