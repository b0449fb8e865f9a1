"""keysvc beside a fake otfd (tests/fakes/otfd.py), both on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from keysvc.config import merge
from tests.conftest import file_config
from tests.fakes.otfd import FakeOtfd
from tests.service import RunningService, start_service


@contextlib.asynccontextmanager
async def keysvc_for(
    otfd_url: str, key_dir: Path, otf: dict[str, Any] | None = None, **config: Any
) -> AsyncIterator[RunningService]:
    """keysvc with a file backend and `[otf] url = otfd_url` (plus `otf`, `config`)."""
    data = merge(file_config(key_dir), {"otf": {"url": otfd_url, "timeout": "2s", **(otf or {})}})
    async with start_service(merge(data, config)) as svc:
        yield svc


@pytest.fixture
async def keysvc(otfd: FakeOtfd, key_dir: Path) -> AsyncIterator[RunningService]:
    async with keysvc_for(otfd.url, key_dir) as svc:
        yield svc
