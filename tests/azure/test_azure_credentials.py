"""azure-identity's real credentials, against the fake tenant's token endpoint: a client secret,
a client certificate and workload identity (through DefaultAzureCredential), plus the errors
an operator meets, none of which may carry a secret or a token."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from keysvc.backends.base import (
    BackendError,
    Unauthenticated,
)
from keysvc.errors import ConfigError
from keysvc.jose import Algorithm, verify_local
from keysvc.secrets import write_private_file
from tests.azure.conftest import CLIENT_ID, KEY, TENANT, BackendFactory
from tests.fakes.azure_kv import FakeKeyVault

SECRET = "s3cr3t~Q8Q8Q-not-for-logs"
MESSAGE = b"header.payload"


def secret_file(tmp_path: Path, secret: str = SECRET) -> Path:
    path = tmp_path / "client-secret"
    write_private_file(path, secret.encode() + b"\n")
    return path


async def sign_once(make_backend: BackendFactory, **settings: object) -> None:
    backend = make_backend(**settings)
    (version,) = await backend.list_versions()
    signature = await backend.sign(version, Algorithm.RS256, MESSAGE)
    verify_local(version.public_key, Algorithm.RS256, MESSAGE, signature)
    await backend.sign(version, Algorithm.RS256, MESSAGE)


async def test_client_secret(
    vault: FakeKeyVault,
    make_backend: BackendFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("azure").setLevel(logging.DEBUG)  # even azure-core's request logging
    try:
        vault.create_key(KEY, "RSA-HSM")
        vault.add_client(CLIENT_ID, secret=SECRET)
        await sign_once(
            make_backend,
            tenant_id=TENANT,
            client_id=CLIENT_ID,
            client_secret_file=secret_file(tmp_path),
            authority_host=vault.url,
        )
    finally:
        logging.getLogger("azure").setLevel(logging.NOTSET)
    assert vault.tokens_issued == 1, "the token is cached across list, get and sign"
    assert vault.calls["sign"] == 2
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "oauth2/v2.0/token" in logged or "/keys/" in logged, "azure logging was captured"
    assert SECRET not in logged
    assert not any(token in logged for token in vault.issued_tokens())


async def test_wrong_client_secret_is_a_clear_error_without_the_secret(
    vault: FakeKeyVault,
    make_backend: BackendFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    vault.create_key(KEY, "RSA-HSM")
    vault.add_client(CLIENT_ID, secret="the-right-one")
    backend = make_backend(
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        client_secret_file=secret_file(tmp_path),
        authority_host=vault.url,
    )
    with pytest.raises(BackendError) as info:
        await backend.list_versions()
    message = str(info.value)
    assert isinstance(info.value, Unauthenticated)
    assert "cannot get an Entra ID token" in message and "AADSTS7000215" in message
    assert SECRET not in message and "the-right-one" not in message
    assert SECRET not in caplog.text
    assert vault.calls["list"] == 0


async def test_client_certificate(
    vault: FakeKeyVault, make_backend: BackendFactory, tmp_path: Path
) -> None:
    app_cert = trustme.CA().issue_cert("keysvc.example", key_type=trustme.KeyType.RSA)
    path = tmp_path / "app.pem"
    write_private_file(path, app_cert.private_key_and_cert_chain_pem.bytes())
    vault.create_key(KEY, "RSA-HSM")
    vault.add_client(
        CLIENT_ID, certificate=x509.load_pem_x509_certificate(app_cert.cert_chain_pems[0].bytes())
    )
    await sign_once(
        make_backend,
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        client_certificate_path=path,
        authority_host=vault.url,
    )
    assert vault.tokens_issued == 1

    other = trustme.CA().issue_cert("intruder.example", key_type=trustme.KeyType.RSA)
    intruder = tmp_path / "intruder.pem"
    write_private_file(intruder, other.private_key_and_cert_chain_pem.bytes())
    with pytest.raises(BackendError, match="AADSTS7000215"):
        await make_backend(
            tenant_id=TENANT,
            client_id=CLIENT_ID,
            client_certificate_path=intruder,
            authority_host=vault.url,
        ).list_versions()

    ec_cert = trustme.CA().issue_cert("ec.example")  # azure-identity signs assertions with RS256
    ec_path = tmp_path / "ec.pem"
    write_private_file(ec_path, ec_cert.private_key_and_cert_chain_pem.bytes())
    with pytest.raises(ConfigError, match="RSA private key"):
        await make_backend(
            tenant_id=TENANT, client_id=CLIENT_ID, client_certificate_path=ec_path
        ).open()


async def test_workload_identity_through_default_credential(
    vault: FakeKeyVault,
    make_backend: BackendFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As on AKS: the projected service-account token is exchanged by DefaultAzureCredential's
    WorkloadIdentityCredential (the environment holds no client secret)."""
    for name in [n for n in os.environ if n.startswith(("AZURE_", "IDENTITY_", "MSI_"))]:
        monkeypatch.delenv(name)
    federated = tmp_path / "azure-identity-token"
    federated.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln")
    # What the AKS workload identity webhook injects (DefaultAzureCredential takes the authority
    # for workload identity from the environment only).
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(federated))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", vault.url)
    vault.create_key(KEY, "RSA-HSM")
    vault.add_client(CLIENT_ID, federated_assertion=federated.read_text())
    await sign_once(make_backend, tenant_id=TENANT, client_id=CLIENT_ID, default_credential=True)
    assert vault.tokens_issued == 1


async def test_secret_files_readable_by_others_are_refused(
    vault: FakeKeyVault, make_backend: BackendFactory, tmp_path: Path
) -> None:
    path = secret_file(tmp_path)
    path.chmod(0o644)
    backend = make_backend(tenant_id=TENANT, client_id=CLIENT_ID, client_secret_file=path)
    with pytest.raises(ConfigError, match="accessible by group or others"):
        await backend.open()
    (tmp_path / "empty").mkdir()
    empty = secret_file(tmp_path / "empty", secret="")
    with pytest.raises(ConfigError, match="is empty"):
        await make_backend(tenant_id=TENANT, client_id=CLIENT_ID, client_secret_file=empty).open()
