"""GCP backend settings (validated at config load) and credentials: a service-account file or
Application Default Credentials, sent over TLS to a fake that checks the self-signed JWT the
way Google does."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keysvc.backends.base import Unauthenticated
from keysvc.backends.gcp_kms import GcpKmsBackend
from keysvc.config import parse_config
from keysvc.service import build_backends
from keysvc.errors import ConfigError
from tests.fakes.gcp_kms import FakeCloudKms
from tests.gcp.conftest import KEY

SERVICE_ACCOUNT = "keysvc-signer@keysvc-test.iam.gserviceaccount.com"


def backend_config(**settings: Any) -> dict[str, Any]:
    return {
        "issuer": "https://keys.example.com",
        "backends": [{"name": "gcp", "type": "gcp_kms", "key": KEY, **settings}],
    }


def config_error(**settings: Any) -> str:
    with pytest.raises(ConfigError) as info:
        build_backends(parse_config(backend_config(**settings)))
    return str(info.value)


# -- settings -----------------------------------------------------------------------------------


def test_settings_are_read_from_the_config() -> None:
    config = parse_config(
        backend_config(endpoint="europe-west1-kms.example.internal", timeout="3s")
    )
    settings = build_backends(config)[0].settings
    assert settings.key == KEY  # type: ignore[attr-defined]
    assert settings.target == "europe-west1-kms.example.internal:443"  # type: ignore[attr-defined]
    assert settings.timeout.total_seconds() == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("oidc", "must be projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY"),
        ("projects/p/locations/global/keyRings/r", "must be projects/PROJECT"),
        ("projects/p/locations/global/keyRings/r/cryptoKeys/k/", "must be projects/PROJECT"),
        ("projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
         "must name the CryptoKey, not one version"),
        ("projects/p/locations/global/keyRings/r r/cryptoKeys/k", "must be projects/PROJECT"),
    ],
)
def test_key_names_are_validated(key: str, message: str) -> None:
    error = config_error(key=key)
    assert error.startswith("backends[0]: key: ")
    assert message in error


@pytest.mark.parametrize(
    "settings",
    [
        {"insecure": True},
        {"insecure": True, "endpoint": "cloudkms.googleapis.com"},
        {"insecure": True, "endpoint": "10.0.0.8:443"},
        {"insecure": True, "endpoint": "kms.127.0.0.1.nip.io:443"},
    ],
)
def test_insecure_mode_is_refused_off_loopback(settings: dict[str, Any]) -> None:
    assert "only for local fakes" in config_error(**settings)


def test_insecure_mode_takes_no_credentials(tmp_path: Path) -> None:
    error = config_error(insecure=True, endpoint="127.0.0.1:9", credentials_file=str(tmp_path))
    assert "drop credentials_file" in error


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9", "[::1]:9", "localhost:9", "127.1.2.3:9"])
def test_insecure_mode_on_loopback_is_accepted(endpoint: str) -> None:
    build_backends(parse_config(backend_config(insecure=True, endpoint=endpoint)))


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("https://cloudkms.googleapis.com", "not a URL"),
        ("cloudkms.googleapis.com:https", "numeric port"),
        (":443", "HOST[:PORT]"),
    ],
)
def test_endpoints_are_validated(endpoint: str, message: str) -> None:
    assert message in config_error(endpoint=endpoint)


def test_unknown_settings_are_refused() -> None:
    assert "backends[0]: project: is not a setting keysvc knows" in config_error(project="p")


# -- credentials --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service_account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_service_account(path: Path, key: rsa.RSAPrivateKey, mode: int = 0o600) -> Path:
    info = {
        "type": "service_account",
        "project_id": "keysvc-test",
        "private_key_id": "0123456789abcdef",
        "private_key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "client_email": SERVICE_ACCOUNT,
        "client_id": "100000000000000000001",
        # Never contacted: keysvc uses self-signed JWTs, as Google's clients do for gRPC.
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path.write_text(json.dumps(info))
    os.chmod(path, mode)
    return path


@pytest.fixture
async def tls_kms(
    tmp_path: Path, service_account_key: rsa.RSAPrivateKey
) -> AsyncIterator[tuple[FakeCloudKms, Path]]:
    """The fake over TLS (a test CA), accepting only the test service account's JWTs."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    fake = FakeCloudKms(
        tls=(cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes()),
        service_accounts={SERVICE_ACCOUNT: service_account_key.public_key()},
    )
    fake.add_key(KEY, "EC_SIGN_P256_SHA256")
    async with fake:
        yield fake, ca_file


async def open_tls_backend(kms: FakeCloudKms, ca_file: Path, **settings: Any) -> GcpKmsBackend:
    config = parse_config(
        backend_config(endpoint=kms.endpoint, ca_file=str(ca_file), timeout="2s", **settings)
    )
    backend = GcpKmsBackend("gcp", build_backends(config)[0].settings)  # type: ignore[arg-type]
    await backend.open()
    return backend


async def test_service_account_file_over_tls(
    tls_kms: tuple[FakeCloudKms, Path], tmp_path: Path, service_account_key: rsa.RSAPrivateKey
) -> None:
    kms, ca_file = tls_kms
    credentials = write_service_account(tmp_path / "sa.json", service_account_key)
    backend = await open_tls_backend(kms, ca_file, credentials_file=str(credentials))
    try:
        versions = await backend.list_versions()
        assert len(versions) == 1
    finally:
        await backend.close()
    assert kms.authenticated and set(kms.authenticated) == {SERVICE_ACCOUNT}


async def test_application_default_credentials(
    tls_kms: tuple[FakeCloudKms, Path],
    tmp_path: Path,
    service_account_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kms, ca_file = tls_kms
    credentials = write_service_account(tmp_path / "adc.json", service_account_key)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
    backend = await open_tls_backend(kms, ca_file)
    try:
        assert len(await backend.list_versions()) == 1
    finally:
        await backend.close()
    assert set(kms.authenticated) == {SERVICE_ACCOUNT}


async def test_credentials_of_another_account_are_rejected(
    tls_kms: tuple[FakeCloudKms, Path], tmp_path: Path
) -> None:
    kms, ca_file = tls_kms
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    credentials = write_service_account(tmp_path / "sa.json", stranger)
    backend = await open_tls_backend(kms, ca_file, credentials_file=str(credentials))
    try:
        with pytest.raises(Unauthenticated, match="rejected the credentials of backend 'gcp'"):
            await backend.list_versions()
    finally:
        await backend.close()
    assert kms.authenticated == []


async def test_a_credentials_file_readable_by_others_is_refused(
    tmp_path: Path, service_account_key: rsa.RSAPrivateKey
) -> None:
    credentials = write_service_account(tmp_path / "sa.json", service_account_key, mode=0o644)
    config = parse_config(backend_config(credentials_file=str(credentials)))
    backend = GcpKmsBackend("gcp", build_backends(config)[0].settings)  # type: ignore[arg-type]
    refused = "credentials_file: .* accessible by group or others"
    with pytest.raises(ConfigError, match=refused) as info:
        await backend.open()
    assert "BEGIN PRIVATE KEY" not in str(info.value)


@pytest.mark.parametrize("content", [None, "{not json", '{"type": "authorized_robot"}'])
async def test_a_missing_or_malformed_credentials_file_is_a_config_error(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "sa.json"
    if content is not None:
        path.write_text(content)
        path.chmod(0o600)
    config = parse_config(backend_config(credentials_file=str(path)))
    backend = GcpKmsBackend("gcp", build_backends(config)[0].settings)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^backends\.gcp\.credentials_file|^backends\.gcp: "):
        await backend.open()
