"""Shared fixtures: key files on disk and short rotation settings."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from keysvc import keygen
from keysvc.backends.file import name_for
from keysvc.secrets import write_private_file

FAST_ROTATION = {
    "rotation": {"publish_lead": "4s", "jwks_max_age": "2s", "refresh_interval": "1s"},
    "tokens": {"default_ttl": "3s", "max_ttl": "3s"},
}


def write_key(directory: Path, key_type: str = "ec-p256", created: datetime | None = None) -> Path:
    """A private key file named by its creation time, mode 0600."""
    created = created or datetime.now(UTC)
    path = directory / name_for(created)
    write_private_file(path, keygen.private_pem(keygen.generate(key_type)))  # type: ignore[arg-type]
    return path


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """A key directory holding one EC P-256 key created an hour ago (so it signs at once)."""
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    write_key(directory, "ec-p256", datetime.now(UTC) - timedelta(hours=1))
    return directory


@pytest.fixture
async def otfd() -> AsyncIterator[Any]:
    """A fake otfd (tests/fakes/otfd.py) on a loopback port, for OTF's runner endpoint."""
    from tests.fakes.otfd import FakeOtfd, serve

    fake = FakeOtfd()
    async with serve(fake):
        yield fake


def file_config(path: Path, **extra: Any) -> dict[str, Any]:
    return {"backends": [{"name": "local", "type": "file", "path": str(path), **extra}]}


@pytest.fixture(autouse=True)
def _no_inherited_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KEYSVC_CONFIG", "OTF_PRIVATE_KEY_PATH", "OTF_PUBLIC_KEY_PATH", "KEYSVC_ISSUER"):
        monkeypatch.delenv(name, raising=False)
    os.umask(0o022)


@pytest.fixture(autouse=True)
def _replies_match_the_openapi_document() -> Iterator[None]:
    """Every reply the in-process service sends during a test must match docs/openapi.yaml
    (tests/openapi.py): the suite's requests double as a conformance check of the document."""
    from tests.openapi import CONFORMANCE

    CONFORMANCE.reset()
    yield
    assert not CONFORMANCE.found, "replies that break docs/openapi.yaml:\n" + "\n".join(
        CONFORMANCE.found
    )
