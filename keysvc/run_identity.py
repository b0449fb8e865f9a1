"""The run a token is for, and what the token says about it: its subject and `terraform_*` claims.

`Run` is keysvc's one definition of a run phase (organization, workspace, workspace id, run id,
`PHASES`), with `NAME_RULE` for the names: what `POST /v1/tokens` takes (tokens.TokenRequest
types its fields from here), what the run side asks for (keysvc.creds), what `keysvc doctor`
evaluates a trust for (RunIdentity). This module imports nothing of keysvc, so the run side
shares it without the service.

Cloud trust configurations match these strings, so `keysvc setup` (which writes the patterns),
`keysvc doctor` (which evaluates a configuration for one run) and the token minting (tokens.py)
all spell them from the two definitions here: `subject()` for `sub`, in the operator's
`[tokens] subject_format` (by default OTF's project-less
`organization:<org>:workspace:<workspace>:run_phase:<plan|apply>`), and `run_claims()` for the
whole claim set. A tool that used the default while the service used another format would write
trust that never matches, or call a refused token accepted. The rule for a subject format
(`check_subject_format`) is here too, for the config and for the tools' `--subject-format`.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_SUBJECT_FORMAT = "organization:{organization}:workspace:{workspace}:run_phase:{run_phase}"
"""OTF's own `sub`, project-less: what `[tokens] subject_format` is unless set."""
SUBJECT_FIELDS = frozenset({"organization", "workspace", "workspace_id", "run_id", "run_phase"})
"""The placeholders a subject format may use: the run's fields."""
Phase = Literal["plan", "apply"]
PHASES: tuple[Phase, ...] = ("plan", "apply")
"""The phases of a run that get tokens (OTF's `run_phase`)."""
NAME_RULE = r"^[A-Za-z0-9._-]+$"
"""What an organization, workspace, workspace id or run id may be: letters, digits, '.', '_' and
'-', so that a `:` cannot make one run's names spell another run's `sub`. As text, for pydantic's
`pattern` (checked in pydantic-core on the token hot path)."""
NAME_PROBLEM = "must be letters, digits, '.', '_' or '-' (a ':' would forge another sub)"
"""What a name that breaks NAME_RULE is told (after its field's name)."""
NAME = re.compile(NAME_RULE)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9._*?-]+$")
"""A workspace name, or a glob of them with `*` and `?` (AWS StringLike's wildcards)."""
NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "._-")
"""What a name may hold (NAME): a character outside them is a boundary no name can cross."""
ANY = "*"
"""What setup writes for a field it cannot know (a run id): any value, in a StringLike pattern."""


class InvalidRunName(ValueError):
    """A name that OTF tokens cannot carry (keysvc refuses to sign for it)."""


def check_name(kind: str, value: str, *, pattern: bool = False) -> str:
    """Refuse names outside `[A-Za-z0-9._-]` (a `:` would forge another subject)."""
    regex = NAME_PATTERN if pattern else NAME
    if not regex.fullmatch(value):  # match() with `$` would let a trailing newline through
        allowed = "letters, digits, '.', '_', '-'" + (" and the wildcards * ?" if pattern else "")
        raise InvalidRunName(f"{kind} {value!r} may only contain {allowed}")
    return value


def is_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def subject_fields(subject_format: str) -> frozenset[str]:
    """The placeholders a (valid, see check_subject_format) subject format uses."""
    return frozenset(
        name for _, name, _, _ in string.Formatter().parse(subject_format) if name is not None
    )


def subject_literal(subject_format: str) -> str:
    """The format's own text, placeholders left out (`{{` read as `{`)."""
    return "".join(text for text, _, _, _ in string.Formatter().parse(subject_format))


def unseparated_fields(subject_format: str) -> tuple[str, str] | None:
    """Two placeholders with only name characters between them, if any.

    Names are restricted to `[A-Za-z0-9._-]` so that no name can spell a different run's
    subject; that holds only while every placeholder is bounded by a character outside that
    set. In `{organization}-{workspace}` it is not: organization `a-b` with workspace `c` and
    organization `a` with workspace `b-c` share the subject `a-b-c`, and a trust that matches
    only `sub` (AWS, Azure) admits both."""
    previous: str | None = None
    for text, name, _, _ in string.Formatter().parse(subject_format):
        if any(ch not in NAME_CHARACTERS for ch in text):
            previous = None
        if name is None:
            continue
        if previous is not None:
            return previous, name
        previous = name
    return None


def check_subject_format(value: str) -> str:
    """The rule for `tokens.subject_format`: only the run's fields, plain (no format spec or
    conversion), each bounded by a character no name may hold (see unseparated_fields):
    otherwise the service would mint one `sub` for two runs. One definition for the config and
    for the operator tools' `--subject-format`, so `keysvc setup` and `keysvc doctor` accept
    exactly the formats the service can mint.
    Raises ValueError (unbalanced braces included) with a message fit for one line."""
    for _, name, spec, conv in string.Formatter().parse(value):
        if name is None:
            continue
        if name not in SUBJECT_FIELDS:
            raise ValueError(
                f"unknown placeholder {{{name}}}; use {', '.join(sorted(SUBJECT_FIELDS))}"
            )
        if spec or conv:
            raise ValueError(f"placeholder {{{name}}} takes no conversion or format spec")
    touching = unseparated_fields(value)
    if touching:
        raise ValueError(
            f"{{{touching[0]}}} and {{{touching[1]}}} are joined by only letters, digits, '.', '_'"
            " or '-', so one run's names could spell another run's sub; separate them with a"
            " character such as ':'"
        )
    return value


def subject(
    organization: str,
    workspace: str,
    run_phase: str,
    *,
    workspace_id: str = ANY,
    run_id: str = ANY,
    subject_format: str = DEFAULT_SUBJECT_FORMAT,
) -> str:
    """The `sub` claim (or, with wildcards in the arguments, a pattern of them).

    `workspace_id` and `run_id` default to `*`, what setup writes for fields it cannot know;
    they matter only to formats that use them."""
    return subject_format.format(
        organization=organization,
        workspace=workspace,
        workspace_id=workspace_id,
        run_id=run_id,
        run_phase=run_phase,
    )


def full_workspace(organization: str, workspace: str) -> str:
    return f"organization:{organization}:workspace:{workspace}"


def run_claims(
    subject_format: str,
    organization: str,
    workspace: str,
    workspace_id: str,
    run_id: str,
    run_phase: str,
    audience: str,
) -> dict[str, Any]:
    """otfd's claims for a run, without `iss` and the time claims (all strings, `aud` too).

    The token hot path calls this once per token (TokenIssuer.run_claims), so it is one plain
    call with positional arguments building one dict: `sub` is written out here rather than
    through subject(), and `terraform_full_workspace` rather than through full_workspace(),
    each the same expression as there."""
    return {
        "sub": subject_format.format(
            organization=organization,
            workspace=workspace,
            workspace_id=workspace_id,
            run_id=run_id,
            run_phase=run_phase,
        ),
        "aud": audience,
        "terraform_organization_name": organization,
        "terraform_workspace_name": workspace,
        "terraform_workspace_id": workspace_id,
        "terraform_full_workspace": f"organization:{organization}:workspace:{workspace}",
        "terraform_run_id": run_id,
        "terraform_run_phase": run_phase,
    }


@dataclass(frozen=True, slots=True)
class Run:
    """One phase of an OTF run: the names a token carries and its `sub` is spelled from."""

    organization: str
    workspace: str
    workspace_id: str
    run_id: str
    run_phase: Phase

    def __post_init__(self) -> None:
        if self.run_phase not in PHASES:
            raise ValueError(f"run_phase must be plan or apply, not {self.run_phase!r}")

    def subject(self, subject_format: str = DEFAULT_SUBJECT_FORMAT) -> str:
        return subject(
            self.organization,
            self.workspace,
            self.run_phase,
            workspace_id=self.workspace_id,
            run_id=self.run_id,
            subject_format=subject_format,
        )

    def claims(self, audience: str, subject_format: str = DEFAULT_SUBJECT_FORMAT) -> dict[str, Any]:
        """otfd's claims for this run (run_claims)."""
        return run_claims(
            subject_format,
            self.organization,
            self.workspace,
            self.workspace_id,
            self.run_id,
            self.run_phase,
            audience,
        )

    def token_request(self, audience: str) -> dict[str, str]:
        """The body of `POST /v1/tokens` for one audience."""
        return {
            "organization": self.organization,
            "workspace": self.workspace,
            "workspace_id": self.workspace_id,
            "run_id": self.run_id,
            "run_phase": self.run_phase,
            "audience": audience,
        }


@dataclass(frozen=True)
class RunIdentity:
    """One run phase as a cloud sees it in the token: the run, and what the service (issuer,
    subject format) and the request (audience) add."""

    issuer: str
    audience: str
    run: Run
    subject_format: str = DEFAULT_SUBJECT_FORMAT
    """The service's `[tokens] subject_format`."""

    @property
    def subject(self) -> str:
        return self.run.subject(self.subject_format)

    def claims(self) -> dict[str, Any]:
        """The claims keysvc puts in the token for this run (without the time claims)."""
        return {"iss": self.issuer, **self.run.claims(self.audience, self.subject_format)}
