"""Rotation with short durations: a strict caching verifier sees zero failures across two
rotations, and retired keys leave the JWKS on time."""

from __future__ import annotations

from pathlib import Path

from keysvc.config import merge
from tests.conftest import FAST_ROTATION, file_config
from tests.service import start_service
from tests.verification import assert_rotation_without_failures


async def test_two_rotations_without_a_failed_verification(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    config = merge(FAST_ROTATION, file_config(directory, key_type="ec-p256"))
    async with start_service(config) as svc:
        backend = svc.ring.backend("local")
        await backend.create_version()
        await svc.ring.refresh()
        await assert_rotation_without_failures(svc, backend.create_version)


async def test_new_key_published_before_it_signs(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    config = merge(FAST_ROTATION, file_config(directory, key_type="ec-p256"))
    async with start_service(config, refresh_loop=False) as svc:
        first = await svc.ring.backend("local").create_version()
        await svc.ring.refresh()
        old_kid = (await svc.issue())["kid"]
        await svc.ring.backend("local").create_version()
        await svc.ring.refresh()
        kids = await svc.kids()
        assert len(kids) == 2  # published at once...
        assert (await svc.issue())["kid"] == old_kid  # ...but not signing yet
        status, _, listing = await svc.request("GET", "/v1/keys")
        states = sorted(k["state"] for k in listing["keys"])
        assert states == ["active", "pending"]
        assert first.version_id
