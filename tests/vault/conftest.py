"""Fixtures for the Vault backend tests: a real OpenBao dev server for the whole session, with
Transit enabled, and helpers to create keys, policies and backends on it."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from keysvc.backends.vault import VaultBackend
from keysvc.backends.vault_settings import VaultSettings
from keysvc.secrets import write_private_file
from tests.vault.bao import BaoServer, transit_server

DOCS = Path(__file__).resolve().parents[2] / "docs" / "backends" / "vault.md"


def documented_policy(key: str) -> str:
    """The minimal policy exactly as docs/backends/vault.md gives it (its first HCL block: read
    the key, sign, rotate), for `key` instead of `keysvc`: the tests run with what users copy."""
    block = DOCS.read_text().split("```hcl\n", 1)[1].split("```", 1)[0]
    assert block.count("/keysvc") == 3, block
    return block.replace("/keysvc", f"/{key}")

_names = itertools.count(1)


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    with transit_server(tmp_path_factory.mktemp("openbao")) as server:
        yield server


def unique(prefix: str) -> str:
    """A fresh Transit key name: tests share one server, never a key."""
    return f"{prefix}-{next(_names)}"


@pytest.fixture
def key_name(bao: BaoServer) -> str:
    name = unique("ec")
    bao.create_key(name, "ecdsa-p256")
    return name


def token_file(directory: Path, token: str, name: str = "vault-token") -> Path:
    path = directory / name
    write_private_file(path, token.encode())
    return path


def policy_token(bao: BaoServer, key: str, **options: Any) -> str:
    """A token holding only the documented minimal policy for `key`."""
    policy = f"keysvc-{key}"
    bao.write_policy(policy, documented_policy(key))
    return bao.create_token([policy], **options)


def settings(bao: BaoServer, key: str, token_path: Path | None = None, **extra: Any) -> VaultSettings:
    data: dict[str, Any] = {"address": bao.address, "key": key, **extra}
    if token_path is not None:
        data["token_file"] = str(token_path)
    return VaultSettings.model_validate(data)


@pytest.fixture
async def make_backend(bao: BaoServer, tmp_path: Path) -> AsyncIterator[Any]:
    """make_backend(key, **settings) → an opened VaultBackend (closed after the test). Without
    an explicit auth setting it uses the root token from a 0600 token file."""
    opened: list[VaultBackend] = []

    async def make(key: str, *, open_: bool = True, **extra: Any) -> VaultBackend:
        if not any(k in extra for k in ("token_file", "role_id", "role", "auth")):
            extra["token_file"] = str(token_file(tmp_path, bao.root_token, f"root-{key}"))
        backend = VaultBackend("vault", settings(bao, key, **extra))
        opened.append(backend)
        if open_:
            await backend.open()
        return backend

    yield make
    for backend in opened:
        await backend.close()
