"""GCP: a workload identity pool, an OIDC provider for the issuer and a service account binding.

The provider maps `google.subject` to the token's `sub` and every `terraform_*` claim to an
attribute, and its attribute condition admits only the organization (and the workspaces and phase
asked for), so a token for another organization signed by the same keysvc is refused at the token
exchange, before any IAM binding is consulted. The service-account binding then names the
narrowest principal set the request allows.

The condition reads the `terraform_*` claims, never `sub`, so it is right whatever the service's
`tokens.subject_format` (and needs nothing for `{run_id}` or `{workspace_id}`): those claims are
minted from the same checked names as `sub`, one claim per field, with nothing to split. Only
the `principal://…/subject/<sub>` binding spells a subject, and it is used only when the format
makes that subject exactly one workspace's phase; otherwise the binding names the workspace by
its `terraform_full_workspace` attribute and the condition keeps the phase.
"""

from __future__ import annotations

import json
import re
from typing import Any

from keysvc import run_identity
from keysvc.clouds import (
    ACCEPTED_ALGORITHMS,
    GCP_MAX_AUDIENCE_CHARS,
    GCP_MAX_CONDITION_CHARS,
    GCP_MAX_SUBJECT_BYTES,
    GCP_UPLOADED_JWK_FIELDS,
    PRIVATE_JWK_FIELDS,
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

GOOGLE_PROVIDER_VERSION = ">= 6.0"
TERRAFORM_CLAIMS = (
    "terraform_organization_name",
    "terraform_workspace_name",
    "terraform_workspace_id",
    "terraform_full_workspace",
    "terraform_run_id",
    "terraform_run_phase",
)
ATTRIBUTE_MAPPING: dict[str, str] = {
    "google.subject": "assertion.sub",
    **{f"attribute.{claim}": f"assertion.{claim}" for claim in TERRAFORM_CLAIMS},
}
"""The mapping `keysvc setup gcp` writes; `keysvc doctor --gcp-condition` evaluates with it."""

_POOL_ID = re.compile(r"^[a-z0-9-]{4,32}$")
_ACCOUNT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")


def cel_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _glob_to_re2(pattern: str) -> str:
    out = []
    for ch in pattern:
        out.append({"*": ".*", "?": ".", ".": "\\."}.get(ch, ch))
    return "^" + "".join(out) + "$"


def _workspace_condition(pattern: str) -> str:
    claim = "assertion.terraform_workspace_name"
    if not run_identity.is_wildcard(pattern):
        return f"{claim} == {cel_string(pattern)}"
    head = pattern[:-1]
    if pattern.endswith("*") and not run_identity.is_wildcard(head):
        return f"{claim}.startsWith({cel_string(head)})"
    return f"{claim}.matches({cel_string(_glob_to_re2(pattern))})"


def attribute_condition(request: SetupRequest) -> str:
    """CEL admitting exactly the runs of the request (a token's claims are its `assertion`)."""
    parts = [f"assertion.terraform_organization_name == {cel_string(request.organization)}"]
    if request.workspaces:
        alternatives = [_workspace_condition(w) for w in request.workspaces]
        joined = " || ".join(alternatives)
        parts.append(f"({joined})" if len(alternatives) > 1 else joined)
    if request.workspace_id:
        parts.append(f"assertion.terraform_workspace_id == {cel_string(request.workspace_id)}")
    if request.phase:
        parts.append(f"assertion.terraform_run_phase == {cel_string(request.phase)}")
    return " && ".join(parts)


def exact_subject(request: SetupRequest, workspace: str, phase: str) -> str | None:
    """The one `sub` of this workspace's phase, when the format makes it exactly that: it
    names the organization, the workspace (by name, or by the id given) and the phase, and
    nothing setup cannot know; else None."""
    fields = request.subject_fields
    known = {"organization", "workspace", "run_phase"}
    if request.workspace_id is not None:
        known.add("workspace_id")
    names_workspace = "workspace" in fields or (
        "workspace_id" in fields and request.workspace_id is not None
    )
    if (
        not fields <= known
        or not {"organization", "run_phase"} <= fields
        or not names_workspace
    ):
        return None
    return request.subject(workspace, phase)


def _long_subject_warnings(request: SetupRequest) -> list[str]:
    """google.subject is limited in bytes: warn for each named workspace whose subject is over
    it (when the format leaves nothing unknown; a glob's length is not known either)."""
    fields = request.subject_fields
    if "run_id" in fields or ("workspace_id" in fields and request.workspace_id is None):
        return []
    subjects = {
        request.subject(workspace, phase): None
        for workspace in request.workspaces
        if not run_identity.is_wildcard(workspace)
        for phase in request.phases
    }
    return [
        f"subject {sub!r} is over {GCP_MAX_SUBJECT_BYTES} bytes: GCP refuses a google.subject"
        " that long"
        for sub in subjects
        if len(sub.encode()) > GCP_MAX_SUBJECT_BYTES
    ]


def _principal(request: SetupRequest, pool: Ref) -> Template:
    """The narrowest principal (set) the binding can name without wildcards."""
    base = ("principal://iam.googleapis.com/", pool)
    exact = [w for w in request.workspaces if not run_identity.is_wildcard(w)]
    if len(request.workspaces) == 1 and exact:
        workspace = exact[0]
        sub = exact_subject(request, workspace, request.phase) if request.phase else None
        if sub is not None:
            return Template.of(*base, f"/subject/{sub}")
        full = run_identity.full_workspace(request.organization, workspace)
        return Template.of(
            "principalSet://iam.googleapis.com/",
            pool,
            f"/attribute.terraform_full_workspace/{full}",
        )
    return Template.of(
        "principalSet://iam.googleapis.com/",
        pool,
        f"/attribute.terraform_organization_name/{request.organization}",
    )


def uploadable_jwks(document: Any) -> tuple[str, list[str]]:
    """A JWKS reduced to what GCP accepts in `jwks_json`, compact; plus warnings.

    A private key member anywhere refuses the whole document, and it is never echoed back."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise SetupError('the JWKS must be a JSON object with a "keys" list')
    if not document["keys"]:
        raise SetupError("the JWKS holds no keys")
    warnings: list[str] = []
    keys = []
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kty"), str):
            raise SetupError(f"JWKS key {index} is not a JWK object with a kty")
        if PRIVATE_JWK_FIELDS & jwk.keys():
            raise SetupError(
                f"JWKS key {index} contains private key material; give the public JWKS"
                " (keysvc jwks --for gcp)"
            )
        if not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
            raise SetupError(f"JWKS key {index} has no kid: GCP needs one in every key")
        dropped = sorted(set(jwk) - set(GCP_UPLOADED_JWK_FIELDS))
        if dropped:
            warnings.append(
                f"JWKS key {jwk['kid']}: left out {', '.join(dropped)} (GCP refuses them)"
            )
        alg = jwk.get("alg")
        if alg is not None and alg not in ACCEPTED_ALGORITHMS[Cloud.GCP]:
            warnings.append(
                f"JWKS key {jwk['kid']} is {alg}: GCP accepts only RS256 and ES256 tokens"
            )
        keys.append({k: jwk[k] for k in GCP_UPLOADED_JWK_FIELDS if k in jwk})
    warnings.append(
        "jwks_json is a snapshot: after every key rotation, re-run setup and apply before the"
        " new key's publish lead ends, or GCP refuses tokens it signs"
    )
    return json.dumps({"keys": keys}, separators=(",", ":")), warnings


def generate(
    request: SetupRequest,
    *,
    pool_id: str = "keysvc",
    provider_id: str = "keysvc-oidc",
    service_account_id: str = "otf-terraform-runs",
    project: str | None = None,
    jwks: Any = None,
) -> SetupResult:
    for label, value in (("pool id", pool_id), ("provider id", provider_id)):
        if not _POOL_ID.fullmatch(value) or value.startswith("gcp-"):
            raise SetupError(f"{label} {value!r} must be 4-32 of a-z, 0-9, '-' (not 'gcp-...')")
    if not _ACCOUNT_ID.fullmatch(service_account_id):
        raise SetupError(
            f"service account id {service_account_id!r} must be 6-30 of a-z, 0-9, '-',"
            " starting with a letter"
        )
    if request.audience and len(request.audience) > GCP_MAX_AUDIENCE_CHARS:
        raise SetupError(f"GCP accepts audiences of at most {GCP_MAX_AUDIENCE_CHARS} characters")
    condition = attribute_condition(request)
    if len(condition) > GCP_MAX_CONDITION_CHARS:
        raise SetupError(
            f"the attribute condition would be {len(condition)} characters; GCP allows"
            f" {GCP_MAX_CONDITION_CHARS}: name fewer workspaces or use a glob"
        )
    warnings = _long_subject_warnings(request)
    name = request.name
    pool = Ref(f"google_iam_workload_identity_pool.{name}.name")
    doc = Document(header=header("GCP", request))
    doc.add(required_providers(google=("hashicorp/google", GOOGLE_PROVIDER_VERSION)))

    def with_project(block: Block) -> Block:
        return block.attr("project", project) if project else block

    doc.add(
        with_project(Block("resource", ("google_iam_workload_identity_pool", name)))
        .attr("workload_identity_pool_id", pool_id)
        .attr("display_name", "keysvc (OTF)")
        .attr("description", f"Terraform runs with tokens signed by {request.issuer.url}")
    )
    oidc = Block("oidc").attr("issuer_uri", request.issuer.url)
    if request.audience:
        oidc.attr("allowed_audiences", [request.audience])
    if jwks is not None:
        jwks_json, jwks_warnings = uploadable_jwks(jwks)
        warnings.extend(jwks_warnings)
        oidc.attr("jwks_json", jwks_json)
    doc.add(
        with_project(
            Block(
                "resource",
                ("google_iam_workload_identity_pool_provider", name),
                comment=(
                    "The condition refuses every token not for the organization (and workspaces"
                    " and phase) above.\n"
                    + (
                        ""
                        if request.audience
                        else "Without allowed_audiences the token's aud must be this provider's"
                        " name, which is OTF's default GCP audience.\n"
                    )
                ).rstrip(),
            )
        )
        .attr(
            "workload_identity_pool_id",
            Ref(f"google_iam_workload_identity_pool.{name}.workload_identity_pool_id"),
        )
        .attr("workload_identity_pool_provider_id", provider_id)
        .attr("display_name", "keysvc OIDC")
        .attr("attribute_mapping", dict(ATTRIBUTE_MAPPING))
        .attr("attribute_condition", condition)
        .block(oidc)
    )
    doc.add(
        with_project(
            Block(
                "resource",
                ("google_service_account", name),
                comment="Grant this service account the roles the runs need.",
            )
        )
        .attr("account_id", service_account_id)
        .attr("display_name", f"OTF runs of {request.organization}")
    )
    doc.add(
        Block("resource", ("google_service_account_iam_member", f"{name}_workload_identity"))
        .attr("service_account_id", Ref(f"google_service_account.{name}.name"))
        .attr("role", "roles/iam.workloadIdentityUser")
        .attr("member", _principal(request, pool))
    )
    doc.add(
        variables_output(
            request,
            "GCP",
            "workload_provider_name",
            Ref(f"google_iam_workload_identity_pool_provider.{name}.name"),
            {
                "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "<output service_account_email>",
                "TFC_GCP_WORKLOAD_PROVIDER_NAME": "<this output>",
            },
        )
    )
    doc.add(
        Block("output", ("service_account_email",)).attr(
            "value", Ref(f"google_service_account.{name}.email")
        )
    )
    return SetupResult(doc, warnings)
