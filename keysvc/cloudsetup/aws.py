"""AWS: an IAM OIDC identity provider for the issuer and a role that OTF runs assume.

STS checks the token's `aud` against the provider's client ids and then the role's trust policy,
whose condition keys are named after the issuer without its scheme (`<host>:aud`, `<host>:sub`).
A subject pattern with wildcards needs `StringLike`; exact subjects use `StringEquals`.

The patterns follow the service's `tokens.subject_format`; fields setup cannot know (the run id,
the workspace id unless `--workspace-id`) become `*`, which SetupRequest.check_subject_only_trust
makes sure cannot stretch over another organization's or workspace's part of a subject.
"""

from __future__ import annotations

import re

from keysvc import run_identity
from keysvc.clouds import DEFAULT_AUDIENCE, Cloud
from keysvc.cloudsetup.request import (
    SetupError,
    SetupRequest,
    SetupResult,
    header,
    required_providers,
    variables_output,
)
from keysvc.cloudsetup.terraform import Block, Document, Ref

AWS_PROVIDER_VERSION = ">= 5.81"
"""5.81 made `thumbprint_list` optional: IAM then verifies the issuer's certificate itself."""
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")


def trust_condition_tests(patterns: list[str]) -> tuple[str, str]:
    """The (aud, sub) condition operators of the trust policy: `StringLike` as soon as one
    subject pattern has a wildcard (a name never does: setup refuses formats that write one)."""
    wildcards = any(map(run_identity.is_wildcard, patterns))
    return "StringEquals", ("StringLike" if wildcards else "StringEquals")


def subject_patterns(request: SetupRequest) -> list[str]:
    """The trust policy's `sub` values, after refusing formats IAM cannot match safely."""
    request.check_subject_only_trust("AWS")
    literal = run_identity.subject_literal(request.subject_format)
    for wildcard in "*?":
        if wildcard in literal:
            raise SetupError(
                f"subject format {request.subject_format!r} has a literal {wildcard!r}, which IAM's"
                " StringLike would read as a wildcard"
            )
    patterns = request.subject_patterns()
    if any("${" in pattern for pattern in patterns):
        raise SetupError(
            f"subject format {request.subject_format!r} writes '${{', which IAM reads as a policy"
            " variable"
        )
    return patterns


def generate(
    request: SetupRequest, *, role_name: str | None = None, existing_provider: bool = False
) -> SetupResult:
    if request.issuer.has_port:
        raise SetupError(
            f"AWS refuses an OIDC provider URL with a port ({request.issuer.url});"
            " serve the issuer on the default https port"
        )
    role_name = role_name or f"otf-{request.organization}"[:64]
    if not _ROLE_NAME.fullmatch(role_name):
        raise SetupError(f"role name {role_name!r} is not a valid IAM role name")
    patterns = subject_patterns(request)
    name = request.name
    host = request.issuer.host_and_path
    audience = request.audience or DEFAULT_AUDIENCE[Cloud.AWS]

    doc = Document(header=header("AWS", request))
    doc.add(required_providers(aws=("hashicorp/aws", AWS_PROVIDER_VERSION)))

    if existing_provider:
        doc.add(
            Block(
                "data",
                ("aws_iam_openid_connect_provider", name),
                comment=(
                    "The account already has an OIDC provider for this issuer (there can be only"
                    " one per URL).\nIts client ID list must contain the audience "
                    f"{audience!r}."
                ),
            ).attr("url", request.issuer.url)
        )
        provider_arn = Ref(f"data.aws_iam_openid_connect_provider.{name}.arn")
    else:
        doc.add(
            Block(
                "resource",
                ("aws_iam_openid_connect_provider", name),
                comment=(
                    "One provider per issuer URL and account. The client ID list holds the"
                    " audiences STS accepts."
                ),
            )
            .attr("url", request.issuer.url)
            .attr("client_id_list", [audience])
        )
        provider_arn = Ref(f"aws_iam_openid_connect_provider.{name}.arn")

    aud_test, sub_test = trust_condition_tests(patterns)
    statement = (
        Block("statement")
        .attr("sid", "OTFRuns")
        .attr("effect", "Allow")
        .attr("actions", ["sts:AssumeRoleWithWebIdentity"])
        .block(Block("principals").attr("type", "Federated").attr("identifiers", [provider_arn]))
        .block(
            Block("condition")
            .attr("test", aud_test)
            .attr("variable", f"{host}:aud")
            .attr("values", [audience])
        )
        .block(
            Block("condition")
            .attr("test", sub_test)
            .attr("variable", f"{host}:sub")
            .attr("values", patterns)
        )
    )
    doc.add(
        Block(
            "data",
            ("aws_iam_policy_document", f"{name}_trust"),
            comment=f"Who may assume the role: {request.scope_description()}.",
        ).block(statement)
    )
    doc.add(
        Block(
            "resource",
            ("aws_iam_role", name),
            comment=(
                "Attach the permissions the runs need to this role"
                " (aws_iam_role_policy_attachment)."
            ),
        )
        .attr("name", role_name)
        .attr("description", f"Terraform runs of {request.scope_description()}")
        .attr("assume_role_policy", Ref(f"data.aws_iam_policy_document.{name}_trust.json"))
    )
    doc.add(
        variables_output(
            request,
            "AWS",
            "role_arn",
            Ref(f"aws_iam_role.{name}.arn"),
            {"TFC_AWS_RUN_ROLE_ARN": "<this output>"},
        )
    )
    return SetupResult(doc, request.subject_warnings("AWS"))
