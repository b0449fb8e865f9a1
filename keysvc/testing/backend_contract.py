"""The contract every key backend keeps, as checks its own test suite runs.

keysvc trusts a backend's listing and signatures without second-guessing them at run time, so
what a backend must do is written here once, as checks, the way SPIRE's `keymanagertest.Test`
is written once for every key manager. keysvc runs them for each built-in backend against its
real server or fake (tests/*/test_contract.py); a separate package runs them for its own.

A backend's author describes the backend under test with a `ContractSubject` and runs each
check that applies to it: `checks_for(SubjectClass)` picks them by the backend's capabilities
(CreatesVersions, DisablesVersions, DestroysVersions) and by whether the subject can make the
backend unreachable (it overrides `outage`). Every check is a coroutine function taking a
subject; a broken promise raises `ContractViolation` (an AssertionError, so test runners report
it as a failure). Signatures are verified here with `cryptography` alone, not with keysvc's own
JOSE code.

With pytest (and an asyncio plugin: pytest-asyncio or pytest-aiohttp):

    import pytest
    from keysvc.testing.backend_contract import ContractSubject, checks_for

    class Subject(ContractSubject):
        backend_class = MyBackend

        def make_backend(self):
            return MyBackend("mine", MyBackend.Settings(endpoint=SERVER_URL))

        @contextlib.asynccontextmanager
        async def outage(self):           # optional: the backend's server unreachable
            await server.stop()
            try:
                yield
            finally:
                await server.start()

    @pytest.mark.parametrize("check", checks_for(Subject), ids=str)
    async def test_backend_contract(check):
        await check(Subject())

Without pytest: `asyncio.run(run_contract(Subject()))` runs every applicable check and raises
the first violation (for unittest's IsolatedAsyncioTestCase, a script or a CI step).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from keysvc import jose
from keysvc.backends.base import (
    BackendError,
    BackendUnavailable,
    CreatesVersions,
    DestroysVersions,
    DisablesVersions,
    KeyBackend,
    KeyVersion,
    refusal,
)

__all__ = [
    "CHECKS",
    "Check",
    "ContractSubject",
    "ContractViolation",
    "checks_for",
    "prune_later",
    "run_contract",
    "verify_signature",
]

MESSAGE = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjb250cmFjdCJ9"
"""A JWS signing input, as the key ring hands backends (base64url header '.' payload)."""


class ContractViolation(AssertionError):
    """A backend broke a promise of the contract; the message says which and how."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise ContractViolation(message)


class ContractSubject:
    """The backend under contract, as its author describes it (override what applies).

    `make_backend()` returns a new, unopened backend over the subject's keys: every call, the
    same keys, so two backends made here agree as two replicas do. The checks open and close
    every backend they make. They may add versions (through `add_version`) and disable or
    destroy versions they added, so give the subject a key of its own, not a production one.
    """

    backend_class: ClassVar[type[KeyBackend]]
    """The class `make_backend` returns: which checks apply is read from its capabilities."""
    recovery_seconds: ClassVar[float] = 20.0
    """How long, once an outage ends, the backend may take to answer again."""
    unavailable_within: ClassVar[float] = 15.0
    """How long, in an outage, a call may take to raise BackendUnavailable."""

    def make_backend(self) -> KeyBackend:
        raise NotImplementedError("a ContractSubject must say how to make its backend")

    async def add_version(self, backend: KeyBackend) -> None:
        """Make one more key version exist, as `backend` will list it. By default through the
        backend's own `create_version`; override for a backend that cannot create versions
        (add one through the server's own API)."""
        if not isinstance(backend, CreatesVersions) or refusal(backend, CreatesVersions):
            raise ContractViolation(
                f"{type(self).__name__}.add_version: the backend cannot create versions"
                f" ({refusal(backend, CreatesVersions)}); override add_version"
            )
        await backend.create_version()

    def outage(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Within this context the backend's service is unreachable (a stopped server, a
        refused connection); on leaving it, it is back with the same keys. Override it for a
        backend that talks to anything outside the process; leave it for one that does not
        (the checks that need it are then not selected)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Check:
    """One promise of the contract. Call it with a subject."""

    name: str
    run: Callable[[ContractSubject], Awaitable[None]]
    needs: type | None = None
    """A capability the backend class must have for the check to apply."""
    needs_outage: bool = False

    @property
    def description(self) -> str:
        return " ".join((self.run.__doc__ or "").split())

    def __str__(self) -> str:
        return self.name

    def applies_to(self, subject_class: type[ContractSubject]) -> bool:
        backend_class = subject_class.backend_class
        if self.needs is not None and not issubclass(backend_class, self.needs):
            return False
        return not self.needs_outage or subject_class.outage is not ContractSubject.outage

    async def __call__(self, subject: ContractSubject) -> None:
        await self.run(subject)


# -- verifying with cryptography alone --------------------------------------------------------

_HASHES: dict[str, hashes.HashAlgorithm] = {
    "RS256": hashes.SHA256(),
    "PS256": hashes.SHA256(),
    "ES256": hashes.SHA256(),
    "ES384": hashes.SHA384(),
}
_EC_SIZES = {"ES256": 32, "ES384": 48}


def verify_signature(
    public_key: Any, alg: str, message: bytes, signature: bytes, encoding: str = "raw"
) -> None:
    """Verify `signature` over `message` as RFC 7518 defines `alg`, with `cryptography`.

    `encoding` is how the backend declares ECDSA signatures: "raw" (the JWS form, r‖s at the
    curve's width) or "der" (ASN.1, canonical). Raises ContractViolation when the encoding is
    not the declared one, InvalidSignature when the signature does not verify."""
    expect(
        isinstance(signature, bytes) and signature,
        f"{alg}: the signature is not a non-empty bytes object: {type(signature).__name__}",
    )
    if alg in _EC_SIZES:
        expect(isinstance(public_key, ec.EllipticCurvePublicKey), f"{alg} needs an EC key")
        size = _EC_SIZES[alg]
        if encoding == "der":
            try:
                r, s = utils.decode_dss_signature(signature)
            except ValueError:
                raise ContractViolation(
                    f"{alg}: declared DER, got {len(signature)} bytes that are not DER"
                ) from None
            expect(
                utils.encode_dss_signature(r, s) == signature,
                f"{alg}: declared DER, got a non-canonical encoding",
            )
            der = signature
        else:
            expect(
                len(signature) == 2 * size,
                f"{alg}: declared raw r‖s of {2 * size} bytes, got {len(signature)} bytes",
            )
            der = utils.encode_dss_signature(
                int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            )
        public_key.verify(der, message, ec.ECDSA(_HASHES[alg]))
    elif alg in ("RS256", "PS256"):
        expect(isinstance(public_key, rsa.RSAPublicKey), f"{alg} needs an RSA key")
        pad: padding.AsymmetricPadding = (
            padding.PKCS1v15()
            if alg == "RS256"
            else padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        )
        public_key.verify(signature, message, pad, _HASHES[alg])
    elif alg == "EdDSA":
        expect(isinstance(public_key, ed25519.Ed25519PublicKey), "EdDSA needs an Ed25519 key")
        public_key.verify(signature, message)
    else:
        raise ContractViolation(f"unknown JWS algorithm {alg}")


def _verifies(public_key: Any, alg: str, signature: bytes, encoding: str) -> bool:
    try:
        verify_signature(public_key, alg, MESSAGE, signature, encoding)
    except InvalidSignature:
        return False
    return True


def _algorithms(version: KeyVersion) -> list[jose.Algorithm]:
    fitting = jose.algorithms_for(version.public_key)
    declared = version.algorithms if version.algorithms is not None else fitting
    expect(declared, f"version {version.version_id} declares no algorithm")
    expect(
        declared <= fitting,
        f"version {version.version_id} declares {sorted(a.value for a in declared)}, which"
        f" its {jose.describe_key(version.public_key)} cannot sign",
    )
    return sorted(declared, key=lambda a: a.value)


def _public_pem(version: KeyVersion) -> bytes:
    return version.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _described(versions: list[KeyVersion]) -> list[tuple[str, Any, bytes]]:
    return sorted((v.version_id, v.created_at, _public_pem(v)) for v in versions)


# -- helpers shared by the checks -------------------------------------------------------------


@contextlib.asynccontextmanager
async def opened(backend: KeyBackend) -> AsyncIterator[KeyBackend]:
    """`backend`, opened, and closed afterwards whatever happens."""
    try:
        await backend.open()
        yield backend
    finally:
        await backend.close()


async def at_least(subject: ContractSubject, backend: KeyBackend, count: int) -> list[KeyVersion]:
    """The backend's versions, after adding as many as it takes to have `count`."""
    versions = await backend.list_versions()
    for _ in range(max(0, count - len(versions))):
        await subject.add_version(backend)
    versions = await backend.list_versions()
    expect(
        len(versions) >= count,
        f"the backend lists {len(versions)} versions after adding up to {count}",
    )
    return versions


async def _unavailable(subject: ContractSubject, call: Awaitable[Any], what: str) -> None:
    started = time.monotonic()
    try:
        await asyncio.wait_for(call, subject.unavailable_within)
    except BackendUnavailable as exc:
        expect(
            exc.retry_after > 0,
            f"{what} in an outage: BackendUnavailable without a retry hint ({exc.retry_after})",
        )
        return
    except TimeoutError:
        raise ContractViolation(
            f"{what} in an outage did not fail within {subject.unavailable_within:g}s"
        ) from None
    except BackendError as exc:
        raise ContractViolation(
            f"{what} in an outage raised {type(exc).__name__}, not BackendUnavailable: {exc}"
        ) from None
    raise ContractViolation(
        f"{what} in an outage succeeded after {time.monotonic() - started:.1f}s"
    )


async def _recovers(subject: ContractSubject, backend: KeyBackend) -> list[KeyVersion]:
    """Poll until the backend lists and signs again (within `recovery_seconds`)."""
    deadline = time.monotonic() + subject.recovery_seconds
    while True:
        try:
            versions = await backend.list_versions()
            expect(versions, "the backend lists no versions after the outage")
            version = versions[0]
            alg = _algorithms(version)[0]
            signature = await backend.sign(version, alg, MESSAGE)
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise ContractViolation(
                    f"the backend did not recover within {subject.recovery_seconds:g}s of the"
                    " outage's end"
                ) from None
            await asyncio.sleep(0.2)
            continue
        expect(
            _verifies(version.public_key, alg.value, signature, backend.signature_encoding),
            "a signature made after the outage does not verify",
        )
        return versions


# -- the checks ---------------------------------------------------------------------------------


async def listing_is_stable(subject: ContractSubject) -> None:
    """Listing twice, or from a second backend over the same keys (a replica), gives the same
    versions, each with a time-zoned creation time and a unique id."""
    async with opened(subject.make_backend()) as backend:
        first = await at_least(subject, backend, 1)
        again = await backend.list_versions()
    ids = [v.version_id for v in first]
    expect(len(set(ids)) == len(ids), f"version ids are not unique: {ids}")
    for version in first:
        expect(
            version.created_at.tzinfo is not None and version.created_at.utcoffset() is not None,
            f"version {version.version_id}: created_at {version.created_at} has no time zone",
        )
        _algorithms(version)
    expect(
        _described(first) == _described(again),
        "a second listing differs from the first (ids, creation times or public keys)",
    )
    async with opened(subject.make_backend()) as replica:
        other = await replica.list_versions()
    expect(
        _described(other) == _described(first),
        "a second backend over the same keys (a replica) lists other versions",
    )


async def created_version_is_listed(subject: ContractSubject) -> None:
    """A version made by create_version is listed at once, with the same id, creation time and
    public key, and that creation time is now (give or take clock skew)."""
    async with opened(subject.make_backend()) as backend:
        assert isinstance(backend, CreatesVersions)
        why = refusal(backend, CreatesVersions)
        expect(why is None, f"the subject's backend cannot create versions: {why}")
        before = {v.version_id for v in await backend.list_versions()}
        started = time.time()
        created = await backend.create_version()
        finished = time.time()
        expect(
            created.version_id not in before,
            f"create_version returned the existing version {created.version_id}",
        )
        listed = {v.version_id: v for v in await backend.list_versions()}
    expect(created.version_id in listed, f"the created version {created.version_id} is not listed")
    expect(
        _described([listed[created.version_id]]) == _described([created]),
        f"version {created.version_id} is listed with another creation time or public key",
    )
    at = created.created_at.timestamp()
    expect(
        started - 300 <= at <= finished + 300,
        f"version {created.version_id} was created now but dated {created.created_at}",
    )


async def signatures_verify(subject: ContractSubject) -> None:
    """Every version signs with every algorithm it offers; each signature verifies with that
    version's public key (cryptography, RFC 7518) and comes in the declared encoding."""
    async with opened(subject.make_backend()) as backend:
        encoding = backend.signature_encoding
        expect(encoding in ("raw", "der"), f"signature_encoding is {encoding!r}")
        for version in await at_least(subject, backend, 1):
            for alg in _algorithms(version):
                signature = await backend.sign(version, alg, MESSAGE)
                expect(
                    _verifies(version.public_key, alg.value, signature, encoding),
                    f"the {alg.value} signature of version {version.version_id} does not verify",
                )


async def signature_is_by_the_requested_version(subject: ContractSubject) -> None:
    """With two versions, signing with the older one signs with exactly that one: the
    signature verifies with its key and with no other version's (never 'the latest')."""
    async with opened(subject.make_backend()) as backend:
        versions = sorted(await at_least(subject, backend, 2), key=lambda v: v.created_at)
        encoding = backend.signature_encoding
        for chosen in (versions[0], versions[-1]):
            alg = _algorithms(chosen)[0]
            signature = await backend.sign(chosen, alg, MESSAGE)
            signers = [
                v.version_id
                for v in versions
                if alg in jose.algorithms_for(v.public_key)
                and _verifies(v.public_key, alg.value, signature, encoding)
            ]
            expect(
                signers == [chosen.version_id],
                f"asked to sign with version {chosen.version_id}, the backend signed with"
                f" version {', '.join(signers)}"
                if signers
                else f"the signature of version {chosen.version_id} does not verify with its key",
            )


async def _disappears(
    subject: ContractSubject, capability: type, act: Callable[[Any, KeyVersion], Awaitable[None]]
) -> None:
    async with opened(subject.make_backend()) as backend:
        why = refusal(backend, capability)  # type: ignore[arg-type]
        expect(why is None, f"the subject's backend is limited: {why}")
        versions = sorted(await at_least(subject, backend, 2), key=lambda v: v.created_at)
        gone, kept = versions[0], versions[-1]
        await act(backend, gone)
        listed = {v.version_id for v in await backend.list_versions()}
    expect(gone.version_id not in listed, f"version {gone.version_id} is still listed")
    expect(kept.version_id in listed, f"version {kept.version_id} went too")
    async with opened(subject.make_backend()) as replica:
        listed = {v.version_id for v in await replica.list_versions()}
    expect(gone.version_id not in listed, f"a replica still lists version {gone.version_id}")


async def disabled_version_disappears(subject: ContractSubject) -> None:
    """A disabled version is listed no more (by this backend or a replica); the newest stays."""
    await _disappears(subject, DisablesVersions, lambda b, v: b.disable_version(v))


async def destroyed_version_disappears(subject: ContractSubject) -> None:
    """A destroyed version is listed no more (by this backend or a replica); the newest stays."""
    await _disappears(subject, DestroysVersions, lambda b, v: b.destroy_version(v))


async def prune_later(backend: KeyBackend, days: int = 30, **options: Any) -> Any:
    """`keys prune` (keysvc.prune.prune) on an opened backend alone, as if `days` had passed
    since its newest version was created (with publish_lead 1h and max_ttl 1h: every version
    but the newest has left the JWKS). Returns (the prune report, the newest version)."""
    from datetime import timedelta

    from keysvc.keyring import KeyRing, Lifecycle
    from keysvc.prune import prune

    versions = await backend.list_versions()
    later = max(v.created_at for v in versions) + timedelta(days=days)
    lifecycle = Lifecycle(timedelta(hours=1), timedelta(minutes=5), timedelta(hours=1))
    ring = KeyRing([backend], lifecycle, clock=lambda: later)
    await ring.refresh(raise_errors=True, quiet=True)
    signer = ring.view().signer
    expect(signer is not None, "no version signs")
    assert signer is not None
    # The newest: ties in creation time are broken as the ring breaks them.
    return await prune(ring, margin=timedelta(hours=1), **options), signer.version


async def pruning_keeps_only_the_newest(subject: ContractSubject) -> None:
    """`keys prune`, run as if a month had passed, retires every version but the newest in the
    backend's own way: none fails, none is listed again (by this backend or a replica), the
    newest stays and still signs."""
    async with opened(subject.make_backend()) as backend:
        versions = await at_least(subject, backend, 3)
        report, newest = await prune_later(backend)
        expect(not report.failed, f"prune failed: {[s.to_json() for s in report.failed]}")
        expect(
            sorted(s.version for s in report.done)
            == sorted(v.version_id for v in versions if v.version_id != newest.version_id),
            f"prune retired {[s.version for s in report.done]} of"
            f" {[v.version_id for v in versions]}, not all but the newest",
        )
        alg = _algorithms(newest)[0]
        await backend.sign(newest, alg, MESSAGE)
    async with opened(subject.make_backend()) as replica:
        listed = [v.version_id for v in await replica.list_versions()]
    expect(listed == [newest.version_id], f"after prune a replica lists {listed}")


async def unreachable_is_unavailable(subject: ContractSubject) -> None:
    """In an outage, listing and signing raise BackendUnavailable with a retry hint (the
    service answers 503 + Retry-After), within a bounded time; afterwards the same backend
    object lists and signs again by itself."""
    async with opened(subject.make_backend()) as backend:
        (version, *_) = await at_least(subject, backend, 1)
        alg = _algorithms(version)[0]
        await backend.sign(version, alg, MESSAGE)
        async with subject.outage():
            await _unavailable(subject, backend.list_versions(), "list_versions")
            await _unavailable(subject, backend.sign(version, alg, MESSAGE), "sign")
        await _recovers(subject, backend)


async def down_at_start_recovers(subject: ContractSubject) -> None:
    """A backend opened during an outage raises nothing but BackendUnavailable (so the
    service starts, unready), and lists and signs once the outage ends, without reopening."""
    async with opened(subject.make_backend()) as seeding:
        expected = _described(await at_least(subject, seeding, 1))
    backend = subject.make_backend()
    try:
        async with subject.outage():
            try:
                await asyncio.wait_for(backend.open(), subject.unavailable_within)
            except BackendUnavailable as exc:
                expect(exc.retry_after > 0, "open in an outage: no retry hint")
            except TimeoutError:
                raise ContractViolation(
                    f"open in an outage did not return within {subject.unavailable_within:g}s"
                ) from None
            await _unavailable(subject, backend.list_versions(), "list_versions")
        versions = await _recovers(subject, backend)
        expect(
            _described(versions) == expected, "after recovering, the backend lists other versions"
        )
    finally:
        await backend.close()


async def close_works(subject: ContractSubject) -> None:
    """close() returns promptly after use, and a second close() is harmless."""
    backend = subject.make_backend()
    await backend.open()
    try:
        await at_least(subject, backend, 1)
    finally:
        await asyncio.wait_for(backend.close(), 30)
    await asyncio.wait_for(backend.close(), 30)


CHECKS: tuple[Check, ...] = (
    Check("listing_is_stable", listing_is_stable),
    Check("created_version_is_listed", created_version_is_listed, needs=CreatesVersions),
    Check("signatures_verify", signatures_verify),
    Check("signature_is_by_the_requested_version", signature_is_by_the_requested_version),
    Check("disabled_version_disappears", disabled_version_disappears, needs=DisablesVersions),
    Check("destroyed_version_disappears", destroyed_version_disappears, needs=DestroysVersions),
    Check("pruning_keeps_only_the_newest", pruning_keeps_only_the_newest, needs=DisablesVersions),
    Check("unreachable_is_unavailable", unreachable_is_unavailable, needs_outage=True),
    Check("down_at_start_recovers", down_at_start_recovers, needs_outage=True),
    Check("close_works", close_works),
)
"""Every check, in the order they are best read."""


def checks_for(subject_class: type[ContractSubject]) -> list[Check]:
    """The checks that apply to the subject's backend class (by capability and outage)."""
    return [check for check in CHECKS if check.applies_to(subject_class)]


async def run_contract(subject: ContractSubject) -> list[str]:
    """Run every applicable check in turn; return their names, or raise the first violation."""
    ran = []
    for check in checks_for(type(subject)):
        await check(subject)
        ran.append(check.name)
    return ran
