"""The contract's checks catch the backends that break it: each broken memory backend below
breaks one promise, and the check for that promise fails with a message saying which."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from keysvc import jose
from keysvc.backends.base import BackendError, BackendUnavailable, KeyBackend, KeyVersion
from keysvc.backends.memory import MemoryBackend, MemorySettings, shared_store
from keysvc.testing.backend_contract import CHECKS, ContractSubject, ContractViolation, run_contract


class NaiveTimes(MemoryBackend):
    async def list_versions(self) -> list[KeyVersion]:
        return [
            dataclasses.replace(v, created_at=v.created_at.replace(tzinfo=None))
            for v in await super().list_versions()
        ]


class NewKeyEveryListing(MemoryBackend):
    async def list_versions(self) -> list[KeyVersion]:
        self.store.add(self.settings.key_type)
        return await super().list_versions()


class SignsWithTheLatest(MemoryBackend):
    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        latest = max(await self.list_versions(), key=lambda v: v.created_at)
        return await super().sign(latest, alg, message)


class SaysDerSendsRaw(MemoryBackend):
    signature_encoding = "der"


class SignsAnotherMessage(MemoryBackend):
    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        return await super().sign(version, alg, message + b".")


class DisableDoesNothing(MemoryBackend):
    async def disable_version(self, version: KeyVersion) -> None:
        self.store.check()


class CreatedButNotListed(MemoryBackend):
    async def create_version(self) -> KeyVersion:
        version = await super().create_version()
        self.store.disable(version.version_id)
        return version


class PromisesES384OnP256(MemoryBackend):
    async def list_versions(self) -> list[KeyVersion]:
        return [
            dataclasses.replace(v, algorithms=frozenset({jose.Algorithm.ES384}))
            for v in await super().list_versions()
        ]


class OutageIsAnError(MemoryBackend):
    async def list_versions(self) -> list[KeyVersion]:
        try:
            return await super().list_versions()
        except BackendUnavailable as exc:
            raise BackendError(str(exc)) from None


class OutageWithoutHint(MemoryBackend):
    async def list_versions(self) -> list[KeyVersion]:
        try:
            return await super().list_versions()
        except BackendUnavailable as exc:
            raise BackendUnavailable(str(exc), retry_after=0) from None


class Subject(ContractSubject):
    backend_class: type[KeyBackend] = MemoryBackend
    recovery_seconds = 0.5
    shared = True
    never_recovers = False

    def __init__(self) -> None:
        self.name = f"checks-{uuid.uuid4().hex}"
        self.store = shared_store(self.name)

    def make_backend(self) -> MemoryBackend:
        settings = MemorySettings(store=self.name if self.shared else None)
        return self.backend_class("memory", settings)  # type: ignore[call-arg,return-value]

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        self.store.fail()
        try:
            yield
        finally:
            if not self.never_recovers:
                self.store.recover()


def subject(backend_class: type[MemoryBackend] = MemoryBackend, **attributes: Any) -> Subject:
    cls = type("BrokenSubject", (Subject,), {"backend_class": backend_class, **attributes})
    return cls()


BROKEN = [
    ("listing_is_stable", subject(NaiveTimes), "has no time zone"),
    ("listing_is_stable", subject(NewKeyEveryListing), "a second listing differs"),
    ("listing_is_stable", subject(shared=False), "a replica"),
    ("listing_is_stable", subject(PromisesES384OnP256), "declares ['ES384']"),
    ("signature_is_by_the_requested_version", subject(SignsWithTheLatest), "signed with version"),
    ("signatures_verify", subject(SaysDerSendsRaw), "declared DER"),
    ("signatures_verify", subject(SignsAnotherMessage), "does not verify"),
    ("disabled_version_disappears", subject(DisableDoesNothing), "is still listed"),
    ("created_version_is_listed", subject(CreatedButNotListed), "is not listed"),
    ("unreachable_is_unavailable", subject(OutageIsAnError), "not BackendUnavailable"),
    ("unreachable_is_unavailable", subject(OutageWithoutHint), "without a retry hint"),
    ("unreachable_is_unavailable", subject(never_recovers=True), "did not recover"),
    ("down_at_start_recovers", subject(OutageIsAnError), "not BackendUnavailable"),
]


@pytest.mark.parametrize(
    ("check_name", "broken", "message"), BROKEN, ids=[f"{c}-{m}" for c, _, m in BROKEN]
)
async def test_a_broken_backend_fails_its_check(
    check_name: str, broken: Subject, message: str
) -> None:
    (check,) = [c for c in CHECKS if c.name == check_name]
    with pytest.raises(ContractViolation) as violation:
        await check(broken)
    assert message in str(violation.value)


async def test_run_contract_runs_every_check_without_pytest() -> None:
    assert await run_contract(subject()) == [c.name for c in CHECKS]


async def test_a_subject_that_cannot_add_versions_is_told_to_override_add_version() -> None:
    class ListsOnly(MemoryBackend):
        pass

    broken = subject(ListsOnly)
    broken.store.add("ec-p256", created_at=datetime.now(UTC))
    backend = broken.make_backend()
    backend.limitation = lambda capability: "read-only store"  # type: ignore[method-assign]
    with pytest.raises(ContractViolation, match="cannot create versions .*override add_version"):
        await broken.add_version(backend)
