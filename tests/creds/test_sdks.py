"""The real cloud SDKs accept what `apply` wrote: botocore against moto's STS, google-auth
against a local Google STS, azure-identity against a local Entra ID over HTTPS. Each fake
verifies the token with PyJWT against the JWKS keysvc served."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.creds.conftest import run_apply, serve
from tests.fakes.entra_id import EntraId
from tests.fakes.google_sts import GoogleSts
from tests.service import RunningService

ROLE = "arn:aws:iam::123456789012:role/terraform"
GCP_PROVIDER = "projects/42/locations/global/workloadIdentityPools/otf/providers/keysvc"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


@pytest.fixture
def moto_sts() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_sts: str) -> None:
    """Nothing from this machine's own AWS setup may help botocore."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_sts)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")


def assumed_role_arn() -> tuple[str, str]:
    """What botocore's credential chain finds, and who STS says the credentials belong to."""
    import botocore.session

    session = botocore.session.Session()
    credentials = session.get_credentials()
    assert credentials is not None
    frozen = credentials.get_frozen_credentials()  # AssumeRoleWithWebIdentity happens here
    assert frozen.access_key and frozen.token
    sts = session.create_client("sts")
    return credentials.method, sts.get_caller_identity()["Arn"]


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize("tag", ["", "_PROD"])
async def test_botocore_assumes_the_role_with_what_was_written(
    tag: str, keysvc: RunningService, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single configuration: botocore finds the role through the printed variables. Multiple:
    no variables, and the provider's `shared_config_file` is all botocore needs."""
    env = {f"TFC_AWS_PROVIDER_AUTH{tag}": "true", f"TFC_AWS_RUN_ROLE_ARN{tag}": ROLE}
    result = await run_apply(keysvc, env, workdir)
    if tag:
        assert result.env == {}
        tfvars = json.loads((workdir / "aws_dynamic_credentials.auto.tfvars.json").read_text())
        aliases = tfvars["tfc_aws_dynamic_credentials"]["aliases"]
        monkeypatch.setenv("AWS_CONFIG_FILE", aliases["PROD"]["shared_config_file"])
    for name, value in result.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "run-1")
    method, arn = await asyncio.to_thread(assumed_role_arn)
    assert method == "assume-role-with-web-identity"
    assert arn == "arn:aws:sts::123456789012:assumed-role/terraform/run-1"


def google_credentials(config_file: str, sts_url: str | None) -> tuple[object, str | None]:
    """Load the credentials file as google-auth does; with `sts_url`, the Google endpoints in
    it are pointed at the local STS and a full exchange is made."""
    import google.auth
    import google.auth.transport.requests
    from google.auth import identity_pool

    info = json.loads(Path(config_file).read_text())
    if sts_url is None:
        # without scopes google-auth does not look the project up (which would go online)
        credentials, _ = google.auth.load_credentials_from_file(config_file)
        return credentials, None
    info["token_url"] = f"{sts_url}/v1/token"
    if "service_account_impersonation_url" in info:
        info["service_account_impersonation_url"] = info[
            "service_account_impersonation_url"
        ].replace("https://iamcredentials.googleapis.com", sts_url)
    credentials = identity_pool.Credentials.from_info(info, scopes=SCOPES)
    credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[attr-defined]
    return credentials, credentials.token  # type: ignore[attr-defined]


@pytest.mark.parametrize("principal", ["service_account", "workload_pool"])
async def test_google_auth_exchanges_the_written_token(
    principal: str, keysvc: RunningService, workdir: Path
) -> None:
    env = {
        "TFC_GCP_PROVIDER_AUTH": "true",
        "TFC_GCP_WORKLOAD_PROVIDER_NAME": GCP_PROVIDER,
        "TFC_GCP_PRINCIPAL_TYPE": principal,
        "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "terraform@acme.iam.gserviceaccount.com",
    }
    result = await run_apply(keysvc, env, workdir)
    config_file = result.env["GOOGLE_APPLICATION_CREDENTIALS"]

    # the file exactly as written: google-auth loads it and reads the token from gcp_token
    import google.auth.transport.requests
    from google.auth import identity_pool

    credentials, _ = await asyncio.to_thread(google_credentials, config_file, None)
    assert isinstance(credentials, identity_pool.Credentials)
    subject = credentials.retrieve_subject_token(google.auth.transport.requests.Request())
    assert subject == (workdir / "gcp_token").read_text()

    sts = GoogleSts(jwks_url=f"{keysvc.url}/.well-known/jwks")
    async with serve(sts.app()) as sts_url:
        _, access_token = await asyncio.to_thread(google_credentials, config_file, sts_url)
    [exchange] = sts.exchanges
    assert exchange["claims"]["aud"] == f"//iam.googleapis.com/{GCP_PROVIDER}"
    assert exchange["claims"]["terraform_workspace_id"] == "ws-8pNkEB3sF5Q9"
    assert exchange["form"]["subject_token"] == subject
    if principal == "service_account":
        assert sts.impersonations == ["terraform@acme.iam.gserviceaccount.com"]
        assert access_token and access_token.startswith("sa-")
    else:
        assert sts.impersonations == []
        assert access_token in sts.federated_tokens


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


def azure_token(authority: str, tenant: str, client_id: str, token_file: str, ca_file: str) -> str:
    from azure.identity import WorkloadIdentityCredential

    credential = WorkloadIdentityCredential(
        tenant_id=tenant,
        client_id=client_id,
        token_file_path=token_file,
        authority=authority,
        disable_instance_discovery=True,
        connection_verify=ca_file,
    )
    return credential.get_token("https://management.azure.com/.default").token


@pytest.mark.parametrize("tag", ["", "_ALIAS1"])
async def test_azure_identity_uses_the_written_files(
    tag: str, tls_ca: trustme.CA, keysvc: RunningService, workdir: Path, tmp_path: Path
) -> None:
    env = {f"TFC_AZURE_PROVIDER_AUTH{tag}": "true", f"TFC_AZURE_RUN_CLIENT_ID{tag}": "app-123"}
    result = await run_apply(keysvc, env, workdir)
    if tag:
        tfvars = json.loads((workdir / "azure_dynamic_credentials.auto.tfvars.json").read_text())
        paths = tfvars["tfc_azure_dynamic_credentials"]["aliases"]["ALIAS1"]
        client_id_file, token_file = paths["client_id_file_path"], paths["oidc_token_file_path"]
    else:
        client_id_file, token_file = str(workdir / "azure_client_id"), str(workdir / "azure_token")
        assert result.env["ARM_OIDC_TOKEN"] == Path(token_file).read_text()
    client_id = Path(client_id_file).read_text()

    entra = EntraId(jwks_url=f"{keysvc.url}/.well-known/jwks", client_ids={"app-123"})
    ca_file = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(context)
    async with serve(entra.app(), context) as url:
        entra.base_url = url
        token = await asyncio.to_thread(
            azure_token, url, "tenant-1", client_id, token_file, str(ca_file)
        )
    [grant] = entra.grants
    assert token.startswith("entra-")
    assert grant["client_id"] == "app-123" and grant["tenant"] == "tenant-1"
    assert grant["claims"]["terraform_run_phase"] == "plan"
