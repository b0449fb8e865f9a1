"""The PKCS#11 backend under the contract, on a SoftHSM2 token: backend-level checks, and the
service's: tokens verify against the served JWKS, two rotations, a token that vanishes gives
503 + Retry-After while the JWKS is served and is found again when it is back, a token missing
when the service starts, and an empty token (unready until a key is generated)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from keysvc.backends import pkcs11_library
from keysvc.backends.pkcs11 import Pkcs11Backend, Pkcs11Settings
from tests.contract.service import (
    EmptyStartContract,
    FaultCase,
    KEYGEN_CASES,
    FaultContract,
    ServiceContract,
    ServiceSubject,
)
from tests.pkcs11.conftest import SoftHsmToken


class Pkcs11Subject(ServiceSubject):
    backend_class = Pkcs11Backend
    name = "hsm"
    key_cases = KEYGEN_CASES
    rotation_key = "ec-p256"
    faults = [FaultCase("outage", ("keysvc-test",))]  # the token's label, in keysvc's log only

    def __init__(self, softhsm: SoftHsmToken) -> None:
        self.softhsm = softhsm
        self.key_type = self.rotation_key
        self.secrets = (softhsm.pin,)

    def table(self) -> dict[str, Any]:
        return self.softhsm.table(key_type=self.key_type, sessions=2)

    def make_backend(self) -> Pkcs11Backend:
        table = self.table()
        name, _ = table.pop("name"), table.pop("type")
        return Pkcs11Backend(name, Pkcs11Settings.model_validate(table))

    async def seed(self, key_type: str) -> None:
        self.key_type = key_type
        await super().seed(key_type)

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """The HSM drops off the network: its client restarts (every session and the login are
        gone) and finds no token (the token directory is away); then the token comes back with
        its keys."""
        away = self.softhsm.directory.with_name("away")
        away.mkdir()
        tokens = list(self.softhsm.directory.iterdir())
        for path in tokens:
            path.rename(away / path.name)
        loaded = pkcs11_library.acquire_module(self.softhsm.module)
        try:
            loaded.lib.reinitialize()
        finally:
            pkcs11_library.release_module(loaded)
        try:
            yield
        finally:
            for path in tokens:
                (away / path.name).rename(path)
            away.rmdir()


@pytest.fixture(autouse=True)
def _module_released() -> Iterator[None]:
    yield
    assert not pkcs11_library._modules, "a PKCS#11 module was left loaded"


@pytest.fixture
def subject(softhsm: SoftHsmToken) -> Pkcs11Subject:
    return Pkcs11Subject(softhsm)


class TestPkcs11Contract(ServiceContract, FaultContract, EmptyStartContract):
    subject_class = Pkcs11Subject
