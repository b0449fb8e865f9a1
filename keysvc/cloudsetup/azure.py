"""Azure: an Entra application, its service principal and one federated identity credential per
(workspace, phase) pair.

Entra compares `issuer` and `subject` exactly (case-sensitive, no wildcards), so every run phase
that should sign in needs its own credential, and an application holds at most 20 of them.

The subjects follow the service's `tokens.subject_format`. A format with `{run_id}` gives every
run a new subject, which no fixed credential can match: refused. One with `{workspace_id}` needs
the id (`--workspace-id`, for a single workspace): an id is not a pattern Entra could match
either. A format without `{run_phase}` (or `{workspace}`) needs one credential per workspace
(or per phase) only.
"""

from __future__ import annotations

import hashlib

from keysvc import run_identity
from keysvc.clouds import (
    AZURE_MAX_FEDERATED_CREDENTIALS,
    AZURE_MAX_SUBJECT_CHARS,
    DEFAULT_AUDIENCE,
    Cloud,
)
from keysvc.cloudsetup.request import (
    SetupError,
    SetupRequest,
    SetupResult,
    header,
    required_providers,
    variables_output,
)
from keysvc.cloudsetup.terraform import Block, Document, Ref, Template

AZUREAD_PROVIDER_VERSION = "~> 3.0"
"""3.x names the arguments `client_id` (service principal) and `application_id` (credential)."""
_CREDENTIAL_NAME_MAX = 120


def credential_name(organization: str, workspace: str | None, phase: str | None) -> str:
    """A readable, unique credential name of at most 120 characters (a workspace or phase the
    subject does not tell apart is left out)."""
    name = "-".join(part for part in ("otf", organization, workspace, phase) if part)
    if len(name) <= _CREDENTIAL_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name[: _CREDENTIAL_NAME_MAX - 13]}-{digest}"


def federated_subjects(request: SetupRequest) -> dict[str, str]:
    """Credential name → exact subject, one per (workspace, phase) the subject tells apart."""
    fields = request.subject_fields
    if "run_id" in fields:
        raise SetupError(
            f"subject format {request.subject_format!r} has {{run_id}}: every run gets a new"
            " subject and Azure compares subjects exactly, so no federated credential can admit"
            " the runs; Azure needs a subject_format without {run_id}"
        )
    if "workspace_id" in fields and request.workspace_id is None:
        raise SetupError(
            f"subject format {request.subject_format!r} has {{workspace_id}}, which Azure compares"
            " exactly: give the workspace's id with --workspace-id (and that one --workspace)"
        )
    request.check_subject_only_trust("Azure")
    if fields & {"workspace", "workspace_id"}:
        if not request.workspaces:
            raise SetupError(
                "Azure matches subjects exactly: name each workspace with --workspace (repeatable)"
            )
        wildcards = [w for w in request.workspaces if run_identity.is_wildcard(w)]
        if wildcards:
            raise SetupError(
                f"Azure does not accept wildcards in subjects ({wildcards[0]!r}):"
                " name each workspace with --workspace"
            )
    workspaces: tuple[str | None, ...] = tuple(dict.fromkeys(request.workspaces)) or (None,)
    phases: tuple[str | None, ...] = request.phases if "run_phase" in fields else (None,)
    subjects: dict[str, str] = {}
    for workspace in workspaces:
        for phase in phases:
            sub = request.subject(workspace or run_identity.ANY, phase or run_identity.ANY)
            if len(sub) > AZURE_MAX_SUBJECT_CHARS:
                raise SetupError(
                    f"subject {sub!r} is over Azure's {AZURE_MAX_SUBJECT_CHARS} characters"
                )
            subjects[credential_name(request.organization, workspace, phase)] = sub
    return subjects


def generate(request: SetupRequest, *, display_name: str | None = None) -> SetupResult:
    subjects = federated_subjects(request)
    warnings = request.subject_warnings("Azure")
    if len(subjects) > AZURE_MAX_FEDERATED_CREDENTIALS:
        warnings.append(
            f"{len(subjects)} federated credentials: Azure allows at most"
            f" {AZURE_MAX_FEDERATED_CREDENTIALS} per application; split the workspaces over"
            " several applications (--name, --display-name)"
        )
    name = request.name
    audience = request.audience or DEFAULT_AUDIENCE[Cloud.AZURE]
    doc = Document(header=header("Azure", request))
    doc.add(required_providers(azuread=("hashicorp/azuread", AZUREAD_PROVIDER_VERSION)))
    doc.add(
        Block("resource", ("azuread_application", name)).attr(
            "display_name", display_name or f"otf-{request.organization}"
        )
    )
    doc.add(
        Block(
            "resource",
            ("azuread_service_principal", name),
            comment=(
                "Grant this service principal roles (azurerm_role_assignment with"
                f" principal_id = azuread_service_principal.{name}.object_id)."
            ),
        ).attr("client_id", Ref(f"azuread_application.{name}.client_id"))
    )
    locals_name = f"{name}_federated_subjects"
    doc.add(
        Block(
            "locals",
            comment=(
                "Credential name => exact token subject: one per (workspace, phase) the subject"
                " tells apart."
            ),
        ).attr(locals_name, dict(subjects))
    )
    doc.add(
        Block(
            "resource",
            ("azuread_application_federated_identity_credential", name),
            comment="Entra only accepts RS256 tokens: keep an RSA key signing in keysvc.",
        )
        .attr("for_each", Ref(f"local.{locals_name}"))
        .attr("application_id", Ref(f"azuread_application.{name}.id"))
        .attr("display_name", Ref("each.key"))
        .attr("description", Template.of("OTF run ", Ref("each.value")))
        .attr("audiences", [audience])
        .attr("issuer", request.issuer.url)
        .attr("subject", Ref("each.value"))
    )
    doc.add(
        variables_output(
            request,
            "AZURE",
            "client_id",
            Ref(f"azuread_application.{name}.client_id"),
            {"TFC_AZURE_RUN_CLIENT_ID": "<this output>"},
            also=", with ARM_TENANT_ID and ARM_SUBSCRIPTION_ID",
        )
    )
    return SetupResult(doc, warnings)
