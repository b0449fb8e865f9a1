"""The AWS KMS backend under the contract, against moto: backend-level checks, and the
service's: tokens verify against the served JWKS, two rotations through an alias, throttling,
server errors and an unreachable KMS give 503 + Retry-After while the JWKS is served, and
recovery. KMS is reached through a plug, so an outage never stops the shared moto server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from keysvc import jose
from keysvc.backends.aws_kms import AwsKmsBackend, AwsKmsSettings
from tests.contract.plug import Plug
from tests.contract.service import (
    FaultCase,
    FaultContract,
    KeyCase,
    ServiceContract,
    ServiceSubject,
)
from tests.service import RunningService
from tests.verification import RotationReport

from .conftest import REGION, create_key
from .moto_server import FaultInjector, MotoServer

ALIAS = "alias/keysvc"


def kid_of(kms: Any, key_id: str) -> str:
    der = kms.get_public_key(KeyId=key_id)["PublicKey"]
    return jose.thumbprint(serialization.load_der_public_key(der))  # type: ignore[arg-type]


class AwsSubject(ServiceSubject):
    backend_class = AwsKmsBackend
    name = "aws"
    key_cases = [
        KeyCase("RSA_2048", "RS256"),
        KeyCase("RSA_3072", "PS256", algorithm="PS256"),
        KeyCase("ECC_NIST_P256", "ES256"),
        KeyCase("ECC_NIST_P384", "ES384"),
    ]
    rotation_key = "ECC_NIST_P256"
    faults = [
        FaultCase("outage", ("cannot reach AWS",)),
        FaultCase("throttled", ("throttling kms:",)),  # every call: signing and listing
        FaultCase("server-error", ("server error",), refresh_fails=False),  # Sign only
    ]

    def __init__(self, kms: Any, plug: Plug, faults: FaultInjector) -> None:
        self.kms = kms
        self.plug = plug
        self.faults_injected = faults

    def table(self) -> dict[str, Any]:
        return {"name": self.name, "type": "aws_kms", "region": REGION,
                "endpoint": self.plug.url, "key_ids": [ALIAS], "max_attempts": 2}

    def _alias_target(self) -> str | None:
        aliases = self.kms.list_aliases()["Aliases"]
        return next((a.get("TargetKeyId") for a in aliases if a["AliasName"] == ALIAS), None)

    def make_backend(self) -> AwsKmsBackend:
        if self._alias_target() is None:
            create_key(self.kms, self.rotation_key, alias=ALIAS)
        table = self.table()
        del table["name"], table["type"]
        return AwsKmsBackend(self.name, AwsKmsSettings.model_validate(table))

    async def seed(self, key_type: str) -> None:
        self.meta = create_key(self.kms, key_type, alias=ALIAS)

    def outage(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.plug.unplugged()

    async def inject(self, fault: str) -> None:
        if fault == "outage":
            await super().inject(fault)
        elif fault == "throttled":
            self.faults_injected.inject("*", "ThrottlingException")
        else:
            assert fault == "server-error", fault
            self.faults_injected.inject(
                "Sign", "KMSInternalException", status=500, message="internal"
            )

    async def heal(self, fault: str) -> None:
        if fault == "outage":
            await super().heal(fault)
        self.faults_injected.clear()

    async def check_tokens(self, svc: RunningService, issued: dict[str, Any]) -> None:
        assert issued["kid"] == kid_of(self.kms, self.meta["Arn"])

    async def check_rotations(self, svc: RunningService, report: RotationReport) -> None:
        # Each signing key in turn was the alias's target when it was created.
        current = self.kms.describe_key(KeyId=ALIAS)["KeyMetadata"]["Arn"]
        assert report.signing_kids[-1] == kid_of(self.kms, current)


@pytest.fixture
async def subject(
    kms: Any, aws_server: MotoServer, faults: FaultInjector
) -> AsyncIterator[AwsSubject]:
    async with Plug(aws_server.url) as plug:
        yield AwsSubject(kms, plug, faults)


class TestAwsContract(ServiceContract, FaultContract):
    subject_class = AwsSubject
