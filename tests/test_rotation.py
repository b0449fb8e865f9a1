"""Rotation with short durations: a new key is published before it signs. (Two rotations under
a strict caching verifier, for every backend: tests/contract/service.py.)"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from keysvc import jose
from keysvc.config import merge
from tests.conftest import FAST_ROTATION, file_config
from tests.service import start_service


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_new_key_published_before_it_signs(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    config = merge(FAST_ROTATION, file_config(directory, key_type="ec-p256"))
    async with start_service(config, refresh_loop=False) as svc:
        backend = svc.ring.backend("local")
        first = await backend.create_version()
        await svc.ring.refresh()
        first_kid = jose.thumbprint(first.public_key)
        # The only key signs at once (a first start), though it is younger than publish_lead.
        assert (await svc.issue())["kid"] == first_kid
        second = await backend.create_version()
        await svc.ring.refresh()
        second_kid = jose.thumbprint(second.public_key)
        assert sorted(await svc.kids()) == sorted([first_kid, second_kid])  # published at once...
        assert (await svc.issue())["kid"] == first_kid  # ...but not signing yet
        status, _, listing = await svc.request("GET", "/v1/keys")
        assert status == 200
        by_kid = {k["kid"]: k for k in listing["keys"]}
        assert {kid: k["state"] for kid, k in by_kid.items()} == {
            first_kid: "active", second_kid: "pending"
        }
        lead = svc.config.rotation.publish_lead
        assert by_kid[second_kid]["signs_from"] == iso(second.created_at + lead)
        assert by_kid[second_kid]["created_at"] == iso(second.created_at)
