"""What the operator asks `keysvc setup` for, validated once for every cloud."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from keysvc import run_identity
from keysvc.cloudsetup.terraform import Block, Document, Ref
from keysvc.run_identity import DEFAULT_SUBJECT_FORMAT, check_subject_format
from keysvc.issuer_url import IssuerURL

_TERRAFORM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class SetupError(ValueError):
    """A request no cloud would accept; the CLI prints it on one line and exits 2."""


@dataclass(frozen=True)
class SetupRequest:
    issuer: IssuerURL
    organization: str
    workspaces: tuple[str, ...] = ()
    """Workspace names or globs; empty means every workspace of the organization."""
    phase: str | None = None
    """`plan` or `apply`; None means both."""
    audience: str | None = None
    """The token audience; None means the cloud's default (what OTF asks for by default)."""
    name: str = "keysvc"
    """The Terraform local name of the generated resources."""
    subject_format: str = DEFAULT_SUBJECT_FORMAT
    """The service's `[tokens] subject_format`: the trust must match the `sub` it mints."""
    workspace_id: str | None = None
    """The id of the one workspace named, for formats with `{workspace_id}` (and GCP's
    condition); None means unknown: `*` in an AWS pattern, refused by Azure."""

    def __post_init__(self) -> None:
        try:
            run_identity.check_name("organization", self.organization)
            for workspace in self.workspaces:
                run_identity.check_name("workspace", workspace, pattern=True)
            if self.workspace_id is not None:
                run_identity.check_name("workspace id", self.workspace_id)
        except run_identity.InvalidRunName as exc:
            raise SetupError(str(exc)) from None
        try:
            check_subject_format(self.subject_format)
        except ValueError as exc:
            raise SetupError(f"subject format: {exc}") from None
        if self.workspace_id is not None and (
            len(self.workspaces) != 1 or run_identity.is_wildcard(self.workspaces[0])
        ):
            raise SetupError(
                "--workspace-id is the id of one workspace: give exactly one --workspace,"
                " without wildcards"
            )
        if self.phase is not None and self.phase not in run_identity.PHASES:
            raise SetupError(f"phase must be plan or apply, not {self.phase!r}")
        if self.audience is not None and not self.audience.strip():
            raise SetupError("audience must not be empty")
        if not _TERRAFORM_NAME.fullmatch(self.name):
            raise SetupError(
                f"name {self.name!r} must be a Terraform identifier (letters, digits, '_')"
            )

    @property
    def workspace_patterns(self) -> tuple[str, ...]:
        return self.workspaces or ("*",)

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases named explicitly: one, or both when none was given."""
        return (self.phase,) if self.phase else run_identity.PHASES

    @property
    def subject_fields(self) -> frozenset[str]:
        return run_identity.subject_fields(self.subject_format)

    @property
    def custom_subject(self) -> bool:
        return self.subject_format != DEFAULT_SUBJECT_FORMAT

    def subject(self, workspace: str, phase: str) -> str:
        """The `sub` of `workspace`'s `phase` runs in this organization, in the service's format,
        with `*` for what setup cannot know: the run id, and the workspace id unless given.
        (A `*` workspace or phase makes it a pattern of them.)"""
        return run_identity.subject(
            self.organization,
            workspace,
            phase,
            workspace_id=self.workspace_id or run_identity.ANY,
            run_id=run_identity.ANY,
            subject_format=self.subject_format,
        )

    def subject_patterns(self) -> list[str]:
        """Subjects this trust admits, as StringLike patterns: `*` stands for any workspace or
        phase not asked for, and for what setup cannot know (the run id; the workspace id
        unless given). Formats without a field give the same pattern for every value of it."""
        phase = self.phase or run_identity.ANY
        patterns = (self.subject(workspace, phase) for workspace in self.workspace_patterns)
        return list(dict.fromkeys(patterns))

    def check_subject_only_trust(self, cloud: str) -> None:
        """Refuse a subject format with which a trust that compares only `sub` (AWS, Azure)
        would admit more runs than asked for.

        Every restriction asked for needs its placeholder in the format (without
        `{organization}`, every organization keysvc signs for shares the subjects); no two
        placeholders touch (check_subject_format refuses that). Then a run's names, being
        `[A-Za-z0-9._-]`, can fill only their own places in a subject, and `*` (standing only
        for such names) cannot reach another organization's or workspace's part of it. GCP's
        condition reads the `terraform_*` claims instead and needs none of this."""
        fields = self.subject_fields
        shown = f"subject format {self.subject_format!r}"
        if "organization" not in fields:
            raise SetupError(
                f"{shown} has no {{organization}}: {cloud} compares only sub, so the trust would"
                " admit the runs of every organization keysvc signs for"
            )
        identifies_workspace = "workspace" in fields or (
            "workspace_id" in fields and self.workspace_id is not None
        )
        if self.workspaces and not identifies_workspace:
            hint = (
                "give --workspace-id as well"
                if "workspace_id" in fields
                else "leave out --workspace to trust every workspace"
            )
            raise SetupError(
                f"{shown} has no {{workspace}}: {cloud} cannot tell the workspaces apart; {hint}"
            )
        if self.phase and "run_phase" not in fields:
            raise SetupError(
                f"{shown} has no {{run_phase}}: {cloud} cannot tell plan from apply;"
                " leave out --phase"
            )

    def subject_warnings(self, cloud: str) -> list[str]:
        """What the request asks for that the subject format does not use (harmless, but the
        operator expected it to matter)."""
        if self.workspace_id is not None and "workspace_id" not in self.subject_fields:
            return [
                f"the subject format has no {{workspace_id}}: --workspace-id is not part of the"
                f" {cloud} trust"
            ]
        return []

    def scope_description(self) -> str:
        workspaces = ", ".join(self.workspaces) if self.workspaces else "every workspace"
        if self.workspace_id:
            workspaces += f" (id {self.workspace_id})"
        phases = f"{self.phase} phase" if self.phase else "plan and apply phases"
        return f"OTF organization {self.organization}: {workspaces}; {phases}"


@dataclass
class SetupResult:
    document: Document
    warnings: list[str] = field(default_factory=list)


def required_providers(**providers: tuple[str, str]) -> Block:
    """`terraform { required_providers { name = { source, version } } }`."""
    inner = Block("required_providers")
    for name, (source, version) in providers.items():
        inner.attr(name, {"source": source, "version": version})
    return Block("terraform").block(inner)


def header(cloud: str, request: SetupRequest) -> str:
    if request.custom_subject:
        form = (
            f"Subjects have the form {request.subject_format}\n"
            "(keysvc's tokens.subject_format; the service must keep signing with it)."
        )
    else:
        form = (
            "Subjects have OTF's form organization:<org>:workspace:<ws>:run_phase:<phase>\n"
            "(HCP Terraform's examples add a project segment that OTF tokens do not carry)."
        )
    return (
        f"{cloud} trust for tokens signed by keysvc ({request.issuer.url}),\n"
        f"generated by `keysvc setup` for {request.scope_description()}.\n" + form
    )


def variables_output(
    request: SetupRequest,
    cloud: str,
    label: str,
    value: Ref,
    variables: dict[str, str],
    also: str = "",
) -> Block:
    """The output the runs need, with the workspace variables to set in its comment
    (`TFC_<CLOUD>_PROVIDER_AUTH`, the given ones, and the audience when it is not the default)."""
    lines = {f"TFC_{cloud}_PROVIDER_AUTH": "true", **variables}
    if request.audience:
        lines[f"TFC_{cloud}_WORKLOAD_IDENTITY_AUDIENCE"] = request.audience
    text = "\n".join(f"{k} = {v}" for k, v in lines.items())
    intro = f"Set in the OTF workspace (or a variable set){also}:\n"
    return Block("output", (label,), comment=intro + text).attr("value", value)
