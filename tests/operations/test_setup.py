"""`keysvc setup aws|gcp|azure`: the printed Terraform, read back with python-hcl2.

Beyond structure, each cloud's generated trust is fed to doctor's evaluator for that cloud and
must admit exactly the runs asked for: the generator and the checker agree on OTF's subject.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from keysvc.cli import cli
from keysvc.doctor import aws_trust, azure_trust, gcp_trust
from keysvc.issuer_url import IssuerURL
from keysvc.run_identity import RunIdentity

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
    return RunIdentity(ISSUER, audience, org, workspace, phase)


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
