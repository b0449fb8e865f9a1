"""Fixtures for the operator-side tests: a trustme CA and a real HTTPS issuer on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from .issuer_server import IssuerServer, serve


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def issuer_server(ca: trustme.CA, tmp_path: Path) -> Iterator[IssuerServer]:
    yield from serve(ca, tmp_path)
