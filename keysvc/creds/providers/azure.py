"""Azure: the client id and the token in files, and OTF's `ARM_*` variables, which the azurerm
provider reads for OIDC (workload identity federation)."""

from __future__ import annotations

from keysvc.creds.providers.base import Configuration, FileNames, Rendered
from keysvc.creds.variables import Settings

DEFAULT_AUDIENCE = "api://AzureADTokenExchange"


class AzureConfiguration(Configuration):
    provider = "azure"
    files = ("client_id", "token")

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.audience = settings.audience(DEFAULT_AUDIENCE)
        self.client_id = settings.require_run("CLIENT_ID").value

    def render(self, credential: str, names: FileNames) -> Rendered:
        return Rendered(
            files={
                names.name("client_id"): self.client_id.encode(),
                names.name("token"): credential.encode(),
            },
            env={
                "ARM_CLIENT_ID": self.client_id,
                "ARM_OIDC_TOKEN": credential,
                "ARM_USE_OIDC": "true",
            },
            tfvars={
                "client_id_file_path": str(names.path("client_id")),
                "oidc_token_file_path": str(names.path("token")),
            },
        )
