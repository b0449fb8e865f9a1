"""GcpKmsBackend against the Cloud KMS fake, through the real google-cloud-kms gRPC client:
listing, public-key caching, signing with every supported algorithm, integrity checks,
rotation, revocation and the mapping of Google's errors."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from keysvc import jose
from keysvc.backends.base import (
    BackendError,
    BackendUnavailable,
    NotFound,
    PermissionDenied,
)
from keysvc.backends.gcp_kms import GcpKmsBackend
from keysvc.jose import Algorithm
from tests.fakes.gcp_kms import FakeCloudKms, State
from tests.gcp.conftest import KEY, BackendFactory

MESSAGE = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvcmdhbml6YXRpb246YWNtZSJ9"

ALGORITHMS = {
    "RSA_SIGN_PKCS1_2048_SHA256": Algorithm.RS256,
    "RSA_SIGN_PKCS1_3072_SHA256": Algorithm.RS256,
    "RSA_SIGN_PKCS1_4096_SHA256": Algorithm.RS256,
    "RSA_SIGN_PSS_2048_SHA256": Algorithm.PS256,
    "RSA_SIGN_PSS_3072_SHA256": Algorithm.PS256,
    "RSA_SIGN_PSS_4096_SHA256": Algorithm.PS256,
    "EC_SIGN_P256_SHA256": Algorithm.ES256,
    "EC_SIGN_P384_SHA384": Algorithm.ES384,
}


def verify_independently(public_key: object, alg: Algorithm, der_or_rsa_signature: bytes) -> None:
    """Check a signature as the KMS returned it with cryptography alone (no keysvc code)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        pad = (
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            if alg is Algorithm.PS256
            else padding.PKCS1v15()
        )
        public_key.verify(der_or_rsa_signature, MESSAGE, pad, hashes.SHA256())
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        hash_ = hashes.SHA384() if alg is Algorithm.ES384 else hashes.SHA256()
        public_key.verify(der_or_rsa_signature, MESSAGE, ec.ECDSA(hash_))


# -- listing ------------------------------------------------------------------------------------


async def test_lists_enabled_versions_only_with_their_create_time(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    base = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    kms.add_key(KEY, "EC_SIGN_P256_SHA256", versions=0)
    for i, state in enumerate(
        [State.ENABLED, State.DISABLED, State.ENABLED, State.DESTROYED, State.ENABLED,
         State.DESTROY_SCHEDULED, State.ENABLED]
    ):
        kms.add_version(KEY, state=state, created_at=base + timedelta(days=i))
    kms.add_version(KEY, state=State.PENDING_GENERATION)
    backend = await open_backend()

    versions = await backend.list_versions()

    assert [v.version_id.rsplit("/", 1)[1] for v in versions] == ["1", "3", "5", "7"]
    assert [v.created_at for v in versions] == [base + timedelta(days=d) for d in (0, 2, 4, 6)]
    assert all(v.created_at.tzinfo is UTC for v in versions)
    assert all(v.algorithms == frozenset({Algorithm.ES256}) for v in versions)
    # Four enabled versions, two per page: the client followed next_page_token.
    assert kms.calls["ListCryptoKeyVersions"] == 2
    for version in versions:
        expected = kms.version(version.version_id).private_key.public_key()
        assert jose.thumbprint(version.public_key) == jose.thumbprint(expected)


async def test_public_keys_are_fetched_once_per_version(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256", versions=2)
    backend = await open_backend()
    first = await backend.list_versions()
    await backend.list_versions()
    assert kms.calls["GetPublicKey"] == 2
    kms.add_version(KEY)
    third = await backend.list_versions()
    assert kms.calls["GetPublicKey"] == 3
    assert [v.public_key for v in third[:2]] == [v.public_key for v in first]


async def test_empty_key_lists_nothing(kms: FakeCloudKms, open_backend: BackendFactory) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256", versions=0)
    assert await (await open_backend()).list_versions() == []


@pytest.mark.parametrize(
    "algorithm",
    ["EC_SIGN_SECP256K1_SHA256", "RSA_SIGN_PKCS1_4096_SHA512", "GOOGLE_SYMMETRIC_ENCRYPTION"],
)
async def test_other_algorithms_are_refused_by_name(
    kms: FakeCloudKms, open_backend: BackendFactory, algorithm: str
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256", versions=1)
    kms.add_version(KEY, algorithm=algorithm)
    backend = await open_backend()
    with pytest.raises(BackendError, match=f"cryptoKeyVersions/2 uses {algorithm}") as info:
        await backend.list_versions()
    assert "EC_SIGN_P256_SHA256" in str(info.value)  # says what would work
    assert kms.calls["GetPublicKey"] == 0  # refused before fetching anything


# -- signing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
async def test_signs_with_every_supported_algorithm(
    kms: FakeCloudKms, open_backend: BackendFactory, algorithm: str
) -> None:
    kms.add_key(KEY, algorithm)
    backend = await open_backend()
    (version,) = await backend.list_versions()
    alg = ALGORITHMS[algorithm]
    assert version.algorithms == frozenset({alg})

    signature = await backend.sign(version, alg, MESSAGE)

    verify_independently(version.public_key, alg, signature)
    if alg.is_ecdsa:  # DER from KMS, as declared; the ring turns it into r‖s
        assert GcpKmsBackend.signature_encoding == "der"
        jose.verify_local(version.public_key, alg, MESSAGE, jose.der_to_raw(signature, alg))


async def test_refuses_an_algorithm_the_version_cannot_sign(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    kms.add_key(KEY, "RSA_SIGN_PSS_2048_SHA256")
    backend = await open_backend()
    (version,) = await backend.list_versions()
    with pytest.raises(BackendError, match="signs PS256, not RS256"):
        await backend.sign(version, Algorithm.RS256, MESSAGE)
    assert kms.calls["AsymmetricSign"] == 0


@pytest.mark.parametrize("field", ["signature", "verified_digest", "name"])
async def test_a_signature_failing_its_integrity_check_is_never_returned(
    kms: FakeCloudKms, open_backend: BackendFactory, field: str
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256")
    backend = await open_backend()
    (version,) = await backend.list_versions()
    kms.corrupt.add(field)
    with pytest.raises(BackendUnavailable, match="integrity check"):
        await backend.sign(version, Algorithm.ES256, MESSAGE)
    assert kms.calls["AsymmetricSign"] == 2  # Google's advice: discard, retry a little, give up
    kms.heal()
    verify_independently(
        version.public_key, Algorithm.ES256, await backend.sign(version, Algorithm.ES256, MESSAGE)
    )


async def test_a_public_key_failing_its_integrity_check_is_never_published(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256")
    backend = await open_backend()
    kms.corrupt.add("pem")
    with pytest.raises(BackendUnavailable, match="public key .* integrity check"):
        await backend.list_versions()
    kms.heal()
    assert len(await backend.list_versions()) == 1  # nothing bad was cached


async def test_the_digest_crc32c_is_sent_and_checked_by_kms(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    # The fake refuses a digest whose CRC32C does not match and only sets verified_digest_crc32c
    # when one was sent: a signature coming back at all proves keysvc sent the right one.
    kms.add_key(KEY, "EC_SIGN_P384_SHA384")
    backend = await open_backend()
    (version,) = await backend.list_versions()
    verify_independently(
        version.public_key, Algorithm.ES384, await backend.sign(version, Algorithm.ES384, MESSAGE)
    )


async def test_signing_does_not_block_the_event_loop(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256")
    backend = await open_backend()
    (version,) = await backend.list_versions()
    kms.delay = 0.5
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    signatures = await asyncio.gather(
        *(backend.sign(version, Algorithm.ES256, MESSAGE) for _ in range(20))
    )
    tick.cancel()
    assert len(signatures) == 20
    # The fake serves on this same event loop: all 20 calls held at once means they were sent
    # concurrently and the loop kept running (serial or loop-blocking calls make it 1).
    assert kms.most_in_flight == 20, kms.most_in_flight
    assert len(gaps) >= 5, "the ticker barely ran while 20 signatures of 0.5 s were pending"


# -- rotation and revocation --------------------------------------------------------------------


async def test_rotation_waits_for_the_new_version_to_be_generated(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    kms.add_key(KEY, "RSA_SIGN_PKCS1_2048_SHA256")
    kms.generation_delay = 0.6
    backend = await open_backend()
    before = await backend.list_versions()

    created = await backend.create_version()

    assert created.version_id == f"{KEY}/cryptoKeyVersions/2"
    assert kms.version(created.version_id).state == State.ENABLED
    assert created.algorithms == frozenset({Algorithm.RS256})
    after = await backend.list_versions()
    assert [v.version_id for v in after] == [before[0].version_id, created.version_id]
    verify_independently(
        created.public_key, Algorithm.RS256, await backend.sign(created, Algorithm.RS256, MESSAGE)
    )


async def test_rotation_gives_up_on_a_version_that_never_finishes_generating(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256")
    kms.generation_delay = None
    backend = await open_backend(generation_timeout="1s")
    started = time.monotonic()
    with pytest.raises(BackendError, match="still PENDING_GENERATION .* do not rotate again"):
        await backend.create_version()
    assert time.monotonic() - started < 10  # gave up after its 1 s generation_timeout
    assert len(await backend.list_versions()) == 1


async def test_rotation_reports_a_failed_generation(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256")
    kms.generation_delay = None
    backend = await open_backend()
    task = asyncio.create_task(backend.create_version())
    await asyncio.sleep(0.3)
    kms.version(f"{KEY}/cryptoKeyVersions/2").state = State.GENERATION_FAILED
    with pytest.raises(BackendError, match="cryptoKeyVersions/2 ended GENERATION_FAILED"):
        await task


async def test_disabled_version_is_no_longer_listed_nor_used(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256", versions=2)
    backend = await open_backend()
    first, second = await backend.list_versions()

    await backend.disable_version(first)

    assert kms.version(first.version_id).state == State.DISABLED
    assert [v.version_id for v in await backend.list_versions()] == [second.version_id]
    with pytest.raises(BackendError, match="is not enabled, current state is: DISABLED") as info:
        await backend.sign(first, Algorithm.ES256, MESSAGE)
    assert not isinstance(info.value, BackendUnavailable)  # retrying will not help


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ],
)
async def test_transient_errors_are_unavailable_with_retry_after(
    kms: FakeCloudKms, open_backend: BackendFactory, code: grpc.StatusCode
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256")
    backend = await open_backend(retry_budget="0.5s")
    (version,) = await backend.list_versions()
    kms.fail(code, "backend trouble")
    with pytest.raises(BackendUnavailable, match=f"{code.name}: backend trouble") as info:
        await backend.sign(version, Algorithm.ES256, MESSAGE)
    assert info.value.retry_after >= 1


async def test_throttling_carries_googles_retry_delay(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256")
    backend = await open_backend(retry_budget="0s")
    (version,) = await backend.list_versions()
    kms.throttle(retry_after=7.5)
    with pytest.raises(BackendUnavailable, match="RESOURCE_EXHAUSTED: Quota exceeded") as info:
        await backend.sign(version, Algorithm.ES256, MESSAGE)
    assert info.value.retry_after == 7.5
    assert kms.calls["AsymmetricSign"] == 1  # no retry budget: asked once


async def test_a_brief_outage_is_retried_within_the_budget(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256")
    backend = await open_backend(retry_budget="2s")
    (version,) = await backend.list_versions()
    kms.fail(grpc.StatusCode.UNAVAILABLE, times=2)
    signature = await backend.sign(version, Algorithm.ES256, MESSAGE)
    verify_independently(version.public_key, Algorithm.ES256, signature)
    assert kms.calls["AsymmetricSign"] == 3


async def test_a_slow_kms_times_out_as_unavailable(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256")
    backend = await open_backend(timeout="0.3s")
    (version,) = await backend.list_versions()
    kms.delay = 30
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="DEADLINE_EXCEEDED"):
        await backend.sign(version, Algorithm.ES256, MESSAGE)
    assert time.monotonic() - started < 10  # the 0.3 s deadline, not KMS's 30 s


async def test_kms_down_then_back(kms: FakeCloudKms, open_backend: BackendFactory) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256")
    backend = await open_backend()
    (version,) = await backend.list_versions()
    await kms.stop()
    with pytest.raises(BackendUnavailable, match="UNAVAILABLE"):
        await backend.sign(version, Algorithm.ES256, MESSAGE)
    with pytest.raises(BackendUnavailable):
        await backend.list_versions()
    await kms.start()  # same port
    deadline = time.monotonic() + 10
    while True:  # the channel reconnects by itself (backoff capped at 5 s)
        try:
            signature = await backend.sign(version, Algorithm.ES256, MESSAGE)
            break
        except BackendUnavailable:
            assert time.monotonic() < deadline, "no recovery after KMS came back"
            await asyncio.sleep(0.2)
    verify_independently(version.public_key, Algorithm.ES256, signature)


@pytest.mark.parametrize(
    ("permission", "call"),
    [
        ("cloudkms.cryptoKeyVersions.list", "list"),
        ("cloudkms.cryptoKeyVersions.viewPublicKey", "list"),
        ("cloudkms.cryptoKeyVersions.useToSign", "sign"),
        ("cloudkms.cryptoKeyVersions.create", "rotate"),
        ("cloudkms.cryptoKeyVersions.update", "disable"),
    ],
)
async def test_permission_denied_names_the_missing_permission(
    kms: FakeCloudKms, open_backend: BackendFactory, permission: str, call: str
) -> None:
    kms.add_key(KEY, "EC_SIGN_P256_SHA256")
    backend = await open_backend()
    (version,) = await backend.list_versions()
    backend._public_keys.clear()  # noqa: SLF001 - make listing fetch the public key again
    kms.deny(permission)
    expected = f"denied backend 'gcp' permission .*Permission '{permission}' denied"
    with pytest.raises(PermissionDenied, match=expected) as info:
        if call == "list":
            await backend.list_versions()
        elif call == "sign":
            await backend.sign(version, Algorithm.ES256, MESSAGE)
        elif call == "rotate":
            await backend.create_version()
        else:
            await backend.disable_version(version)
    assert not isinstance(info.value, BackendUnavailable)


async def test_missing_key_is_a_clear_error(
    kms: FakeCloudKms, open_backend: BackendFactory
) -> None:
    backend = await open_backend()
    with pytest.raises(NotFound, match=f"{KEY} not found") as info:
        await backend.list_versions()
    assert not isinstance(info.value, BackendUnavailable)
