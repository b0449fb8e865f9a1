"""Everything `apply` will do, worked out from the variables alone: which configurations are
enabled, each validated, before any token is requested or file written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from keysvc.creds import manual
from keysvc.creds.providers import PROVIDERS, Configuration
from keysvc.creds.variables import Settings, enabled_tags


TFVARS_FILE = "{provider}_dynamic_credentials.auto.tfvars.json"
"""The file of a provider in multiple-configuration mode (OTF's and HCP Terraform's name)."""


@dataclass(frozen=True)
class ProviderPlan:
    provider: str  # lower case
    configurations: list[Configuration]

    @property
    def multiple(self) -> bool:
        """Any tagged configuration switches the provider to multiple-configuration mode:
        no variables at all, a tfvars file instead (OTF's and HCP Terraform's rule)."""
        return any(c.tag for c in self.configurations)

    @property
    def tfvars_file(self) -> str:
        return TFVARS_FILE.format(provider=self.provider)

    @property
    def tfvars_variable(self) -> str:
        return f"tfc_{self.provider}_dynamic_credentials"


@dataclass(frozen=True)
class Plan:
    providers: list[ProviderPlan]
    manual: list[manual.ManualToken]

    @property
    def empty(self) -> bool:
        return not self.providers and not self.manual


def make_plan(env: Mapping[str, str], phase: str) -> Plan:
    """Validate every `TFC_*` variable; raises VariableError for the first bad one."""
    providers = []
    for cls in PROVIDERS:
        upper = cls.provider.upper()
        configurations = [cls(Settings(env, upper, tag, phase)) for tag in enabled_tags(env, upper)]
        if configurations:
            providers.append(ProviderPlan(cls.provider, configurations))
    return Plan(providers, manual.requested(env))
