"""The GCP Cloud KMS backend under the contract (real google-cloud-kms client, Cloud KMS fake):
backend-level checks, and the service's: tokens verify against the served JWKS, two rotations,
KMS faults give 503 + Retry-After while the JWKS stays served, and recovery on its own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from keysvc.backends.gcp_kms import GcpKmsBackend, GcpKmsSettings
from tests.contract.service import (
    FaultCase,
    FaultContract,
    KeyCase,
    ServiceContract,
    ServiceSubject,
)
from tests.fakes.gcp_kms import FakeCloudKms
from tests.gcp.conftest import KEY, local_settings
from tests.service import RunningService
from tests.verification import RotationReport

AN_HOUR_AGO = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def fault(name: str, *details: str, **expected: Any) -> FaultCase:
    """A KMS fault: the 503 names Cloud KMS and the key in keysvc's log, so it came from the
    backend's own deadlines (1 s per call, 0.5 s of retries), not the ring's sign_timeout."""
    return FaultCase(name, ("Cloud KMS", KEY, *details), **expected)


class GcpSubject(ServiceSubject):
    backend_class = GcpKmsBackend
    name = "gcp"
    key_cases = [
        KeyCase("EC_SIGN_P256_SHA256", "ES256"),
        KeyCase("EC_SIGN_P384_SHA384", "ES384"),
        KeyCase("RSA_SIGN_PKCS1_2048_SHA256", "RS256"),
        KeyCase("RSA_SIGN_PSS_2048_SHA256", "PS256"),
    ]
    rotation_key = "EC_SIGN_P256_SHA256"
    faults = [
        fault("outage"),
        fault("unavailable"),
        fault("internal"),
        fault("throttled", retry_after="3"),  # Google's RetryInfo delay, passed on
        fault("slow"),
        # A corrupted signature does not stop listing: public keys are cached and checked.
        fault("corrupt", "integrity check", refresh_fails=False),
    ]

    def __init__(self, kms: FakeCloudKms) -> None:
        self.kms = kms

    def table(self) -> dict[str, Any]:
        return {"name": self.name, "type": "gcp_kms",
                **local_settings(self.kms, timeout="1s", retry_budget="0.5s")}

    def make_backend(self) -> GcpKmsBackend:
        if KEY not in self.kms.keys:
            self.kms.add_key(KEY, self.rotation_key, versions=0)
        return GcpKmsBackend(self.name, GcpKmsSettings.model_validate(local_settings(self.kms)))

    async def seed(self, key_type: str) -> None:
        self.kms.add_key(KEY, key_type, created=[AN_HOUR_AGO])

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        await self.kms.stop()
        try:
            yield
        finally:
            await self.kms.start()  # the same port

    async def inject(self, fault: str) -> None:
        if fault == "outage":
            await self.kms.stop()
        elif fault == "unavailable":
            self.kms.fail(grpc.StatusCode.UNAVAILABLE)
        elif fault == "internal":
            self.kms.fail(grpc.StatusCode.INTERNAL, "Internal error encountered.")
        elif fault == "throttled":
            self.kms.throttle(retry_after=3)
        elif fault == "slow":
            self.kms.delay = 3
        else:
            assert fault == "corrupt", fault
            self.kms.corrupt.add("signature")

    async def heal(self, fault: str) -> None:
        if fault == "outage":
            await self.kms.start()
        self.kms.heal()

    async def check_tokens(self, svc: RunningService, issued: dict[str, Any]) -> None:
        (key,) = svc.ring.all_keys()
        assert key.created_at == AN_HOUR_AGO  # the version's createTime, as KMS reports it
        assert self.kms.calls["AsymmetricSign"] == 2  # one KMS call per token

    async def check_rotations(self, svc: RunningService, report: RotationReport) -> None:
        assert self.kms.calls["CreateCryptoKeyVersion"] == 2
        # Public keys were read once per version, not once per refresh.
        assert self.kms.calls["GetPublicKey"] == 3


@pytest.fixture
def subject(kms: FakeCloudKms) -> GcpSubject:
    return GcpSubject(kms)


class TestGcpContract(ServiceContract, FaultContract):
    subject_class = GcpSubject
