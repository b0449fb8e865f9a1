"""`keysvc setup aws|gcp|azure`: the printed Terraform, read back with python-hcl2.

Beyond structure, each cloud's generated trust is fed to doctor's evaluator for that cloud and
must admit exactly the runs asked for: the generator and the checker agree on OTF's subject.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from click.testing import CliRunner

from keysvc.cli import cli
from keysvc.config import parse_config
from keysvc.doctor import aws_trust, azure_trust, gcp_trust
from keysvc.issuer_url import IssuerURL
from keysvc.run_identity import Run, RunIdentity
from keysvc.service import Service
from keysvc.tokens import TokenRequest
from tests.conftest import write_key

from . import hcl

ISSUER = "https://keys.example.com"
HOST = "keys.example.com"


def run_setup(*args: str, expect: int = 0) -> tuple[str, str]:
    result = CliRunner().invoke(cli, ["setup", *args], catch_exceptions=False)
    assert result.exit_code == expect, (result.stdout, result.stderr)
    return result.stdout, result.stderr


def setup_hcl(cloud: str, *args: str) -> dict[str, Any]:
    out, _ = run_setup(cloud, "--issuer", ISSUER, "--organization", "acme", *args)
    return hcl.parse(out)


def run(
    workspace: str, phase: str, org: str = "acme", audience: str = "aws.workload.identity"
) -> RunIdentity:
    return RunIdentity(ISSUER, audience, Run(org, workspace, "ws-1", "run-1", phase))


# --- AWS --------------------------------------------------------------------------------------


def aws_policy_json(document: dict[str, Any], account: str = "123456789012") -> dict[str, Any]:
    """The IAM JSON that Terraform's aws_iam_policy_document renders from the parsed HCL."""
    (body,) = hcl.blocks(document, "data", "aws_iam_policy_document").values()
    statements = []
    for statement in body["statement"]:
        (principals,) = statement["principals"]
        assert principals["type"] == "Federated"
        assert principals["identifiers"] == ["${aws_iam_openid_connect_provider.keysvc.arn}"]
        conditions: dict[str, dict[str, list[str]]] = {}
        for condition in statement["condition"]:
            conditions.setdefault(condition["test"], {})[condition["variable"]] = condition[
                "values"
            ]
        statements.append(
            {
                "Sid": statement["sid"],
                "Effect": statement["effect"],
                "Action": statement["actions"],
                "Principal": {"Federated": f"arn:aws:iam::{account}:oidc-provider/{HOST}"},
                "Condition": conditions,
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def test_aws_defaults_trust_every_workspace_and_phase_of_the_organization() -> None:
    doc = setup_hcl("aws")
    providers = hcl.blocks(doc, "resource", "aws_iam_openid_connect_provider")
    assert providers == {"keysvc": {"url": ISSUER, "client_id_list": ["aws.workload.identity"]}}
    (policy,) = hcl.blocks(doc, "data", "aws_iam_policy_document").values()
    (statement,) = policy["statement"]
    assert statement["effect"] == "Allow"
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    conditions = {c["variable"]: (c["test"], c["values"]) for c in statement["condition"]}
    assert conditions == {
        f"{HOST}:aud": ("StringEquals", ["aws.workload.identity"]),
        f"{HOST}:sub": ("StringLike", ["organization:acme:workspace:*:run_phase:*"]),
    }
    role = hcl.blocks(doc, "resource", "aws_iam_role")["keysvc"]
    assert role["assume_role_policy"] == "${data.aws_iam_policy_document.keysvc_trust.json}"
    assert role["name"] == "otf-acme"
    assert hcl.outputs(doc) == {"role_arn": "${aws_iam_role.keysvc.arn}"}
    required = doc["terraform"][0]["required_providers"][0]["aws"]
    assert required == {"source": "hashicorp/aws", "version": ">= 5.81"}


def test_aws_exact_workspaces_and_phase_use_string_equals() -> None:
    doc = setup_hcl("aws", "--workspace", "web", "--workspace", "db", "--phase", "apply")
    (policy,) = hcl.blocks(doc, "data", "aws_iam_policy_document").values()
    sub = [c for c in policy["statement"][0]["condition"] if c["variable"].endswith(":sub")][0]
    assert sub["test"] == "StringEquals"
    assert sub["values"] == [
        "organization:acme:workspace:web:run_phase:apply",
        "organization:acme:workspace:db:run_phase:apply",
    ]


@pytest.mark.parametrize(
    ("args", "accepted", "refused"),
    [
        ((), [run("web", "plan"), run("x.y_z-1", "apply")], [run("web", "plan", org="other")]),
        (
            ("--workspace", "net-*", "--phase", "apply"),
            [run("net-core", "apply"), run("net-", "apply")],
            [run("net-core", "plan"), run("network", "apply"), run("web", "apply")],
        ),
        (
            ("--workspace", "web", "--workspace", "db-?"),
            [run("web", "plan"), run("db-1", "apply")],
            [run("db-12", "apply"), run("webs", "plan"), run("web", "plan", audience="other")],
        ),
    ],
)
def test_aws_trust_policy_admits_exactly_the_requested_runs(
    args: tuple[str, ...], accepted: list[RunIdentity], refused: list[RunIdentity]
) -> None:
    policy = aws_trust.load_policy(json.dumps(aws_policy_json(setup_hcl("aws", *args))))
    for identity in accepted:
        assert aws_trust.evaluate(policy, identity, IssuerURL(ISSUER)).accepted, identity
    for identity in refused:
        verdict = aws_trust.evaluate(policy, identity, IssuerURL(ISSUER))
        assert not verdict.accepted, identity


def test_aws_condition_keys_keep_the_issuer_path() -> None:
    out, _ = run_setup("aws", "--issuer", "https://example.com/otf", "--organization", "acme")
    (policy,) = hcl.blocks(hcl.parse(out), "data", "aws_iam_policy_document").values()
    variables = {c["variable"] for c in policy["statement"][0]["condition"]}
    assert variables == {"example.com/otf:aud", "example.com/otf:sub"}


def test_aws_existing_provider_is_read_not_created() -> None:
    doc = setup_hcl("aws", "--existing-provider", "--audience", "sts.amazonaws.com")
    assert hcl.blocks(doc, "resource", "aws_iam_openid_connect_provider") == {}
    assert hcl.blocks(doc, "data", "aws_iam_openid_connect_provider") == {"keysvc": {"url": ISSUER}}
    (policy,) = hcl.blocks(doc, "data", "aws_iam_policy_document").values()
    principals = policy["statement"][0]["principals"][0]
    assert principals["identifiers"] == ["${data.aws_iam_openid_connect_provider.keysvc.arn}"]
    aud = [c for c in policy["statement"][0]["condition"] if c["variable"].endswith(":aud")][0]
    assert aud["values"] == ["sts.amazonaws.com"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--issuer", "https://keys.example.com:8443"), "port"),
        (("--issuer", "http://keys.example.com"), "https"),
        (("--issuer", "https://keys.example.com/"), "trailing"),
        (("--issuer", "https://keys.example.com?x=1"), "query"),
        (("--issuer", ISSUER, "--workspace", "a:b"), "workspace"),
        (("--issuer", ISSUER, "--audience", " "), "audience"),
        (("--issuer", ISSUER, "--role-name", "bad role"), "role name"),
        (("--issuer", ISSUER, "--name", "1bad"), "Terraform identifier"),
    ],
)
def test_aws_bad_input_is_a_one_line_error(args: tuple[str, ...], message: str) -> None:
    out, err = run_setup("aws", "--organization", "acme", *args, expect=2)
    assert out == ""
    assert err.startswith("keysvc: error: ") and err.count("\n") == 1
    assert message in err


def test_organization_with_colon_is_refused_for_every_cloud() -> None:
    for cloud in ("aws", "gcp", "azure"):
        out, err = run_setup(cloud, "--issuer", ISSUER, "--organization", "acme:x", expect=2)
        assert out == "" and "organization 'acme:x'" in err


# --- GCP --------------------------------------------------------------------------------------


def gcp_provider(doc: dict[str, Any]) -> dict[str, Any]:
    return hcl.blocks(doc, "resource", "google_iam_workload_identity_pool_provider")["keysvc"]


def test_gcp_maps_subject_and_terraform_claims_and_conditions_on_the_organization() -> None:
    doc = setup_hcl("gcp")
    provider = gcp_provider(doc)
    assert provider["attribute_mapping"]["google.subject"] == "assertion.sub"
    for claim in (
        "terraform_organization_name",
        "terraform_workspace_name",
        "terraform_workspace_id",
        "terraform_full_workspace",
        "terraform_run_id",
        "terraform_run_phase",
    ):
        assert provider["attribute_mapping"][f"attribute.{claim}"] == f"assertion.{claim}"
    assert provider["attribute_condition"] == 'assertion.terraform_organization_name == "acme"'
    (oidc,) = provider["oidc"]
    assert oidc == {"issuer_uri": ISSUER}  # no allowed_audiences: aud = the provider's name
    assert provider["workload_identity_pool_id"] == (
        "${google_iam_workload_identity_pool.keysvc.workload_identity_pool_id}"
    )
    binding = hcl.blocks(doc, "resource", "google_service_account_iam_member")
    assert binding["keysvc_workload_identity"] == {
        "service_account_id": "${google_service_account.keysvc.name}",
        "role": "roles/iam.workloadIdentityUser",
        "member": "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.keysvc.name}"
        "/attribute.terraform_organization_name/acme",
    }
    assert set(hcl.outputs(doc)) == {"workload_provider_name", "service_account_email"}


def test_gcp_exact_run_binds_the_subject_principal_and_sets_audience() -> None:
    doc = setup_hcl(
        "gcp",
        "--workspace",
        "web",
        "--phase",
        "apply",
        "--audience",
        "gcp.workload.identity",
        "--project",
        "my-project",
    )
    provider = gcp_provider(doc)
    assert provider["oidc"][0]["allowed_audiences"] == ["gcp.workload.identity"]
    assert provider["project"] == "my-project"
    member = hcl.blocks(doc, "resource", "google_service_account_iam_member")[
        "keysvc_workload_identity"
    ]["member"]
    assert member == (
        "principal://iam.googleapis.com/${google_iam_workload_identity_pool.keysvc.name}"
        "/subject/organization:acme:workspace:web:run_phase:apply"
    )


@pytest.mark.parametrize(
    ("args", "accepted", "refused"),
    [
        ((), [run("web", "plan"), run("db", "apply")], [run("web", "plan", org="acme2")]),
        (
            ("--workspace", "net-*", "--workspace", "web", "--phase", "plan"),
            [run("net-a", "plan"), run("web", "plan")],
            [run("net-a", "apply"), run("netx", "plan"), run("webs", "plan")],
        ),
        (
            (
                "--workspace",
                "a?.*",
            ),
            [run("ab.c", "apply"), run("ax.", "plan")],
            [run("abc", "apply"), run("a.c", "plan"), run("xab.c", "plan")],
        ),
    ],
)
def test_gcp_attribute_condition_admits_exactly_the_requested_runs(
    args: tuple[str, ...], accepted: list[RunIdentity], refused: list[RunIdentity]
) -> None:
    condition = gcp_provider(setup_hcl("gcp", *args))["attribute_condition"]
    for identity in accepted:
        assert gcp_trust.evaluate(condition, identity).accepted, (condition, identity)
    for identity in refused:
        assert not gcp_trust.evaluate(condition, identity).accepted, (condition, identity)


def test_gcp_inline_jwks_keeps_only_the_fields_gcp_accepts(tmp_path: Any) -> None:
    jwks = {
        "keys": [
            {
                "kty": "RSA",
                "kid": "k1",
                "use": "sig",
                "alg": "RS256",
                "n": "abc",
                "e": "AQAB",
                "x5c": ["MIIB"],
                "x5t": "zz",
            },
            {"kty": "EC", "kid": "k2", "crv": "P-256", "x": "xx", "y": "yy", "alg": "ES256"},
        ]
    }
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    out, err = run_setup("gcp", "--issuer", ISSUER, "--organization", "acme", "--jwks", str(path))
    uploaded = json.loads(gcp_provider(hcl.parse(out))["oidc"][0]["jwks_json"])
    assert uploaded == {
        "keys": [
            {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k1", "n": "abc", "e": "AQAB"},
            {"kty": "EC", "alg": "ES256", "kid": "k2", "x": "xx", "y": "yy", "crv": "P-256"},
        ]
    }
    assert "x5c, x5t" in err and "rotation" in err


def test_gcp_refuses_a_jwks_with_private_key_material_without_echoing_it(tmp_path: Any) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(
        json.dumps(
            {
                "keys": [
                    {
                        "kty": "EC",
                        "kid": "k",
                        "crv": "P-256",
                        "x": "a",
                        "y": "b",
                        "d": "SECRET-SCALAR",
                    }
                ]
            }
        )
    )
    out, err = run_setup(
        "gcp", "--issuer", ISSUER, "--organization", "acme", "--jwks", str(path), expect=2
    )
    assert out == "" and "private key material" in err and "SECRET" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--pool-id", "gcp-pool"), "pool id"),
        (("--provider-id", "x"), "provider id"),
        (("--service-account-id", "Bad_Account"), "service account id"),
        (("--jwks", "/nonexistent/jwks.json"), "No such file"),
        (("--jwks", "http://example.com/jwks"), "https"),
        (("--audience", "a" * 300), "256"),
    ],
)
def test_gcp_bad_input_is_refused(args: tuple[str, ...], message: str) -> None:
    out, err = run_setup("gcp", "--issuer", ISSUER, "--organization", "acme", *args, expect=2)
    assert out == "" and message in err


# --- Azure ------------------------------------------------------------------------------------


def azure_subjects(doc: dict[str, Any]) -> dict[str, str]:
    (locals_block,) = doc["locals"]
    return locals_block["keysvc_federated_subjects"]


def test_azure_one_credential_per_workspace_and_phase_with_exact_subjects() -> None:
    doc = setup_hcl("azure", "--workspace", "web", "--workspace", "db")
    assert azure_subjects(doc) == {
        "otf-acme-web-plan": "organization:acme:workspace:web:run_phase:plan",
        "otf-acme-web-apply": "organization:acme:workspace:web:run_phase:apply",
        "otf-acme-db-plan": "organization:acme:workspace:db:run_phase:plan",
        "otf-acme-db-apply": "organization:acme:workspace:db:run_phase:apply",
    }
    credential = hcl.blocks(doc, "resource", "azuread_application_federated_identity_credential")[
        "keysvc"
    ]
    assert credential["for_each"] == "${local.keysvc_federated_subjects}"
    assert credential["subject"] == "${each.value}"
    assert credential["issuer"] == ISSUER
    assert credential["audiences"] == ["api://AzureADTokenExchange"]
    assert credential["application_id"] == "${azuread_application.keysvc.id}"
    principal = hcl.blocks(doc, "resource", "azuread_service_principal")["keysvc"]
    assert principal == {"client_id": "${azuread_application.keysvc.client_id}"}
    assert hcl.outputs(doc) == {"client_id": "${azuread_application.keysvc.client_id}"}


def test_azure_credentials_accept_exactly_their_runs() -> None:
    doc = setup_hcl("azure", "--workspace", "web", "--phase", "apply")
    credentials = [
        {
            "name": name,
            "issuer": ISSUER,
            "subject": sub,
            "audiences": ["api://AzureADTokenExchange"],
        }
        for name, sub in azure_subjects(doc).items()
    ]
    azure = "api://AzureADTokenExchange"
    assert azure_trust.evaluate(credentials, run("web", "apply", audience=azure)).accepted
    for refused in (run("web", "plan", audience=azure), run("Web", "apply", audience=azure)):
        assert not azure_trust.evaluate(credentials, refused).accepted


def test_azure_warns_beyond_twenty_credentials_but_still_prints_them() -> None:
    workspaces = [arg for i in range(11) for arg in ("--workspace", f"ws{i}")]
    out, err = run_setup("azure", "--issuer", ISSUER, "--organization", "acme", *workspaces)
    assert len(azure_subjects(hcl.parse(out))) == 22
    assert err.startswith("keysvc: warning: 22 federated credentials") and "20" in err


def test_azure_at_twenty_credentials_is_quiet() -> None:
    workspaces = [arg for i in range(10) for arg in ("--workspace", f"ws{i}")]
    _, err = run_setup("azure", "--issuer", ISSUER, "--organization", "acme", *workspaces)
    assert err == ""


@pytest.mark.parametrize(
    ("args", "message"), [((), "--workspace"), (("--workspace", "web-*"), "wildcards")]
)
def test_azure_needs_exact_workspaces(args: tuple[str, ...], message: str) -> None:
    out, err = run_setup("azure", "--issuer", ISSUER, "--organization", "acme", *args, expect=2)
    assert out == "" and message in err


# --- Terraform JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_json_output_is_terraform_json_with_the_same_resources(cloud: str) -> None:
    args = ["--issuer", ISSUER, "--organization", "acme", "--workspace", "web"]
    text_out, _ = run_setup(cloud, *args)
    json_out, _ = run_setup(cloud, *args, "--json")
    from_json = json.loads(json_out)
    from_hcl = hcl.parse(text_out)
    hcl_resources = {t for entry in from_hcl["resource"] for t in entry}
    assert set(from_json["resource"]) == hcl_resources
    assert set(from_json["output"]) == set(hcl.outputs(from_hcl))
    assert "required_providers" in from_json["terraform"]


def test_json_output_aws_references_are_interpolations() -> None:
    out, _ = run_setup("aws", "--issuer", ISSUER, "--organization", "acme", "--json")
    doc = json.loads(out)
    role = doc["resource"]["aws_iam_role"]["keysvc"]
    assert role["assume_role_policy"] == "${data.aws_iam_policy_document.keysvc_trust.json}"
    statement = doc["data"]["aws_iam_policy_document"]["keysvc_trust"]["statement"]
    assert [c["test"] for c in statement["condition"]] == ["StringEquals", "StringLike"]


def test_gcp_inline_jwks_fetched_over_https(issuer_server: Any) -> None:
    key = {"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": "abc", "e": "AQAB"}
    issuer_server.state.jwks = {"keys": [key]}
    out, _ = run_setup(
        "gcp",
        "--issuer",
        ISSUER,
        "--organization",
        "acme",
        "--jwks",
        issuer_server.url + "/.well-known/jwks",
        "--ca-file",
        str(issuer_server.ca_file),
    )
    uploaded = json.loads(gcp_provider(hcl.parse(out))["oidc"][0]["jwks_json"])
    assert uploaded == {"keys": [key]}
    # without the CA the certificate is not trusted: a one-line error, nothing printed
    out, err = run_setup(
        "gcp",
        "--issuer",
        ISSUER,
        "--organization",
        "acme",
        "--jwks",
        issuer_server.url + "/.well-known/jwks",
        expect=2,
    )
    assert out == "" and "not trusted" in err


# --- the service's subject format -------------------------------------------------------------
#
# The trust setup writes for a custom `[tokens] subject_format` is fed real tokens minted by
# keysvc's own token code with that format: the ones asked for must be accepted, the runs of
# other organizations, workspaces and phases refused.

AWS_AUD = "aws.workload.identity"
AZURE_AUD = "api://AzureADTokenExchange"
GCP_AUD = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q"
RUN_ID_FORMAT = "repo:{organization}/{workspace}:run:{run_id}:phase:{run_phase}"
WORKSPACE_ID_FORMAT = "org:{organization}:ws:{workspace_id}:{run_phase}"
RUN_ID_FIRST_FORMAT = "run:{run_id}:org:{organization}:ws:{workspace}:{run_phase}"
TIME_CLAIMS = ("iat", "nbf", "exp", "jti")


@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RSA key that signs at once (RSA: Azure's audience needs RS256)."""
    directory = tmp_path_factory.mktemp("keys") / "keys"
    directory.mkdir(mode=0o700)
    write_key(directory, "rsa-2048", datetime.now(UTC) - timedelta(hours=1))
    return directory


def mint(keys: Path, subject_format: str, *runs: dict[str, str]) -> list[dict[str, Any]]:
    """The claims of real tokens keysvc issues for `runs` with this subject format."""

    async def issue_all() -> list[dict[str, Any]]:
        config = parse_config(
            {
                "issuer": ISSUER,
                "tokens": {"subject_format": subject_format},
                "backends": [{"name": "local", "type": "file", "path": str(keys)}],
            }
        )
        service = Service(config)
        await service.start(refresh_loop=False)
        try:
            issued = [
                await service.issuer.issue_for_run(TokenRequest.model_validate(run)) for run in runs
            ]
        finally:
            await service.stop()
        return [jwt.decode(t.token, options={"verify_signature": False}) for t in issued]

    return asyncio.run(issue_all())


def token_run(
    org: str,
    workspace: str,
    phase: str,
    audience: str,
    workspace_id: str = "ws-web1",
    run_id: str = "run-Yb2n8qzM4jCP",
) -> dict[str, str]:
    return {
        "organization": org,
        "workspace": workspace,
        "workspace_id": workspace_id,
        "run_id": run_id,
        "run_phase": phase,
        "audience": audience,
    }


def as_identity(claims: dict[str, Any], subject_format: str) -> RunIdentity:
    """The run doctor evaluates for a token; it must carry exactly the token's claims."""
    run = Run(
        claims["terraform_organization_name"],
        claims["terraform_workspace_name"],
        claims["terraform_workspace_id"],
        claims["terraform_run_id"],
        claims["terraform_run_phase"],
    )
    identity = RunIdentity(claims["iss"], claims["aud"], run, subject_format)
    assert identity.claims() == {k: v for k, v in claims.items() if k not in TIME_CLAIMS}
    return identity


def judged(
    keys: Path,
    subject_format: str,
    evaluate: Callable[[RunIdentity], Any],
    accepted: list[dict[str, str]],
    refused: list[dict[str, str]],
) -> None:
    tokens = mint(keys, subject_format, *accepted, *refused)
    for claims in tokens[: len(accepted)]:
        verdict = evaluate(as_identity(claims, subject_format))
        assert verdict.accepted, (claims["sub"], verdict)
    for claims in tokens[len(accepted) :]:
        verdict = evaluate(as_identity(claims, subject_format))
        assert not verdict.accepted, (claims["sub"], verdict)


def test_aws_trust_for_a_run_id_format_admits_exactly_the_requested_runs(rsa_keys: Path) -> None:
    args = ("--subject-format", RUN_ID_FORMAT, "--workspace", "web", "--phase", "apply")
    doc = setup_hcl("aws", *args)
    (policy_block,) = hcl.blocks(doc, "data", "aws_iam_policy_document").values()
    sub = [c for c in policy_block["statement"][0]["condition"] if c["variable"].endswith(":sub")]
    assert sub[0]["test"] == "StringLike"
    assert sub[0]["values"] == ["repo:acme/web:run:*:phase:apply"]
    policy = aws_trust.load_policy(json.dumps(aws_policy_json(doc)))
    judged(
        rsa_keys,
        RUN_ID_FORMAT,
        lambda identity: aws_trust.evaluate(policy, identity, IssuerURL(ISSUER)),
        accepted=[
            token_run("acme", "web", "apply", AWS_AUD),
            token_run("acme", "web", "apply", AWS_AUD, run_id="run-other.1"),
        ],
        refused=[
            token_run("acme", "web", "plan", AWS_AUD),
            token_run("acme", "web2", "apply", AWS_AUD),
            token_run("acme-x", "web", "apply", AWS_AUD),
            token_run("evil", "web", "apply", AWS_AUD),
            token_run("acme", "web", "apply", "sts.amazonaws.com"),
        ],
    )


def test_aws_wildcard_run_id_cannot_reach_another_organization(rsa_keys: Path) -> None:
    """With `{run_id}` first, its `*` stands before the organization; names without ':' keep
    another organization's tokens (even ones naming acme as workspace or run) out."""
    doc = setup_hcl("aws", "--subject-format", RUN_ID_FIRST_FORMAT)
    (policy_block,) = hcl.blocks(doc, "data", "aws_iam_policy_document").values()
    sub = [c for c in policy_block["statement"][0]["condition"] if c["variable"].endswith(":sub")]
    assert sub[0]["values"] == ["run:*:org:acme:ws:*:*"]
    policy = aws_trust.load_policy(json.dumps(aws_policy_json(doc)))
    judged(
        rsa_keys,
        RUN_ID_FIRST_FORMAT,
        lambda identity: aws_trust.evaluate(policy, identity, IssuerURL(ISSUER)),
        accepted=[
            token_run("acme", "web", "plan", AWS_AUD),
            token_run("acme", "org", "apply", AWS_AUD, run_id="org"),
        ],
        refused=[
            token_run("evil", "acme", "plan", AWS_AUD),
            token_run("evil", "ws", "plan", AWS_AUD, run_id="acme"),
            token_run("org", "acme", "plan", AWS_AUD, run_id="org"),
            token_run("acme.evil", "web", "plan", AWS_AUD),
        ],
    )


def test_aws_workspace_id_format_uses_the_given_id(rsa_keys: Path) -> None:
    args = ("--subject-format", WORKSPACE_ID_FORMAT, "--workspace", "web")
    policy = aws_trust.load_policy(
        json.dumps(aws_policy_json(setup_hcl("aws", *args, "--workspace-id", "ws-web1")))
    )
    judged(
        rsa_keys,
        WORKSPACE_ID_FORMAT,
        lambda identity: aws_trust.evaluate(policy, identity, IssuerURL(ISSUER)),
        accepted=[
            token_run("acme", "web", "plan", AWS_AUD),
            token_run("acme", "web", "apply", AWS_AUD),
        ],
        refused=[
            token_run("acme", "web", "plan", AWS_AUD, workspace_id="ws-web2"),
            token_run("evil", "web", "plan", AWS_AUD),
        ],
    )
    # without the id AWS cannot tell the workspaces apart: refused rather than widened
    out, err = run_setup("aws", "--issuer", ISSUER, "--organization", "acme", *args, expect=2)
    assert out == "" and "--workspace-id" in err and err.count("\n") == 1


def test_gcp_condition_for_a_custom_format_admits_exactly_the_requested_runs(
    rsa_keys: Path,
) -> None:
    args = ("--subject-format", RUN_ID_FORMAT, "--workspace", "web", "--phase", "apply")
    doc = setup_hcl("gcp", *args)
    condition = gcp_provider(doc)["attribute_condition"]
    tokens = mint(rsa_keys, RUN_ID_FORMAT, token_run("acme", "web", "apply", GCP_AUD))
    # the sub is unknown (run id): the binding names the workspace by claim, the condition the phase
    member = hcl.blocks(doc, "resource", "google_service_account_iam_member")[
        "keysvc_workload_identity"
    ]["member"]
    assert member.endswith(
        f"/attribute.terraform_full_workspace/{tokens[0]['terraform_full_workspace']}"
    )
    judged(
        rsa_keys,
        RUN_ID_FORMAT,
        lambda identity: gcp_trust.evaluate(condition, identity),
        accepted=[token_run("acme", "web", "apply", GCP_AUD, run_id="run-1")],
        refused=[
            token_run("acme", "web", "plan", GCP_AUD),
            token_run("acme", "web2", "apply", GCP_AUD),
            token_run("evil", "web", "apply", GCP_AUD),
        ],
    )


def test_gcp_subject_principal_is_the_tokens_sub_for_a_workspace_id_format(
    rsa_keys: Path,
) -> None:
    args = ("--subject-format", WORKSPACE_ID_FORMAT, "--workspace", "web", "--phase", "plan")
    doc = setup_hcl("gcp", *args, "--workspace-id", "ws-web1")
    (claims,) = mint(rsa_keys, WORKSPACE_ID_FORMAT, token_run("acme", "web", "plan", GCP_AUD))
    member = hcl.blocks(doc, "resource", "google_service_account_iam_member")[
        "keysvc_workload_identity"
    ]["member"]
    assert (
        member.endswith(f"/subject/{claims['sub']}") and claims["sub"] == "org:acme:ws:ws-web1:plan"
    )
    condition = gcp_provider(doc)["attribute_condition"]
    assert 'assertion.terraform_workspace_id == "ws-web1"' in condition
    judged(
        rsa_keys,
        WORKSPACE_ID_FORMAT,
        lambda identity: gcp_trust.evaluate(condition, identity),
        accepted=[token_run("acme", "web", "plan", GCP_AUD)],
        refused=[
            token_run("acme", "web", "plan", GCP_AUD, workspace_id="ws-web2"),
            token_run("acme", "web", "apply", GCP_AUD),
        ],
    )


def test_azure_credentials_for_a_custom_format_accept_exactly_their_runs(rsa_keys: Path) -> None:
    fmt = "{run_phase}/{workspace}@{organization}"
    doc = setup_hcl("azure", "--subject-format", fmt, "--workspace", "web", "--workspace", "db")
    assert azure_subjects(doc) == {
        "otf-acme-web-plan": "plan/web@acme",
        "otf-acme-web-apply": "apply/web@acme",
        "otf-acme-db-plan": "plan/db@acme",
        "otf-acme-db-apply": "apply/db@acme",
    }
    credentials = [
        {"name": name, "issuer": ISSUER, "subject": sub, "audiences": [AZURE_AUD]}
        for name, sub in azure_subjects(doc).items()
    ]
    judged(
        rsa_keys,
        fmt,
        lambda identity: azure_trust.evaluate(credentials, identity),
        accepted=[
            token_run("acme", "web", "plan", AZURE_AUD),
            token_run("acme", "db", "apply", AZURE_AUD),
        ],
        refused=[
            token_run("acme", "net", "plan", AZURE_AUD),
            token_run("evil", "web", "plan", AZURE_AUD),
        ],
    )


def test_azure_workspace_id_format_needs_and_uses_the_id(rsa_keys: Path) -> None:
    args = ("--subject-format", WORKSPACE_ID_FORMAT, "--workspace", "web", "--phase", "apply")
    out, err = run_setup("azure", "--issuer", ISSUER, "--organization", "acme", *args, expect=2)
    assert out == "" and err.count("\n") == 1 and "--workspace-id" in err
    doc = setup_hcl("azure", *args, "--workspace-id", "ws-web1")
    assert azure_subjects(doc) == {"otf-acme-web-apply": "org:acme:ws:ws-web1:apply"}
    credentials = [
        {"issuer": ISSUER, "subject": sub, "audiences": [AZURE_AUD]}
        for sub in azure_subjects(doc).values()
    ]
    judged(
        rsa_keys,
        WORKSPACE_ID_FORMAT,
        lambda identity: azure_trust.evaluate(credentials, identity),
        accepted=[token_run("acme", "web", "apply", AZURE_AUD)],
        refused=[
            token_run("acme", "web", "apply", AZURE_AUD, workspace_id="ws-web2"),
            token_run("acme", "web", "plan", AZURE_AUD),
        ],
    )


def test_azure_format_without_phase_needs_one_credential_per_workspace() -> None:
    doc = setup_hcl(
        "azure", "--subject-format", "org:{organization}:ws:{workspace}", "--workspace", "web"
    )
    assert azure_subjects(doc) == {"otf-acme-web": "org:acme:ws:web"}


def test_aws_exact_workspace_without_phase_matches_both_phases() -> None:
    """`*` for the phase needs StringLike even when every workspace is named exactly."""
    doc = setup_hcl("aws", "--workspace", "web")
    policy = aws_trust.load_policy(json.dumps(aws_policy_json(doc)))
    for phase in ("plan", "apply"):
        assert aws_trust.evaluate(policy, run("web", phase), IssuerURL(ISSUER)).accepted
    assert not aws_trust.evaluate(policy, run("db", "plan"), IssuerURL(ISSUER)).accepted


def test_setup_reads_the_subject_format_from_the_config_and_the_flag_wins(tmp_path: Path) -> None:
    config = tmp_path / "keysvc.toml"
    config.write_text(
        'issuer = "https://x.example.com"\n[tokens]\nsubject_format = "o:{organization}:{run_phase}"\n'
    )
    base = ("aws", "--issuer", ISSUER, "--organization", "acme", "--phase", "plan")

    def sub_values(out: str) -> list[str]:
        (policy,) = hcl.blocks(hcl.parse(out), "data", "aws_iam_policy_document").values()
        return [c for c in policy["statement"][0]["condition"] if c["variable"].endswith(":sub")][
            0
        ]["values"]

    out, _ = run_setup(*base, "--config", str(config))
    assert sub_values(out) == ["o:acme:plan"]
    assert "Subjects have the form o:{organization}:{run_phase}" in out
    result = CliRunner(env={"KEYSVC_CONFIG": str(config)}).invoke(cli, ["setup", *base])
    assert result.exit_code == 0 and sub_values(result.stdout) == ["o:acme:plan"]
    out, _ = run_setup(
        *base, "--config", str(config), "--subject-format", "p:{organization}:{run_phase}"
    )
    assert sub_values(out) == ["p:acme:plan"]
    out, _ = run_setup(*base)
    assert sub_values(out) == ["organization:acme:workspace:*:run_phase:plan"]


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
@pytest.mark.parametrize(
    ("subject_format", "message"),
    [
        ("org:{org}", "unknown placeholder {org}"),
        ("org:{organization", "expected '}'"),
        ("org:{organization!r}", "no conversion"),
        ("{}", "unknown placeholder"),
    ],
)
def test_bad_subject_format_flag_is_a_one_line_error(
    cloud: str, subject_format: str, message: str
) -> None:
    out, err = run_setup(
        cloud,
        "--issuer",
        ISSUER,
        "--organization",
        "acme",
        "--workspace",
        "web",
        "--subject-format",
        subject_format,
        expect=2,
    )
    assert out == ""
    assert err.startswith("keysvc: error: --subject-format") and err.count("\n") == 1
    assert message in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[tokens]\nsubject_format = "x:{org}"', "tokens.subject_format"),
        ("[tokens]\nsubject_format = 3", "must be a string"),
        ("tokens = 1", "must be a table"),
        ("tokens = [", "not valid TOML"),
    ],
)
def test_bad_subject_format_in_the_config_is_a_one_line_error(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "keysvc.toml"
    config.write_text(text + "\n")
    out, err = run_setup(
        "aws", "--issuer", ISSUER, "--organization", "acme", "--config", str(config), expect=2
    )
    assert out == "" and err.startswith("keysvc: error: ") and err.count("\n") == 1
    assert message in err
    missing = tmp_path / "missing.toml"
    out, err = run_setup(
        "aws", "--issuer", ISSUER, "--organization", "acme", "--config", str(missing), expect=2
    )
    assert "does not exist" in err


# --- the issuer from the service's config -----------------------------------------------------

CONFIG_ISSUER = "https://otf-keys.example.net"


def aws_provider_url(out: str) -> str:
    (provider,) = hcl.blocks(hcl.parse(out), "resource", "aws_iam_openid_connect_provider").values()
    return str(provider["url"])


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_setup_takes_the_issuer_from_the_config(tmp_path: Path, cloud: str) -> None:
    config = tmp_path / "keysvc.toml"
    # the rest of a real config (backends needing libraries and key files) is not read
    config.write_text(
        f'issuer = "{CONFIG_ISSUER}"\n[[backends]]\ntype = "pkcs11"\nlibrary = "/nonexistent.so"\n'
    )
    out, _ = run_setup(
        cloud, "--organization", "acme", "--workspace", "web", "--config", str(config)
    )
    assert CONFIG_ISSUER in out and ISSUER not in out


def test_setup_issuer_flag_wins_over_the_config_and_env_config_works(tmp_path: Path) -> None:
    config = tmp_path / "keysvc.toml"
    config.write_text(f'issuer = "{CONFIG_ISSUER}"\n')
    out, _ = run_setup("aws", "--organization", "acme", "--config", str(config))
    assert aws_provider_url(out) == CONFIG_ISSUER
    out, _ = run_setup("aws", "--organization", "acme", "--config", str(config), "--issuer", ISSUER)
    assert aws_provider_url(out) == ISSUER
    result = CliRunner(env={"KEYSVC_CONFIG": str(config)}).invoke(
        cli, ["setup", "aws", "--organization", "acme"]
    )
    assert result.exit_code == 0, result.stderr
    assert aws_provider_url(result.stdout) == CONFIG_ISSUER
    # the flag wins, so the file's value is not even judged: a bad one does not get in the way
    config.write_text('issuer = "http://otf-keys.example.net"\n')
    out, _ = run_setup("aws", "--organization", "acme", "--config", str(config), "--issuer", ISSUER)
    assert aws_provider_url(out) == ISSUER


def test_setup_without_an_issuer_is_a_one_line_error(tmp_path: Path) -> None:
    out, err = run_setup("aws", "--organization", "acme", expect=2)
    assert out == "" and err.count("\n") == 1
    assert err == "keysvc: error: no issuer: give --issuer or --config (the service's)\n"
    config = tmp_path / "keysvc.toml"
    config.write_text('[tokens]\nsubject_format = "o:{organization}:{workspace}:{run_phase}"\n')
    out, err = run_setup("aws", "--organization", "acme", "--config", str(config), expect=2)
    assert out == "" and err == f"keysvc: error: {config} has no issuer: give --issuer\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('issuer = "http://keys.example.com"', "must be an https URL"),
        ('issuer = "https://keys.example.com/"', "no query, fragment or trailing slash"),
        ('issuer = "https://keys.example.com?x=1"', "no query, fragment or trailing slash"),
        ("issuer = 443", "must be a string"),
    ],
)
def test_bad_issuer_in_the_config_is_a_one_line_error(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "keysvc.toml"
    config.write_text(text + "\n")
    out, err = run_setup("aws", "--organization", "acme", "--config", str(config), expect=2)
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"keysvc: error: issuer in {config}: ") and message in err


def test_setup_refuses_a_loopback_http_issuer_the_service_accepts(tmp_path: Path) -> None:
    """The service runs on http://127.0.0.1 in development, but no cloud fetches keys over http:
    setup's own https rule still applies to the issuer it read from the config."""
    config = tmp_path / "keysvc.toml"
    config.write_text('issuer = "http://127.0.0.1:8080"\n')
    out, err = run_setup("aws", "--organization", "acme", "--config", str(config), expect=2)
    assert out == "" and "must use https" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("cloud", "args", "message"),
    [
        ("azure", ("--subject-format", RUN_ID_FORMAT, "--workspace", "web"), "{run_id}"),
        ("aws", ("--subject-format", "ws:{workspace}:{run_phase}"), "no {organization}"),
        (
            "azure",
            ("--subject-format", "ws:{workspace}:{run_phase}", "--workspace", "w"),
            "no {organization}",
        ),
        (
            "aws",
            ("--subject-format", "o:{organization}:{run_phase}", "--workspace", "web"),
            "no {workspace}",
        ),
        (
            "aws",
            ("--subject-format", "o:{organization}:{workspace}", "--phase", "plan"),
            "no {run_phase}",
        ),
        ("aws", ("--subject-format", "{organization}-{workspace}:{run_phase}"), "separate them"),
        ("gcp", ("--subject-format", "{organization}-{workspace}:{run_phase}"), "separate them"),
        (
            "azure",
            ("--subject-format", "{organization}.{workspace}", "--workspace", "w"),
            "separate them",
        ),
        ("aws", ("--subject-format", "o:{organization}:*:{workspace}"), "literal '*'"),
        ("aws", ("--subject-format", "o:{organization}:${{x}}:{workspace}"), "policy variable"),
        ("aws", ("--workspace-id", "ws-1"), "exactly one --workspace"),
        ("aws", ("--workspace-id", "ws-1", "--workspace", "a", "--workspace", "b"), "exactly one"),
        ("gcp", ("--workspace-id", "ws-1", "--workspace", "a*"), "without wildcards"),
        ("azure", ("--workspace-id", "ws:1", "--workspace", "a"), "workspace id"),
    ],
)
def test_formats_a_cloud_cannot_match_safely_are_refused(
    cloud: str, args: tuple[str, ...], message: str
) -> None:
    out, err = run_setup(cloud, "--issuer", ISSUER, "--organization", "acme", *args, expect=2)
    assert out == "" and err.startswith("keysvc: error: ") and err.count("\n") == 1
    assert message in err


def test_gcp_accepts_the_formats_aws_and_azure_refuse() -> None:
    """GCP's condition reads the terraform_* claims, so sub's shape does not weaken it."""
    for fmt in ("ws:{workspace}:{run_phase}", RUN_ID_FORMAT):
        condition = gcp_provider(setup_hcl("gcp", "--subject-format", fmt, "--workspace", "web"))[
            "attribute_condition"
        ]
        assert condition == (
            'assertion.terraform_organization_name == "acme" && '
            'assertion.terraform_workspace_name == "web"'
        )


def test_workspace_id_unused_by_the_format_is_a_warning() -> None:
    out, err = run_setup(
        "aws",
        "--issuer",
        ISSUER,
        "--organization",
        "acme",
        "--workspace",
        "web",
        "--workspace-id",
        "ws-1",
    )
    assert out and err.startswith("keysvc: warning: the subject format has no {workspace_id}")


@pytest.mark.parametrize(
    "args",
    [
        ("--organization", "acme\n"),
        ("--organization", "acme", "--workspace", "web\n"),
        ("--organization", "acme", "--name", "otf_acme\n"),
    ],
)
def test_a_trailing_newline_is_not_a_name(args: tuple[str, ...]) -> None:
    """`re.match` with `$` accepts "acme\n": a sub with a newline and broken HCL."""
    out, err = run_setup("aws", "--issuer", ISSUER, *args, expect=2)
    assert out == "" and err.startswith("keysvc: error: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    "issuer",
    ["https://otf.example.com?", "https://otf.example.com#", "https://otf.example.com ",
     "https://u:p@otf.example.com", "https://otf.example.com:99999", "HTTPS://otf.example.com"],
)
def test_issuer_flag_gets_the_services_rule(issuer: str) -> None:
    """--issuer is checked as the service checks its own issuer (issuer_url.check_issuer)."""
    out, err = run_setup("aws", "--issuer", issuer, "--organization", "acme", expect=2)
    assert out == "" and err.startswith("keysvc: error: issuer ") and err.count("\n") == 1
    assert "u:p" not in err
