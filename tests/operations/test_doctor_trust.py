"""`keysvc doctor --aws-trust-policy / --azure-credential / --gcp-condition`: would a run's token
be accepted, and why not."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from keysvc import run_identity
from keysvc.cli import cli
from keysvc.config import DEFAULT_SUBJECT_FORMAT, TokensConfig
from keysvc.doctor import aws_trust, azure_trust, gcp_trust
from keysvc.doctor.verdict import TrustInputError
from keysvc.issuer_url import IssuerURL
from keysvc.run_identity import Run, RunIdentity
from keysvc.tokens import TokenIssuer, TokenRequest

ISSUER = "https://keys.example.com"
HOST = "keys.example.com"
PROVIDER = f"arn:aws:iam::123456789012:oidc-provider/{HOST}"
WEB_APPLY = RunIdentity(ISSUER, "aws.workload.identity", Run("acme", "web", "ws-1", "run-1", "apply"))


def statement(**conditions: dict[str, Any]) -> dict[str, Any]:
    return {
        "Sid": "OTF",
        "Effect": "Allow",
        "Principal": {"Federated": PROVIDER},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": conditions,
    }


def aws(*statements: dict[str, Any], run: RunIdentity = WEB_APPLY) -> Any:
    policy = aws_trust.load_policy(
        json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
    )
    return aws_trust.evaluate(policy, run, IssuerURL(ISSUER))


def test_aws_string_like_accepts_and_explains_a_mismatch() -> None:
    allow = statement(
        StringEquals={f"{HOST}:aud": "aws.workload.identity"},
        StringLike={f"{HOST}:sub": "organization:acme:workspace:*:run_phase:apply"},
    )
    assert aws(allow).accepted
    plan = replace(WEB_APPLY, run=replace(WEB_APPLY.run, run_phase="plan"))
    verdict = aws(allow, run=plan)
    assert not verdict.accepted
    assert (
        "StringLike" in verdict.reasons[0]
        and "organization:acme:workspace:web:run_phase:plan" in verdict.reasons[0]
    )


def test_aws_hcp_style_project_subject_is_refused() -> None:
    hcp = statement(
        StringLike={f"{HOST}:sub": "organization:acme:project:*:workspace:web:run_phase:*"}
    )
    assert not aws(hcp).accepted


def test_aws_audience_mismatch_is_refused() -> None:
    verdict = aws(statement(StringEquals={f"{HOST}:aud": ["sts.amazonaws.com"]}))
    assert not verdict.accepted and "aws.workload.identity" in verdict.reasons[0]


def test_aws_condition_keys_for_another_issuer_are_explained() -> None:
    verdict = aws(statement(StringEquals={"other.example.com:aud": "aws.workload.identity"}))
    assert not verdict.accepted and "has no other.example.com:aud" in verdict.reasons[0]


def test_aws_explicit_deny_wins() -> None:
    deny = dict(
        statement(StringLike={f"{HOST}:sub": "*:workspace:web:*"}), Effect="Deny", Sid="NoWeb"
    )
    verdict = aws(statement(), deny)
    assert not verdict.accepted and verdict.reasons == ["statement 1 (NoWeb) denies it explicitly"]


def test_aws_principal_and_action_must_match() -> None:
    wrong_provider = dict(
        statement(), Principal={"Federated": "arn:aws:iam::1:oidc-provider/other.example.com"}
    )
    wrong_action = dict(statement(), Action=["sts:AssumeRole"])
    verdict = aws(wrong_provider, wrong_action)
    assert not verdict.accepted
    assert "not the OIDC provider for keys.example.com" in verdict.reasons[0]
    assert "does not include sts:AssumeRoleWithWebIdentity" in verdict.reasons[1]
    assert aws(dict(statement(), Action="sts:AssumeRole*")).accepted


def test_aws_operator_variants() -> None:
    sub = f"{HOST}:sub"
    assert aws(
        statement(StringEqualsIgnoreCase={sub: "ORGANIZATION:ACME:WORKSPACE:WEB:RUN_PHASE:APPLY"})
    ).accepted
    assert not aws(statement(StringNotLike={sub: "*:run_phase:apply"})).accepted
    assert aws(
        statement(StringNotEquals={sub: "organization:acme:workspace:web:run_phase:plan"})
    ).accepted
    # a key the token does not carry: IfExists and ForAllValues hold, a plain test does not
    assert aws(statement(StringEqualsIfExists={f"{HOST}:amr": "x"})).accepted
    assert aws(statement(**{"ForAllValues:StringEquals": {f"{HOST}:amr": "x"}})).accepted
    assert not aws(statement(StringEquals={f"{HOST}:amr": "x"})).accepted
    assert aws(statement(Null={f"{HOST}:amr": "true"})).accepted
    assert not aws(statement(Null={sub: "true"})).accepted
    # StringLike's ? is one character; brackets are literal, unlike shell globs
    assert aws(
        statement(StringLike={sub: "organization:acme:workspace:we?:run_phase:apply"})
    ).accepted
    assert not aws(
        statement(StringLike={sub: "organization:acme:workspace:[w]eb:run_phase:apply"})
    ).accepted


def test_aws_request_keys_are_noted_not_guessed() -> None:
    verdict = aws(
        statement(
            IpAddress={"aws:SourceIp": "10.0.0.0/8"}, StringEquals={"sts:RoleSessionName": "x"}
        )
    )
    assert verdict.accepted
    assert any("IpAddress" in n for n in verdict.notes)
    assert any("sts:RoleSessionName" in n for n in verdict.notes)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda p: {"Role": {"RoleName": "r", "AssumeRolePolicyDocument": p}},
        lambda p: json.dumps(p),
        lambda p: quote(json.dumps(p)),
        lambda p: dict(p, Statement=p["Statement"][0]),
    ],
)
def test_aws_policy_formats(wrap: Any) -> None:
    policy = {"Version": "2012-10-17", "Statement": [statement()]}
    loaded = aws_trust.load_policy(json.dumps(wrap(policy)))
    assert aws_trust.evaluate(loaded, WEB_APPLY, IssuerURL(ISSUER)).accepted


@pytest.mark.parametrize("text", ["not json", "{}", '{"Statement": 3}', '{"Statement": [1]}'])
def test_aws_unreadable_policies(text: str) -> None:
    with pytest.raises(TrustInputError):
        aws_trust.load_policy(text)


# --- Azure ------------------------------------------------------------------------------------

AZURE_RUN = replace(WEB_APPLY, audience="api://AzureADTokenExchange")


def credential(**changes: Any) -> dict[str, Any]:
    base = {
        "name": "web-apply",
        "issuer": ISSUER,
        "subject": "organization:acme:workspace:web:run_phase:apply",
        "audiences": ["api://AzureADTokenExchange"],
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "hint"),
    [
        ({"issuer": ISSUER + "/"}, "trailing slash"),
        ({"issuer": ISSUER.upper().replace("HTTPS", "https")}, "letter case"),
        ({"subject": "organization:acme:workspace:WEB:run_phase:apply"}, "letter case"),
        ({"subject": "organization:acme:workspace:*:run_phase:apply"}, "no wildcards"),
        (
            {"subject": "organization:acme:project:p:workspace:web:run_phase:apply"},
            "project segment",
        ),
        ({"audiences": ["api://other"]}, "do not include"),
        (
            {"subject": None, "claimsMatchingExpression": {"value": "claims['sub'] matches 'x*'"}},
            "expression",
        ),
    ],
)
def test_azure_mismatches_are_explained(changes: dict[str, Any], hint: str) -> None:
    verdict = azure_trust.evaluate([credential(**changes)], AZURE_RUN)
    assert not verdict.accepted and hint in verdict.reasons[0]


def test_azure_any_matching_credential_accepts() -> None:
    other = credential(name="web-plan", subject="organization:acme:workspace:web:run_phase:plan")
    for text in (
        json.dumps([other, credential()]),
        json.dumps({"value": [other, credential()]}),
        json.dumps(credential()),
    ):
        verdict = azure_trust.evaluate(azure_trust.load_credentials(text), AZURE_RUN)
        assert verdict.accepted and "web-apply" in verdict.reasons[0]


# --- GCP --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "accepted"),
    [
        ('assertion.terraform_organization_name == "acme"', True),
        ('attribute.terraform_workspace_name in ["web", "db"]', True),
        ('google.subject.endsWith(":run_phase:apply")', True),
        ('assertion.sub.startsWith("organization:acme:project:")', False),
        ('assertion.terraform_run_phase == "plan"', False),
    ],
)
def test_gcp_conditions(condition: str, accepted: bool) -> None:
    assert gcp_trust.evaluate(condition, AZURE_RUN).accepted is accepted


def test_gcp_condition_on_a_claim_the_token_lacks_is_refused() -> None:
    verdict = gcp_trust.evaluate('assertion.repository == "x"', AZURE_RUN)
    assert not verdict.accepted
    assert verdict.reasons[0] == (
        "the condition fails to evaluate: no such member in mapping: 'repository' (the token"
        " carries no such claim or attribute); GCP refuses the token"
    )
    for condition, words in (
        ("assertion.sub + 1 == 2", "an operator or function is applied to values of the wrong type"),
        ("1 / 0 == 1", "division by zero"),
    ):
        (reason,) = gcp_trust.evaluate(condition, AZURE_RUN).reasons
        assert words in reason and "<class" not in reason and "(" not in reason.split(":")[1]


def test_gcp_limits() -> None:
    long_condition = " || ".join(['assertion.terraform_workspace_name == "web"'] * 100)
    assert not gcp_trust.evaluate(long_condition, AZURE_RUN).accepted
    long_workspace = RunIdentity(ISSUER, "aud", replace(WEB_APPLY.run, workspace="w" * 100))
    verdict = gcp_trust.evaluate("true", long_workspace)
    assert not verdict.accepted and "127 bytes" in verdict.reasons[0]


@pytest.mark.parametrize("expression", ["assertion.sub ==", "", "1 +"])
def test_gcp_invalid_cel_is_bad_input(expression: str) -> None:
    with pytest.raises(TrustInputError):
        gcp_trust.evaluate(expression, AZURE_RUN)


# --- the CLI ----------------------------------------------------------------------------------


def doctor(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["doctor", "--issuer", ISSUER, "--no-fetch", *args])
    return result.exit_code, result.stdout, result.stderr


RUN_ARGS = ("--organization", "acme", "--workspace", "web", "--phase", "apply")


def test_cli_reports_each_cloud_verdict(tmp_path: Path) -> None:
    policy = tmp_path / "trust.json"
    policy.write_text(
        json.dumps({"Statement": [statement(StringLike={f"{HOST}:sub": "*:workspace:web:*"})]})
    )
    creds = tmp_path / "fic.json"
    creds.write_text(
        json.dumps([credential(subject="organization:acme:workspace:web:run_phase:plan")])
    )
    code, out, _ = doctor(
        *RUN_ARGS,
        "--aws-trust-policy",
        str(policy),
        "--azure-credential",
        str(creds),
        "--gcp-condition",
        'assertion.terraform_organization_name == "acme"',
        "--json",
    )
    assert code == 1
    findings = {f["check"]: f for f in json.loads(out)["findings"]}
    assert findings["trust.aws"]["status"] == "ok"
    assert findings["trust.gcp"]["status"] == "ok"
    assert findings["trust.azure"]["status"] == "fail"
    assert "run_phase:plan" in findings["trust.azure"]["message"]
    assert any(d.startswith("note: STS also requires") for d in findings["trust.aws"]["details"])


def test_cli_human_output_gives_the_reasons(tmp_path: Path) -> None:
    code, out, _ = doctor(*RUN_ARGS, "--gcp-condition", 'assertion.terraform_run_phase == "plan"')
    assert code == 1
    assert "FAIL  trust.gcp  GCP would refuse the token: the condition is false" in out
    assert "- note: GCP also checks the token's aud" in out


def test_cli_audience_option_applies(tmp_path: Path) -> None:
    policy = tmp_path / "trust.json"
    policy.write_text(
        json.dumps({"Statement": [statement(StringEquals={f"{HOST}:aud": "sts.amazonaws.com"})]})
    )
    assert doctor(*RUN_ARGS, "--aws-trust-policy", str(policy))[0] == 1
    assert (
        doctor(*RUN_ARGS, "--aws-trust-policy", str(policy), "--audience", "sts.amazonaws.com")[0]
        == 0
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--gcp-condition", "true"), "--organization, --workspace, --phase"),
        (
            (
                "--organization",
                "acme",
                "--workspace",
                "web:x",
                "--phase",
                "plan",
                "--gcp-condition",
                "true",
            ),
            "workspace",
        ),
        ((*RUN_ARGS, "--gcp-condition", "assertion.sub =="), "not valid CEL"),
        ((*RUN_ARGS, "--aws-trust-policy", "/nonexistent.json"), "No such file"),
        ((*RUN_ARGS, "--azure-credential", "/dev/null"), "not JSON"),
        ((), "nothing to check"),
    ],
)
def test_cli_bad_input_exits_2(args: tuple[str, ...], message: str) -> None:
    code, out, err = doctor(*args)
    assert code == 2 and out == "" and message in err and err.startswith("keysvc: error:")


# --- the service's subject format -------------------------------------------------------------

CUSTOM_FORMAT = "repo:{organization}/{workspace}:run:{run_id}:phase:{run_phase}"


def test_run_identity_spells_sub_and_claims_as_the_token_minting_does() -> None:
    """One definition: doctor's RunIdentity, setup's subject() and TokenIssuer.run_claims."""
    for fmt in (DEFAULT_SUBJECT_FORMAT, CUSTOM_FORMAT, "org:{organization}:ws:{workspace_id}"):
        identity = RunIdentity(ISSUER, "aud", Run("acme", "web", "ws-1", "run-2", "plan"), fmt)
        issuer = TokenIssuer(None, ISSUER, TokensConfig(subject_format=fmt))  # type: ignore[arg-type]
        context = TokenRequest(
            organization="acme",
            workspace="web",
            workspace_id="ws-1",
            run_id="run-2",
            run_phase="plan",
            audience="aud",
        )
        assert identity.claims() == {"iss": ISSUER, **issuer.run_claims(context)}
        assert identity.subject == identity.claims()["sub"]
        assert identity.subject == run_identity.subject(
            "acme", "web", "plan", workspace_id="ws-1", run_id="run-2", subject_format=fmt
        )
    custom = RunIdentity(ISSUER, "aud", Run("acme", "web", "ws-1", "run-2", "plan"), CUSTOM_FORMAT)
    assert custom.subject == "repo:acme/web:run:run-2:phase:plan"
    assert WEB_APPLY.subject == "organization:acme:workspace:web:run_phase:apply"


def test_unseparated_placeholders_let_names_spell_another_subject() -> None:
    fmt = "{organization}-{workspace}:{run_phase}"
    assert run_identity.unseparated_fields(fmt) == ("organization", "workspace")
    one = run_identity.subject("a-b", "c", "plan", subject_format=fmt)
    other = run_identity.subject("a", "b-c", "plan", subject_format=fmt)
    assert one == other  # the hole setup refuses to build trust on
    for separated in (DEFAULT_SUBJECT_FORMAT, CUSTOM_FORMAT, "{organization}/x.{workspace}"):
        assert run_identity.unseparated_fields(separated) is None


def custom_policy(tmp_path: Path) -> Path:
    """IAM JSON with the sub pattern `keysvc setup aws` writes for CUSTOM_FORMAT, web, apply
    (test_setup checks setup writes exactly this pattern)."""
    policy = tmp_path / "trust.json"
    sub = "repo:acme/web:run:*:phase:apply"
    policy.write_text(
        json.dumps(
            {
                "Statement": [
                    statement(
                        StringEquals={f"{HOST}:aud": "aws.workload.identity"},
                        StringLike={f"{HOST}:sub": sub},
                    )
                ]
            }
        )
    )
    return policy


def test_cli_evaluates_the_custom_subject_format(tmp_path: Path) -> None:
    policy = str(custom_policy(tmp_path))
    fmt = ("--subject-format", CUSTOM_FORMAT)
    assert doctor(*RUN_ARGS, "--aws-trust-policy", policy)[0] == 1  # the default sub: refused
    code, out, _ = doctor(*RUN_ARGS, *fmt, "--aws-trust-policy", policy, "--run-id", "run-9")
    assert code == 0, out
    other_org = ("--organization", "acme2", "--workspace", "web", "--phase", "apply")
    code, out, _ = doctor(*other_org, *fmt, "--aws-trust-policy", policy, "--json")
    assert code == 1
    (finding,) = json.loads(out)["findings"]
    assert "repo:acme2/web:run:run-keysvcdoctor:phase:apply" in finding["message"]
    plan = ("--organization", "acme", "--workspace", "web", "--phase", "plan")
    assert doctor(*plan, *fmt, "--aws-trust-policy", policy)[0] == 1


def test_cli_takes_the_format_from_the_config_and_the_flag_wins(tmp_path: Path) -> None:
    policy = str(custom_policy(tmp_path))
    config = tmp_path / "keysvc.toml"
    config.write_text(f'[tokens]\nsubject_format = "{CUSTOM_FORMAT}"\n')
    assert doctor(*RUN_ARGS, "--config", str(config), "--aws-trust-policy", policy)[0] == 0
    result = CliRunner(env={"KEYSVC_CONFIG": str(config)}).invoke(
        cli, ["doctor", "--issuer", ISSUER, "--no-fetch", *RUN_ARGS, "--aws-trust-policy", policy]
    )
    assert result.exit_code == 0, result.stdout
    flag = ("--subject-format", DEFAULT_SUBJECT_FORMAT)
    assert doctor(*RUN_ARGS, "--config", str(config), *flag, "--aws-trust-policy", policy)[0] == 1


def test_cli_takes_the_issuer_from_the_config_for_the_trust_checks(tmp_path: Path) -> None:
    """The AWS trust names the issuer's OIDC provider: the config's issuer decides the verdict."""
    policy = tmp_path / "trust.json"
    policy.write_text(json.dumps({"Statement": [statement(StringLike={f"{HOST}:sub": "*"})]}))
    config = tmp_path / "keysvc.toml"
    args = ["doctor", "--no-fetch", *RUN_ARGS, "--aws-trust-policy", str(policy), "--json"]

    config.write_text(f'issuer = "{ISSUER}"\n')
    result = CliRunner().invoke(cli, [*args, "--config", str(config)])
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)["issuer"] == ISSUER
    result = CliRunner(env={"KEYSVC_CONFIG": str(config)}).invoke(cli, args)
    assert result.exit_code == 0, result.stdout

    config.write_text('issuer = "https://other.example.com"\n')
    result = CliRunner().invoke(cli, [*args, "--config", str(config)])
    assert result.exit_code == 1, result.stdout
    assert json.loads(result.stdout)["issuer"] == "https://other.example.com"
    result = CliRunner().invoke(cli, [*args, "--config", str(config), "--issuer", ISSUER])
    assert result.exit_code == 0, result.stdout


def test_cli_without_an_issuer_exits_2(tmp_path: Path) -> None:
    args = ["doctor", "--no-fetch", *RUN_ARGS, "--gcp-condition", "true"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == "keysvc: error: no issuer: give --issuer or --config (the service's)\n"
    config = tmp_path / "keysvc.toml"
    config.write_text('[tokens]\nmax_ttl = "1h"\n')
    result = CliRunner(env={"KEYSVC_CONFIG": str(config)}).invoke(cli, args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"keysvc: error: {config} has no issuer: give --issuer\n"


def test_cli_notes_made_up_ids_and_uses_given_ones(tmp_path: Path) -> None:
    creds = tmp_path / "fic.json"
    creds.write_text(json.dumps([credential(subject="org:acme:ws:ws-42:apply")]))
    fmt = ("--subject-format", "org:{organization}:ws:{workspace_id}:{run_phase}")
    code, out, _ = doctor(*RUN_ARGS, *fmt, "--azure-credential", str(creds), "--json")
    assert code == 1
    (finding,) = json.loads(out)["findings"]
    assert "org:acme:ws:ws-keysvcdoctor:apply" in finding["message"]
    assert any("give --workspace-id" in d for d in finding["details"])
    code, out, _ = doctor(
        *RUN_ARGS, *fmt, "--workspace-id", "ws-42", "--azure-credential", str(creds)
    )
    assert code == 0, out
    assert "--workspace-id" not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--subject-format", "org:{org}"), "--subject-format 'org:{org}': unknown placeholder"),
        (("--subject-format", "org:{organization:>9}"), "no conversion or format spec"),
        (("--run-id", "run:1"), "run id"),
        (("--workspace-id", "ws/1"), "workspace id"),
    ],
)
def test_cli_bad_subject_format_or_ids_exit_2(args: tuple[str, ...], message: str) -> None:
    code, out, err = doctor(*RUN_ARGS, *args, "--gcp-condition", "true")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("keysvc: error: ") and message in err
