"""The memory backend under the contract, backend-level and through the service (it is the
reference for plugin authors, so it passes everything, outage included)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keysvc.backends.memory import MemoryBackend, MemorySettings, shared_store
from keysvc.testing.backend_contract import CHECKS, checks_for
from tests.contract.service import (
    EmptyStartContract,
    KEYGEN_CASES,
    FaultContract,
    ServiceContract,
    ServiceSubject,
)


class MemorySubject(ServiceSubject):
    backend_class = MemoryBackend
    name = "memory"
    recovery_seconds = 5.0
    key_cases = KEYGEN_CASES
    rotation_key = "ec-p256"

    def __init__(self, **settings: Any) -> None:
        self.store_name = f"contract-{uuid.uuid4().hex}"
        self.store = shared_store(self.store_name)  # held here: it lives as long as the subject
        self.settings = settings

    def table(self) -> dict[str, Any]:
        return {"name": self.name, "type": "memory", "store": self.store_name, **self.settings}

    def make_backend(self) -> MemoryBackend:
        return MemoryBackend(self.name, MemorySettings(store=self.store_name, **self.settings))

    async def seed(self, key_type: str) -> None:
        self.store.add(key_type, created_at=datetime.now(UTC) - timedelta(hours=1))  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        self.store.fail(retry_after=2)
        try:
            yield
        finally:
            self.store.recover()


@pytest.fixture
def subject() -> MemorySubject:
    return MemorySubject()


class TestMemoryContract(ServiceContract, FaultContract):
    subject_class = MemorySubject


class TestMemoryEmptyStart(EmptyStartContract):
    @pytest.fixture
    def subject(self) -> MemorySubject:
        return MemorySubject(initial_versions=0)


def test_every_check_applies_to_the_memory_backend() -> None:
    assert checks_for(MemorySubject) == list(CHECKS)
