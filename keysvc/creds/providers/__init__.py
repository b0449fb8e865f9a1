"""The providers keysvc configures for a run, in the order their variables are printed."""

from __future__ import annotations

from keysvc.creds.providers.aws import AwsConfiguration
from keysvc.creds.providers.azure import AzureConfiguration
from keysvc.creds.providers.base import Configuration, FileNames, Rendered
from keysvc.creds.providers.gcp import GcpConfiguration
from keysvc.creds.providers.kubernetes import KubernetesConfiguration
from keysvc.creds.providers.vault import VaultConfiguration

PROVIDERS: tuple[type[Configuration], ...] = (
    AwsConfiguration,
    AzureConfiguration,
    GcpConfiguration,
    VaultConfiguration,
    KubernetesConfiguration,
)

__all__ = ["PROVIDERS", "Configuration", "FileNames", "Rendered"]
