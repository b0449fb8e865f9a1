"""The PKCS#11 backend against a real SoftHSM2 token: discovery, every algorithm's signature
(verified with cryptography), rotation, revocation, the session pool, PINs and lost tokens."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from pkcs11 import MGF, Mechanism

from keysvc import jose
from keysvc.backends import load_backend_class
from keysvc.backends.base import BackendUnavailable, OperationNotSupported
from keysvc.backends.pkcs11 import Pkcs11Backend
from keysvc.backends.pkcs11_keys import EPOCH, check_key_type, sign_recipe
from keysvc.backends.pkcs11_library import acquire_module, release_module
from keysvc.config import parse_config
from keysvc.service import build_backends
from keysvc.errors import ConfigError
from tests.pkcs11.conftest import BackendFactory, SoftHsmToken

MESSAGE = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJvcmdhbml6YXRpb246YWNtZSJ9"

ALGORITHMS = {
    "rsa-2048": {jose.Algorithm.RS256, jose.Algorithm.PS256},
    "ec-p256": {jose.Algorithm.ES256},
    "ec-p384": {jose.Algorithm.ES384},
    "ed25519": {jose.Algorithm.EdDSA},
}


def test_registered_under_its_entry_point() -> None:
    assert load_backend_class("pkcs11") is Pkcs11Backend


@pytest.mark.parametrize("key_type", sorted(ALGORITHMS))
async def test_rotation_key_signs_every_algorithm(
    make_backend: BackendFactory, key_type: str
) -> None:
    backend = make_backend(key_type=key_type)
    await backend.open()
    before = datetime.now(UTC)
    version = await backend.create_version()
    assert before <= version.created_at <= datetime.now(UTC)
    assert version.version_id.startswith("keysvc-")
    assert version.algorithms == ALGORITHMS[key_type]
    for alg in sorted(version.algorithms, key=lambda a: a.value):
        signature = await backend.sign(version, alg, MESSAGE)
        jose.verify_local(version.public_key, alg, MESSAGE, signature)
        with pytest.raises(InvalidSignature):
            jose.verify_local(version.public_key, alg, MESSAGE + b"x", signature)
        if alg.is_ecdsa:  # raw r||s, fixed width, as JWS wants it
            assert len(signature) == 2 * alg.ec_coordinate_size


async def test_pss_signatures_are_salted(make_backend: BackendFactory) -> None:
    backend = make_backend(key_type="rsa-2048")
    version = await backend.create_version()
    first = await backend.sign(version, jose.Algorithm.PS256, MESSAGE)
    second = await backend.sign(version, jose.Algorithm.PS256, MESSAGE)
    assert first != second  # a random 32-byte salt; both verify (salt length checked)
    for signature in (first, second):
        jose.verify_local(version.public_key, jose.Algorithm.PS256, MESSAGE, signature)


async def test_rotated_key_is_found_again_in_new_sessions(make_backend: BackendFactory) -> None:
    first = make_backend(key_type="ec-p256")
    created = await first.create_version()
    await first.close()

    second = make_backend()  # no key_type: another replica, its own module load and sessions
    await second.open()
    (listed,) = await second.list_versions()
    assert listed.version_id == created.version_id
    assert listed.created_at == created.created_at  # from the label: the same on every replica
    assert jose.thumbprint(listed.public_key) == jose.thumbprint(created.public_key)
    signature = await second.sign(listed, jose.Algorithm.ES256, MESSAGE)
    jose.verify_local(created.public_key, jose.Algorithm.ES256, MESSAGE, signature)

    newer = await second.create_version()  # rotates to the newest key's type
    assert jose.describe_key(newer.public_key) == "EC secp256r1"
    assert [v.version_id for v in await second.list_versions()] == [
        created.version_id,
        newer.version_id,
    ]


async def test_generated_private_key_is_sensitive_and_sign_only(
    softhsm: SoftHsmToken, make_backend: BackendFactory
) -> None:
    backend = make_backend(key_type="ec-p256")
    version = await backend.create_version()
    objects = {entry["class"]: entry for entry in softhsm.inspect(version.version_id)}
    assert set(objects) == {"PRIVATE_KEY", "PUBLIC_KEY"}
    private, public = objects["PRIVATE_KEY"], objects["PUBLIC_KEY"]
    assert private["id"] == public["id"] and len(private["id"]) == 32
    assert private["TOKEN"] and private["PRIVATE"] and private["SENSITIVE"]
    assert private["NEVER_EXTRACTABLE"] and not private["EXTRACTABLE"]
    assert private["SIGN"]
    assert not any(private[a] for a in ("DECRYPT", "UNWRAP", "DERIVE"))
    assert public["VERIFY"] and not public["ENCRYPT"] and not public["WRAP"]


async def test_discovery_by_prefix_ignores_other_labels(
    softhsm: SoftHsmToken, make_backend: BackendFactory
) -> None:
    softhsm.make_key("keysvc-20250101T000000Z")
    softhsm.make_key("keysvc")  # the prefix itself
    softhsm.make_key("keysvc2-20250101T000000Z")  # another prefix that merely starts alike
    softhsm.make_key("payments-signing")
    softhsm.make_key("keysvc-20240101T000000Z.revoked")
    backend = make_backend()
    labels = [v.version_id for v in await backend.list_versions()]
    assert labels == ["keysvc", "keysvc-20250101T000000Z"]  # epoch first, then by time


async def test_impossible_timestamp_in_a_label_is_a_config_error(
    softhsm: SoftHsmToken, make_backend: BackendFactory
) -> None:
    """A label ending in a stamp that is no date fails the listing with the label named (a
    ConfigError: the CLI exits 2, serve refuses to start), rather than a bare ValueError that
    left the service unready, or a guessed creation time that would change which key signs."""
    softhsm.make_key("keysvc-20250101T000000Z")
    softhsm.make_key("keysvc-20261399T999999Z")
    backend = make_backend()
    with pytest.raises(ConfigError) as info:
        await backend.list_versions()
    assert "'keysvc-20261399T999999Z'" in str(info.value)
    assert "not a valid UTC date" in str(info.value) and softhsm.pin not in str(info.value)


async def test_explicit_labels_and_creation_time_without_a_stamp(
    softhsm: SoftHsmToken, make_backend: BackendFactory, caplog: pytest.LogCaptureFixture
) -> None:
    softhsm.make_key("legacy-signing", "rsa-2048")
    softhsm.make_key("dated-signing", "ec-p384", start_date="2025-03-04")
    softhsm.make_key("keysvc-20250101T000000Z")  # not listed: no prefix configured
    backend = make_backend(
        label_prefix=None, key_labels=["legacy-signing", "dated-signing", "missing-key"]
    )
    with caplog.at_level(logging.WARNING):
        versions = {v.version_id: v for v in await backend.list_versions()}
    assert set(versions) == {"legacy-signing", "dated-signing"}
    assert versions["legacy-signing"].created_at == EPOCH
    assert versions["dated-signing"].created_at == datetime(2025, 3, 4, tzinfo=UTC)
    assert "'missing-key' (key_labels) is not on" in caplog.text
    for version in versions.values():
        for alg in version.algorithms or ():
            jose.verify_local(
                version.public_key, alg, MESSAGE, await backend.sign(version, alg, MESSAGE)
            )
    with pytest.raises(OperationNotSupported, match="set label_prefix"):
        await backend.create_version()


async def test_labels_and_prefix_together(
    softhsm: SoftHsmToken, make_backend: BackendFactory
) -> None:
    softhsm.make_key("legacy-signing")
    backend = make_backend(key_labels=["legacy-signing"], key_type="ec-p256")
    new = await backend.create_version()
    assert [v.version_id for v in await backend.list_versions()] == [
        "legacy-signing",
        new.version_id,
    ]


async def test_revoked_key_is_never_listed_again(
    softhsm: SoftHsmToken, make_backend: BackendFactory
) -> None:
    backend = make_backend(key_type="ec-p256")
    old = await backend.create_version()
    new = await backend.create_version()
    await backend.disable_version(old)
    assert [v.version_id for v in await backend.list_versions()] == [new.version_id]
    other = make_backend()
    assert [v.version_id for v in await other.list_versions()] == [new.version_id]
    kept = softhsm.inspect(old.version_id + ".revoked")  # still on the token, for the record
    assert sorted(entry["class"] for entry in kept) == ["PRIVATE_KEY", "PUBLIC_KEY"]


async def test_pool_reuses_its_sessions_under_concurrency(make_backend: BackendFactory) -> None:
    backend = make_backend(key_type="ec-p256", sessions=3)
    version = await backend.create_version()
    assert backend.executor._max_workers == 3
    signatures = await asyncio.gather(
        *(backend.sign(version, jose.Algorithm.ES256, MESSAGE + b"%d" % i) for i in range(60))
    )
    for i, signature in enumerate(signatures):
        jose.verify_local(version.public_key, jose.Algorithm.ES256, MESSAGE + b"%d" % i, signature)
    await backend.list_versions()
    pool = backend._sessions.pool  # type: ignore[union-attr]
    assert 1 <= pool.opened <= 3  # 61 operations, never more sessions than the pool size


async def test_wrong_pin_is_a_clear_error_without_the_pin(
    softhsm: SoftHsmToken, make_backend: BackendFactory, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "pin-wrong-" + softhsm.pin[-4:]
    os.environ["KEYSVC_TEST_PIN"] = wrong
    try:
        backend = make_backend(pin_file=None, pin_env="KEYSVC_TEST_PIN")
        with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as raised:
            await backend.open()
        message = str(raised.value)
        assert "refused the PIN (PinIncorrect)" in message and "keysvc-test" in message
        # Not tried again: a token locks after a few wrong PINs.
        os.environ["KEYSVC_TEST_PIN"] = softhsm.pin
        with pytest.raises(ConfigError, match="refused the PIN"):
            await backend.list_versions()
    finally:
        del os.environ["KEYSVC_TEST_PIN"]
    for text in (message, caplog.text):
        assert softhsm.pin not in text and wrong not in text


async def test_pin_from_environment(
    softhsm: SoftHsmToken, make_backend: BackendFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make_backend(pin_file=None, pin_env="KEYSVC_TEST_PIN")
    with pytest.raises(ConfigError, match="KEYSVC_TEST_PIN is not set"):
        await backend.open()
    monkeypatch.setenv("KEYSVC_TEST_PIN", softhsm.pin)
    await backend.open()
    assert await backend.list_versions() == []


async def test_world_readable_pin_file_is_refused(
    softhsm: SoftHsmToken, make_backend: BackendFactory
) -> None:
    softhsm.pin_file.chmod(0o644)
    with pytest.raises(ConfigError) as raised:
        await make_backend().open()
    assert "chmod 600" in str(raised.value)
    assert softhsm.pin not in str(raised.value)


async def test_missing_module_is_a_config_error(make_backend: BackendFactory) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        await make_backend(module="/nonexistent/libpkcs11.so").open()


async def test_unknown_token_is_unavailable(make_backend: BackendFactory) -> None:
    with pytest.raises(BackendUnavailable, match="'no-such-token' is not present"):
        await make_backend(token_label="no-such-token").open()


async def test_vanished_token_is_unavailable(
    softhsm: SoftHsmToken, make_backend: BackendFactory
) -> None:
    backend = make_backend(key_type="ec-p256")
    version = await backend.create_version()
    await backend.sign(version, jose.Algorithm.ES256, MESSAGE)
    for path in softhsm.directory.iterdir():
        shutil.rmtree(path)
    for attempt in range(2):  # and it stays a 503, with a Retry-After, on later calls
        with pytest.raises(BackendUnavailable) as raised:
            await backend.sign(version, jose.Algorithm.ES256, MESSAGE)
        assert raised.value.retry_after > 0
        assert softhsm.pin not in str(raised.value)
    with pytest.raises(BackendUnavailable):
        await backend.list_versions()


# python-pkcs11 leaves a search whose C_FindObjectsInit failed on a dead session marked active;
# its __del__ then reports the same dead session once more. Harmless, and not keysvc's code.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_lost_sessions_reconnect_transparently(
    softhsm: SoftHsmToken, make_backend: BackendFactory
) -> None:
    backend = make_backend(key_type="ec-p256")
    version = await backend.create_version()
    await backend.sign(version, jose.Algorithm.ES256, MESSAGE)

    def restart_hsm_client() -> None:
        """What an HSM client restart does: every session and the login are gone (and new
        sessions may even get the old handles back)."""
        loaded = acquire_module(softhsm.module)
        try:
            loaded.lib.reinitialize()
        finally:
            release_module(loaded)

    before = backend._sessions
    restart_hsm_client()
    # A search without the login finds no private key: that must not read as "no keys".
    assert [v.version_id for v in await backend.list_versions()] == [version.version_id]
    assert backend._sessions is not before  # a new login and pool
    restart_hsm_client()
    signature = await backend.sign(version, jose.Algorithm.ES256, MESSAGE)
    jose.verify_local(version.public_key, jose.Algorithm.ES256, MESSAGE, signature)


async def test_module_is_reinitialised_for_threads(softhsm: SoftHsmToken) -> None:
    loaded = acquire_module(softhsm.module)
    try:
        assert loaded.thread_safe  # SoftHSM2 accepted CKF_OS_LOCKING_OK: its locks are on
    finally:
        release_module(loaded)


async def test_key_types_the_token_cannot_make_are_refused(
    make_backend: BackendFactory,
) -> None:
    backend = make_backend(key_type="ed25519")
    await backend.open()  # SoftHSM2 2.6 offers CKM_EC_EDWARDS_KEY_PAIR_GEN and CKM_EDDSA
    offered = backend._sessions.mechanisms  # type: ignore[union-attr]
    without_eddsa = offered - {Mechanism.EDDSA}
    with pytest.raises(ConfigError, match="cannot make ed25519 keys .*CKM_EDDSA"):
        check_key_type("ed25519", without_eddsa, "hsm")
    check_key_type("ec-p256", without_eddsa, "hsm")


def test_ecdsa_uses_the_combined_mechanism_when_offered() -> None:
    offered = {Mechanism.ECDSA, Mechanism.ECDSA_SHA384}
    es256 = sign_recipe(jose.Algorithm.ES256, offered)
    es384 = sign_recipe(jose.Algorithm.ES384, offered)
    assert es256 is not None and es256.mechanism is Mechanism.ECDSA and es256.prehash
    assert es256.data(jose.Algorithm.ES256, b"m") == hashlib.sha256(b"m").digest()
    assert es384 is not None and es384.mechanism is Mechanism.ECDSA_SHA384 and not es384.prehash
    assert es384.data(jose.Algorithm.ES384, b"m") == b"m"
    assert sign_recipe(jose.Algorithm.ES256, {Mechanism.SHA256_RSA_PKCS}) is None
    pss = sign_recipe(jose.Algorithm.PS256, {Mechanism.SHA256_RSA_PKCS_PSS})
    assert pss is not None and pss.param == (Mechanism.SHA256, MGF.SHA256, 32)


def test_settings_are_validated_with_the_key_named(softhsm: SoftHsmToken) -> None:
    def refused(**overrides: object) -> str:
        with pytest.raises(ConfigError) as raised:
            config = {"issuer": "http://127.0.0.1:1", "backends": [softhsm.table(**overrides)]}
            build_backends(parse_config(config))
        return str(raised.value)

    assert refused(pin_env="HSM_PIN").endswith("set exactly one of pin_file or pin_env")
    assert refused(pin_file=None).endswith("set exactly one of pin_file or pin_env")
    assert refused(label_prefix=None).endswith("set key_labels, label_prefix or both")
    not_a_name = refused(pin_file=None, pin_env="1234")  # a PIN pasted where its variable goes
    assert "backends[0]: pin_env: must be the name of an environment variable" in not_a_name
    assert "1234" not in not_a_name
    assert "backends[0]: label_prefix: must be" in refused(label_prefix="bad prefix")
    assert "backends[0]: key_type:" in refused(key_type="rsa-1024")
    assert "backends[0]: sessions:" in refused(sessions=0)
    assert "backends[0]: slot: is not a setting keysvc knows" in refused(slot=0)
    assert "labels must be unique" in refused(key_labels=["a", "a"])
    config = parse_config({"issuer": "http://127.0.0.1:1", "backends": [softhsm.table()]})
    assert build_backends(config)[0].settings.sessions == 4  # type: ignore[attr-defined]


async def test_signing_does_not_block_the_event_loop(make_backend: BackendFactory) -> None:
    backend = make_backend(key_type="rsa-2048", sessions=2)
    version = await backend.create_version()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    async def sign() -> int:
        """The ticks seen while this signature was being made."""
        before = ticks
        await backend.sign(version, jose.Algorithm.RS256, MESSAGE)
        return ticks - before

    task = asyncio.create_task(ticker())
    during = await asyncio.gather(*(sign() for _ in range(40)))
    task.cancel()
    # 40 RSA signatures over 2 sessions: the later ones wait tens of milliseconds for a session.
    # Signing on the loop's thread would let no tick in between a call's start and its end.
    assert max(during) > 0, "the event loop never ran while signatures were being made"


def test_timestamp_labels_round_trip() -> None:
    from keysvc.backends.pkcs11_keys import created_at_of, label_for

    when = datetime(2026, 11, 27, 14, 57, 0, 123456, tzinfo=UTC)
    assert label_for("keysvc", when) == "keysvc-20261127T145700.123456Z"
    assert created_at_of(label_for("keysvc", when), None) == when
    assert created_at_of("keysvc-20261127T145700Z", None) == when.replace(microsecond=0)
    assert created_at_of("keysvc", None) == EPOCH
    assert created_at_of("keysvc", when.date()) == datetime(2026, 11, 27, tzinfo=UTC)
    assert created_at_of("keysvc-20261127T145700Z-copy", None) == EPOCH  # a stamp ends the label
    assert label_for("k", when.astimezone(UTC) + timedelta(hours=1)).endswith("155700.123456Z")
    for label in ("keysvc-20261399T999999Z", "keysvc-20260230T000000.5Z"):
        with pytest.raises(ConfigError, match=f"key label '{label}'.*not a valid UTC date"):
            created_at_of(label, when.date())  # the start date does not hide a bad stamp
