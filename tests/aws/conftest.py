"""Fixtures for the AWS KMS backend: one moto server per session, reset before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from keysvc.backends.aws_kms import AwsKmsBackend, AwsKmsSettings

from . import moto_kms_fixes
from .moto_server import FaultInjector, MotoServer

REGION = "eu-west-1"


@pytest.fixture(scope="session")
def aws_server() -> Iterator[MotoServer]:
    moto_kms_fixes.install()
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()
        moto_kms_fixes.uninstall()


@pytest.fixture(autouse=True)
def aws_env(aws_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fresh moto state, static test credentials through the standard chain's environment
    step, and no shared config or instance metadata from the host."""
    aws_server.reset()
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-access-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def faults(aws_server: MotoServer) -> FaultInjector:
    return aws_server.faults


@pytest.fixture
def kms(aws_server: MotoServer, aws_env: None) -> Any:
    """A plain boto3 KMS client on the same server: the test's own, independent view."""
    return boto3.client("kms", region_name=REGION, endpoint_url=aws_server.url)


@pytest.fixture
async def make_backend(aws_server: MotoServer) -> AsyncIterator[Any]:
    """Build and open AwsKmsBackends against the moto server; all are closed after the test."""
    opened: list[AwsKmsBackend] = []

    async def make(name: str = "aws", **settings: Any) -> AwsKmsBackend:
        settings.setdefault("region", REGION)
        settings.setdefault("endpoint_url", aws_server.url)
        backend = AwsKmsBackend(name, AwsKmsSettings.model_validate(settings))
        await backend.open()
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        await backend.close()


def create_key(kms: Any, key_spec: str = "ECC_NIST_P256", tags: dict[str, str] | None = None,
               usage: str = "SIGN_VERIFY", alias: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"KeySpec": key_spec, "KeyUsage": usage}
    if tags:
        params["Tags"] = [{"TagKey": k, "TagValue": v} for k, v in tags.items()]
    meta = kms.create_key(**params)["KeyMetadata"]
    if alias:
        kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    return meta
