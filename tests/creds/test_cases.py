"""OTF's own table of cases (internal/dynamiccreds), plus the providers HCP Terraform has and
OTF lacks, against the real keysvc: exact files, exact variables, every token verified with
PyJWT against the JWKS the service served."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from keysvc.creds.manifest import MANIFEST_NAME
from tests.creds.conftest import mode_of, run_apply, verified
from tests.service import RunningService

GCP_PROVIDER = "projects/123/locations/global/workloadIdentityPools/pool-123/providers/provider-123"
GCP_IMPERSONATION = (
    "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
    "terraform@acme.iam.gserviceaccount.com:generateAccessToken"
)


def gcp_config(
    token_file: str, audience: str = "acme.audience", impersonate: bool = True
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "universe_domain": "googleapis.com",
        "type": "external_account",
        "audience": audience,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "https://sts.googleapis.com/v1/token",
    }
    if impersonate:
        config["service_account_impersonation_url"] = GCP_IMPERSONATION
    config["credential_source"] = {"file": "{w}/" + token_file, "format": {"type": "text"}}
    return config


def aws_ini(tag: str = "") -> str:
    return (
        "[default]\n"
        f"web_identity_token_file = {{w}}/aws{tag}_token\n"
        "role_arn                = my-arn\n"
    )


@dataclass
class Case:
    name: str
    env: dict[str, str]
    want_env: dict[str, str] = field(default_factory=dict)  # "{w}" = workdir, "<NAME>" = file
    tokens: dict[str, str] = field(default_factory=dict)  # token file → audience
    text_files: dict[str, str] = field(default_factory=dict)
    json_files: dict[str, Any] = field(default_factory=dict)
    phase: str = "plan"


CASES = [
    Case("no dynamic creds", {}),
    Case(
        "aws default",
        {"TFC_AWS_PROVIDER_AUTH": "true", "TFC_AWS_RUN_ROLE_ARN": "my-arn"},
        want_env={"AWS_ROLE_ARN": "my-arn", "AWS_WEB_IDENTITY_TOKEN_FILE": "{w}/aws_token"},
        tokens={"aws_token": "aws.workload.identity"},
        text_files={"aws_config.ini": aws_ini()},
    ),
    Case(
        "aws alias",
        {"TFC_AWS_PROVIDER_AUTH_ALIAS1": "true", "TFC_AWS_RUN_ROLE_ARN_ALIAS1": "my-arn"},
        tokens={"aws_ALIAS1_token": "aws.workload.identity"},
        text_files={"aws_ALIAS1_config.ini": aws_ini("_ALIAS1")},
        json_files={
            "aws_dynamic_credentials.auto.tfvars.json": {
                "tfc_aws_dynamic_credentials": {
                    "aliases": {"ALIAS1": {"shared_config_file": "{w}/aws_ALIAS1_config.ini"}}
                }
            }
        },
    ),
    Case(
        "gcp default",
        {
            "TFC_GCP_PROVIDER_AUTH": "true",
            "TFC_GCP_WORKLOAD_IDENTITY_AUDIENCE": "acme.audience",
            "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "terraform@acme.iam.gserviceaccount.com",
            "TFC_GCP_WORKLOAD_PROVIDER_NAME": GCP_PROVIDER,
        },
        want_env={"GOOGLE_APPLICATION_CREDENTIALS": "{w}/gcp_config"},
        tokens={"gcp_token": "acme.audience"},
        json_files={"gcp_config": gcp_config("gcp_token")},
    ),
    Case(
        "gcp alias",
        {
            "TFC_GCP_PROVIDER_AUTH_ALIAS1": "true",
            "TFC_GCP_WORKLOAD_IDENTITY_AUDIENCE_ALIAS1": "acme.audience",
            "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL_ALIAS1": "terraform@acme.iam.gserviceaccount.com",
            "TFC_GCP_WORKLOAD_PROVIDER_NAME_ALIAS1": GCP_PROVIDER,
        },
        tokens={"gcp_ALIAS1_token": "acme.audience"},
        json_files={
            "gcp_ALIAS1_config": gcp_config("gcp_ALIAS1_token"),
            "gcp_dynamic_credentials.auto.tfvars.json": {
                "tfc_gcp_dynamic_credentials": {
                    "aliases": {"ALIAS1": {"credentials": "{w}/gcp_ALIAS1_config"}}
                }
            },
        },
    ),
    Case(
        "gcp from parts, default audience, workload pool principal",
        {
            "TFC_GCP_PROVIDER_AUTH": "true",
            "TFC_GCP_PROJECT_NUMBER": "123",
            "TFC_GCP_WORKLOAD_POOL_ID": "pool-123",
            "TFC_DEFAULT_GCP_WORKLOAD_PROVIDER_ID": "provider-123",
            "TFC_GCP_PRINCIPAL_TYPE": "workload_pool",
        },
        want_env={"GOOGLE_APPLICATION_CREDENTIALS": "{w}/gcp_config"},
        tokens={"gcp_token": f"//iam.googleapis.com/{GCP_PROVIDER}"},
        json_files={
            "gcp_config": gcp_config(
                "gcp_token", f"//iam.googleapis.com/{GCP_PROVIDER}", impersonate=False
            )
        },
    ),
    Case(
        "azure default",
        {"TFC_AZURE_PROVIDER_AUTH": "true", "TFC_AZURE_RUN_CLIENT_ID": "clientid-123"},
        want_env={
            "ARM_CLIENT_ID": "clientid-123",
            "ARM_OIDC_TOKEN": "<azure_token>",
            "ARM_USE_OIDC": "true",
        },
        tokens={"azure_token": "api://AzureADTokenExchange"},
        text_files={"azure_client_id": "clientid-123"},
    ),
    Case(
        "azure alias",
        {
            "TFC_AZURE_PROVIDER_AUTH_ALIAS1": "true",
            "TFC_AZURE_RUN_CLIENT_ID_ALIAS1": "clientid-123",
        },
        tokens={"azure_ALIAS1_token": "api://AzureADTokenExchange"},
        text_files={"azure_ALIAS1_client_id": "clientid-123"},
        json_files={
            "azure_dynamic_credentials.auto.tfvars.json": {
                "tfc_azure_dynamic_credentials": {
                    "aliases": {
                        "ALIAS1": {
                            "client_id_file_path": "{w}/azure_ALIAS1_client_id",
                            "oidc_token_file_path": "{w}/azure_ALIAS1_token",
                        }
                    }
                }
            }
        },
    ),
    Case(
        "azure default and alias",
        {
            "TFC_AZURE_PROVIDER_AUTH": "true",
            "TFC_AZURE_RUN_CLIENT_ID": "clientid-123",
            "TFC_AZURE_PROVIDER_AUTH_ALIAS1": "true",
            "TFC_AZURE_RUN_CLIENT_ID_ALIAS1": "clientid-456",
        },
        tokens={
            "azure_token": "api://AzureADTokenExchange",
            "azure_ALIAS1_token": "api://AzureADTokenExchange",
        },
        text_files={"azure_client_id": "clientid-123", "azure_ALIAS1_client_id": "clientid-456"},
        json_files={
            "azure_dynamic_credentials.auto.tfvars.json": {
                "tfc_azure_dynamic_credentials": {
                    "default": {
                        "client_id_file_path": "{w}/azure_client_id",
                        "oidc_token_file_path": "{w}/azure_token",
                    },
                    "aliases": {
                        "ALIAS1": {
                            "client_id_file_path": "{w}/azure_ALIAS1_client_id",
                            "oidc_token_file_path": "{w}/azure_ALIAS1_token",
                        }
                    },
                }
            }
        },
    ),
    Case(
        "kubernetes default",
        {
            "TFC_KUBERNETES_PROVIDER_AUTH": "true",
            "TFC_KUBERNETES_WORKLOAD_IDENTITY_AUDIENCE": "k8s.example",
        },
        want_env={"KUBE_TOKEN": "<kubernetes_token>"},
        tokens={"kubernetes_token": "k8s.example"},
    ),
    Case(
        "kubernetes default and alias, audience from the default variable",
        {
            "TFC_KUBERNETES_PROVIDER_AUTH": "true",
            "TFC_KUBERNETES_PROVIDER_AUTH_EKS": "true",
            "TFC_DEFAULT_KUBERNETES_WORKLOAD_IDENTITY_AUDIENCE": "k8s.example",
            "TFC_KUBERNETES_WORKLOAD_IDENTITY_AUDIENCE_EKS": "eks.example",
        },
        tokens={"kubernetes_token": "k8s.example", "kubernetes_EKS_token": "eks.example"},
        json_files={
            "kubernetes_dynamic_credentials.auto.tfvars.json": {
                "tfc_kubernetes_dynamic_credentials": {
                    "default": {"token_path": "{w}/kubernetes_token"},
                    "aliases": {"EKS": {"token_path": "{w}/kubernetes_EKS_token"}},
                }
            }
        },
    ),
    Case(
        "manual tokens",
        {
            "TFC_WORKLOAD_IDENTITY_AUDIENCE": "my.audience",
            "TFC_WORKLOAD_IDENTITY_AUDIENCE_OTHER": "other.audience",
        },
        want_env={
            "TFC_WORKLOAD_IDENTITY_TOKEN": "<jwt:my.audience>",
            "TFC_WORKLOAD_IDENTITY_TOKEN_OTHER": "<jwt:other.audience>",
        },
    ),
    Case(
        "apply phase: phase-specific roles win, defaults fill in",
        {
            "TFC_AWS_PROVIDER_AUTH": "true",
            "TFC_AWS_PLAN_ROLE_ARN": "plan-arn",
            "TFC_AWS_APPLY_ROLE_ARN": "my-arn",
            "TFC_AWS_RUN_ROLE_ARN": "run-arn",
            "TFC_AZURE_PROVIDER_AUTH": "true",
            "TFC_DEFAULT_AZURE_RUN_CLIENT_ID": "clientid-123",
        },
        want_env={
            "AWS_ROLE_ARN": "my-arn",
            "AWS_WEB_IDENTITY_TOKEN_FILE": "{w}/aws_token",
            "ARM_CLIENT_ID": "clientid-123",
            "ARM_OIDC_TOKEN": "<azure_token>",
            "ARM_USE_OIDC": "true",
        },
        tokens={"aws_token": "aws.workload.identity", "azure_token": "api://AzureADTokenExchange"},
        text_files={"aws_config.ini": aws_ini(), "azure_client_id": "clientid-123"},
        phase="apply",
    ),
]


def expand(value: Any, workdir: Path) -> Any:
    if isinstance(value, dict):
        return {k: expand(v, workdir) for k, v in value.items()}
    if isinstance(value, str):
        value = value.replace("{w}", str(workdir))
        return re.sub(r"<([A-Za-z0-9_]+)>", lambda m: (workdir / m.group(1)).read_text(), value)
    return value


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_case(case: Case, keysvc: RunningService, workdir: Path) -> None:
    result = await run_apply(keysvc, case.env, workdir, case.phase)

    manual = {k: v for k, v in case.want_env.items() if v.startswith("<jwt:")}
    want_env = expand({k: v for k, v in case.want_env.items() if k not in manual}, workdir)
    assert {k: v for k, v in result.env.items() if k not in manual} == want_env
    assert list(result.env) == list(case.want_env)  # the documented order
    for name, marker in manual.items():
        await verified(keysvc, result.env[name], marker[len("<jwt:") : -1], case.phase)

    written = {**case.text_files, **case.json_files, **dict.fromkeys(case.tokens, "")}
    assert sorted(p.name for p in result.files) == sorted(written)
    on_disk = {p.name for p in workdir.iterdir()} - {MANIFEST_NAME}
    assert on_disk == set(written)
    assert (workdir / MANIFEST_NAME).exists() == bool(written)
    for path in workdir.iterdir():
        assert mode_of(path) == 0o600, path
    for name, audience in case.tokens.items():
        await verified(keysvc, (workdir / name).read_text(), audience, case.phase)
    for name, text in case.text_files.items():
        assert (workdir / name).read_text() == expand(text, workdir)
    for name, data in case.json_files.items():
        assert json.loads((workdir / name).read_text()) == expand(data, workdir)


async def test_each_configuration_gets_its_own_token(keysvc: RunningService, workdir: Path) -> None:
    env = {
        "TFC_AZURE_PROVIDER_AUTH": "true",
        "TFC_AZURE_PROVIDER_AUTH_B": "true",
        "TFC_DEFAULT_AZURE_RUN_CLIENT_ID": "c",
    }
    await run_apply(keysvc, env, workdir)
    first, second = (workdir / "azure_token").read_text(), (workdir / "azure_B_token").read_text()
    assert first != second
    claims = [await verified(keysvc, t, "api://AzureADTokenExchange") for t in (first, second)]
    assert claims[0]["jti"] != claims[1]["jti"]


async def test_false_switch_and_other_providers_modes_are_independent(
    keysvc: RunningService, workdir: Path
) -> None:
    """An alias on one provider does not switch another provider to tfvars mode."""
    env = {
        "TFC_GCP_PROVIDER_AUTH": "false",
        "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "x@y",  # never read: GCP is off
        "TFC_AWS_PROVIDER_AUTH_A": "TRUE",
        "TFC_DEFAULT_AWS_RUN_ROLE_ARN": "arn-a",
        "TFC_KUBERNETES_PROVIDER_AUTH": "1",
        "TFC_KUBERNETES_WORKLOAD_IDENTITY_AUDIENCE": "k",
    }
    result = await run_apply(keysvc, env, workdir)
    assert list(result.env) == ["KUBE_TOKEN"]
    assert (workdir / "aws_dynamic_credentials.auto.tfvars.json").exists()
    assert not list(workdir.glob("gcp*"))
