"""The memory backend's own promises (the contract in tests/contract/test_memory.py covers what
every backend promises): configured by type `memory`, versions created on demand, stores
private unless named, and the typed errors a plugin author copies."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from keysvc import jose
from keysvc.backends.base import BackendError, BackendUnavailable, NotFound
from keysvc.backends.memory import MemoryBackend, MemorySettings
from keysvc.config import parse_config
from keysvc.service import build_backends
from keysvc.errors import ConfigError


def config(**table: object) -> object:
    backend = {"name": "demo", "type": "memory", **table}
    return build_backends(parse_config({"issuer": "http://127.0.0.1:8080", "backends": [backend]}))


def test_configured_through_its_entry_point() -> None:
    parsed = config(key_type="ed25519", initial_versions=2)
    settings = parsed[0].settings  # type: ignore[index]
    assert settings == MemorySettings(key_type="ed25519", initial_versions=2)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"colour": "blue"}, "backends[0]: colour: is not a setting keysvc knows"),
        ({"initial_versions": 17}, "backends[0]: initial_versions: must be at most 16"),
        ({"key_type": "dsa-1024"}, "backends[0]: key_type: must be 'rsa-2048'"),
    ],
)
def test_bad_settings_are_refused_by_name(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config(**table)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(
    ("key_type", "key_class"),
    [("ec-p256", ec.EllipticCurvePublicKey), ("ec-p384", ec.EllipticCurvePublicKey),
     ("rsa-2048", rsa.RSAPublicKey), ("ed25519", ed25519.Ed25519PublicKey)],
)
async def test_versions_are_created_on_demand_once(key_type: str, key_class: type) -> None:
    backend = MemoryBackend("demo", MemorySettings(key_type=key_type, initial_versions=2))  # type: ignore[arg-type]
    await backend.open()
    first, second = await backend.list_versions()
    assert isinstance(first.public_key, key_class) and first.created_at.tzinfo is not None
    await backend.destroy_version(first)
    await backend.destroy_version(second)
    assert await backend.list_versions() == []  # emptied on purpose: not filled again
    third = await backend.create_version()
    assert [v.version_id for v in await backend.list_versions()] == [third.version_id]


async def test_stores_are_private_unless_named() -> None:
    one, two = (MemoryBackend("a", MemorySettings()), MemoryBackend("b", MemorySettings()))
    kids = [{jose.thumbprint(v.public_key) for v in await b.list_versions()} for b in (one, two)]
    assert kids[0].isdisjoint(kids[1])
    named = MemorySettings(store="test-stores-shared")
    three, four = MemoryBackend("c", named), MemoryBackend("d", named)
    created = await three.create_version()
    assert created.version_id in {v.version_id for v in await four.list_versions()}


async def test_signing_errors_are_typed() -> None:
    backend = MemoryBackend("demo", MemorySettings(store="test-signing-errors"))
    (version,) = await backend.list_versions()
    assert await backend.sign(version, jose.Algorithm.ES256, b"a.b")
    with pytest.raises(BackendError, match="ES384 does not fit EC secp256r1 version v1"):
        await backend.sign(version, jose.Algorithm.ES384, b"a.b")
    stranger = (await MemoryBackend("other", MemorySettings()).list_versions())[0]
    with pytest.raises(NotFound, match="is not from backend 'demo'"):
        await backend.sign(stranger, jose.Algorithm.ES256, b"a.b")
    await backend.disable_version(version)
    with pytest.raises(NotFound, match="is disabled"):
        await backend.sign(version, jose.Algorithm.ES256, b"a.b")
    backend.store.fail(retry_after=7)
    with pytest.raises(BackendUnavailable, match="simulated outage") as outage:
        await backend.create_version()
    assert outage.value.retry_after == 7
