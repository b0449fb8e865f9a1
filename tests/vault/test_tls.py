"""Vault over https: the CA from `ca_cert` is trusted by both paths (hvac for login, aiohttp for
Transit); without it the certificate is refused with a clear message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keysvc import jose
from keysvc.backends.base import BackendUnavailable
from keysvc.backends.vault import VaultBackend
from tests.vault.bao import BaoServer
from tests.vault.conftest import settings, token_file


@pytest.fixture(scope="module")
def tls_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    server = BaoServer(tmp_path_factory.mktemp("openbao-tls"), dev=True, audit=False, tls=True)
    server.start()
    try:
        server.enable_transit()
        server.create_key("tls", "ecdsa-p256")
        yield server
    finally:
        server.stop()


async def test_ca_cert_is_trusted_for_login_and_signing(tls_bao: BaoServer, tmp_path: Path) -> None:
    assert tls_bao.address.startswith("https://")
    path = token_file(tmp_path, tls_bao.root_token)
    backend = VaultBackend("vault", settings(tls_bao, "tls", path, ca_cert=str(tls_bao.ca_cert)))
    await backend.open()
    try:
        (version,) = await backend.list_versions()
        signature = await backend.sign(version, jose.Algorithm.ES256, b"a.b")
        jose.verify_local(version.public_key, jose.Algorithm.ES256, b"a.b", signature)
    finally:
        await backend.close()


async def test_unknown_ca_is_refused_clearly(tls_bao: BaoServer, tmp_path: Path) -> None:
    path = token_file(tmp_path, tls_bao.root_token)
    trusting = VaultBackend("vault", settings(tls_bao, "tls", path, ca_cert=str(tls_bao.ca_cert)))
    backend = VaultBackend("vault", settings(tls_bao, "tls", path))
    try:
        with pytest.raises(BackendUnavailable, match="TLS verification failed"):
            await backend.open()  # the login path (hvac)
        await trusting.open()
        backend.auth._lease = trusting.auth.lease  # logged in: now the Transit path (aiohttp)
        with pytest.raises(BackendUnavailable, match="TLS verification failed"):
            await backend.list_versions()
    finally:
        await backend.close()
        await trusting.close()


async def test_tls_skip_verify_connects_without_the_ca(tls_bao: BaoServer, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    path = token_file(tmp_path, tls_bao.root_token)
    backend = VaultBackend("vault", settings(tls_bao, "tls", path, tls_skip_verify=True))
    await backend.open()
    try:
        assert len(await backend.list_versions()) == 1
        assert "does not verify Vault's TLS certificate" in caplog.text
    finally:
        await backend.close()
