"""Reading the `TFC_*` variable contract of OTF and HCP Terraform.

A provider configuration is enabled by `TFC_<P>_PROVIDER_AUTH[_TAG]=true`; its settings are then
looked up in a fixed order, so plan and apply may use different roles and a `TFC_DEFAULT_*`
value serves every configuration (see reference/otf-compat.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from keysvc.creds.checks import text_problem
from keysvc.creds.errors import VariableError

# Go's strconv.ParseBool, which OTF uses: the same spellings behave the same here.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_TAG = re.compile(r"[A-Za-z0-9_]+")
_RESERVED_TAGS = frozenset({"TYPE"})


def parse_bool(name: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    shown = value if len(value) <= 20 else value[:20] + "..."
    raise VariableError(name, f"{shown!r} is not a boolean (use true or false)")


def checked(name: str, value: str) -> str:
    """`value` of variable `name` if it is one line of printable characters: every setting
    ends up in a file, a header, a URL, a request or the printed variables, where a newline
    or control character would add a line or break the request."""
    problem = text_problem(value)
    if problem is not None:
        raise VariableError(name, problem)
    return value


def tag_of(name: str, prefix: str) -> str:
    """The tag of `name` = `prefix` or `prefix_<TAG>` ('' for the default configuration)."""
    rest = name[len(prefix) :]
    if not rest:
        return ""
    tag = rest[1:]
    if not rest.startswith("_") or not _TAG.fullmatch(tag):
        raise VariableError(
            name,
            f"malformed tag: expected {prefix} or {prefix}_<TAG>, TAG made of letters,"
            " digits and _",
        )
    if tag.upper() in _RESERVED_TAGS:
        raise VariableError(name, f"the tag {tag!r} is reserved")
    return tag


def enabled_tags(env: Mapping[str, str], provider: str) -> list[str]:
    """Tags of every configuration of `provider` (e.g. "AWS") switched on, '' (the default
    configuration) first. A non-boolean switch or a malformed tag is an error."""
    prefix = f"TFC_{provider}_PROVIDER_AUTH"
    tags = [
        tag
        for name, value in env.items()
        if name.startswith(prefix)
        for tag in [tag_of(name, prefix)]
        if parse_bool(name, value)
    ]
    return sorted(tags, key=lambda t: (t != "", t))


def suffix(tag: str) -> str:
    return f"_{tag}" if tag else ""


@dataclass(frozen=True)
class Found:
    name: str
    value: str


@dataclass(frozen=True)
class Settings:
    """The settings of one provider configuration (`provider` + `tag`) for one phase."""

    env: Mapping[str, str]
    provider: str  # upper case, as in the variable names: AWS, GCP, AZURE, VAULT, KUBERNETES
    tag: str
    phase: str  # plan | apply

    @property
    def switch(self) -> str:
        """The variable that enabled this configuration, named in error messages."""
        return f"TFC_{self.provider}_PROVIDER_AUTH{suffix(self.tag)}"

    def run_names(self, name: str) -> list[str]:
        """Where a phase-dependent setting is read, in order: the phase's own value, the
        phase's default, the run-wide value, HCP Terraform's run-wide default, OTF's default."""
        p, ph, t = self.provider, self.phase.upper(), suffix(self.tag)
        return [
            f"TFC_{p}_{ph}_{name}{t}",
            f"TFC_DEFAULT_{p}_{ph}_{name}",
            f"TFC_{p}_RUN_{name}{t}",
            f"TFC_DEFAULT_{p}_RUN_{name}",
            f"TFC_DEFAULT_{p}_{name}",
        ]

    def static_names(self, name: str) -> list[str]:
        """Where a setting that does not vary by phase is read, in order."""
        return [
            f"TFC_{self.provider}_{name}{suffix(self.tag)}",
            f"TFC_DEFAULT_{self.provider}_{name}",
        ]

    def first(self, names: list[str], *, multiline: bool = False) -> Found | None:
        """The first of `names` set to a non-empty value, checked to be one line of printable
        characters unless `multiline` (for a value the caller decodes and checks itself)."""
        for name in names:
            value = self.env.get(name, "")
            if value:
                return Found(name, value if multiline else checked(name, value))
        return None

    def run(self, name: str) -> Found | None:
        return self.first(self.run_names(name))

    def static(self, name: str, *, multiline: bool = False) -> Found | None:
        return self.first(self.static_names(name), multiline=multiline)

    def require(self, names: list[str], preferred: str | None = None) -> Found:
        found = self.first(names)
        if found is None:
            main = preferred or names[0]
            others = ", ".join(n for n in names if n != main)
            raise VariableError(
                main, f"required when {self.switch} is true (also read from: {others})"
            )
        return found

    def require_run(self, name: str) -> Found:
        """A phase-dependent setting that must be present; the error names the run-wide form."""
        names = self.run_names(name)
        return self.require(names, preferred=names[2])

    def audience(self, default: str | None) -> str:
        found = self.static("WORKLOAD_IDENTITY_AUDIENCE")
        if found is not None:
            return found.value
        if default is None:
            raise VariableError(
                self.static_names("WORKLOAD_IDENTITY_AUDIENCE")[0],
                f"required when {self.switch} is true: this provider has no default audience",
            )
        return default
