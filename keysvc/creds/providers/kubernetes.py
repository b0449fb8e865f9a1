"""Kubernetes (HCP Terraform only): the token for the kubernetes and helm providers. There is
no default audience: it must be the client id the cluster's OIDC issuer expects."""

from __future__ import annotations

from keysvc.creds.providers.base import Configuration, FileNames, Rendered
from keysvc.creds.variables import Settings


class KubernetesConfiguration(Configuration):
    provider = "kubernetes"
    files = ("token",)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.audience = settings.audience(None)

    def render(self, credential: str, names: FileNames) -> Rendered:
        return Rendered(
            files={names.name("token"): credential.encode()},
            env={"KUBE_TOKEN": credential},
            tfvars={"token_path": str(names.path("token"))},
        )
