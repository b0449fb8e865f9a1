"""Fixtures for the GCP Cloud KMS backend: a running fake KMS and backends opened against it
through the real google-cloud-kms client (gRPC asyncio transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from keysvc.backends.gcp_kms import GcpKmsBackend, GcpKmsSettings
from tests.fakes.gcp_kms import FakeCloudKms

KEY = "projects/keysvc-test/locations/global/keyRings/keysvc/cryptoKeys/oidc"

BackendFactory = Callable[..., Awaitable[GcpKmsBackend]]


@pytest.fixture
async def kms() -> AsyncIterator[FakeCloudKms]:
    async with FakeCloudKms() as fake:
        yield fake


def local_settings(kms: FakeCloudKms, **overrides: Any) -> dict[str, Any]:
    """Backend settings for the fake: plaintext to its loopback endpoint, short deadlines."""
    return {
        "key": KEY,
        "endpoint": kms.endpoint,
        "insecure": True,
        "timeout": "2s",
        "retry_budget": "1s",
        **overrides,
    }


@pytest.fixture
async def open_backend(kms: FakeCloudKms) -> AsyncIterator[BackendFactory]:
    """Open a GcpKmsBackend against the fake (settings overridable); closed afterwards."""
    opened: list[GcpKmsBackend] = []

    async def factory(**overrides: Any) -> GcpKmsBackend:
        settings = GcpKmsSettings.model_validate(local_settings(kms, **overrides))
        backend = GcpKmsBackend("gcp", settings)
        await backend.open()
        opened.append(backend)
        return backend

    yield factory
    for backend in opened:
        await backend.close()
