"""GCP: an external_account credential configuration (Workload Identity Federation) that reads
the token from a file, as OTF writes it; with HCP Terraform's `PRINCIPAL_TYPE=workload_pool`
the federated identity is used directly, without impersonating a service account."""

from __future__ import annotations

import json
import re

from keysvc.creds.errors import VariableError
from keysvc.creds.providers.base import Configuration, FileNames, Rendered
from keysvc.creds.variables import Settings

PROVIDER_NAME = re.compile(
    r"projects/[^/]+/locations/global/workloadIdentityPools/[^/]+/providers/[^/]+"
)
PROVIDER_NAME_FORM = (
    "projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>"
)
# A service account's email: user-managed NAME@PROJECT.iam.gserviceaccount.com, or a
# Google-managed one (PROJECT_NUMBER-compute@developer.gserviceaccount.com,
# PROJECT@appspot.gserviceaccount.com, service-N@gcp-sa-X.iam.gserviceaccount.com). Anything
# else (someone@gmail.com) is no service account, and STS would refuse it only at run time. It
# is put into the impersonation URL's path as it is: nothing there may end the path segment.
SERVICE_ACCOUNT_EMAIL = re.compile(r"[A-Za-z0-9._+-]+@([A-Za-z0-9-]+\.)+gserviceaccount\.com")
SERVICE_ACCOUNT_FORM = (
    "must be a service account email: NAME@PROJECT.iam.gserviceaccount.com (or a Google-managed"
    " account's, ending .gserviceaccount.com)"
)
PRINCIPAL_TYPES = ("service_account", "workload_pool")
STS_URL = "https://sts.googleapis.com/v1/token"
IMPERSONATION_URL = (
    "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
    "{email}:generateAccessToken"
)


def _provider_name(settings: Settings) -> str:
    """`WORKLOAD_PROVIDER_NAME`, or the name built from its three parts."""
    found = settings.static("WORKLOAD_PROVIDER_NAME")
    if found is None:
        parts = [
            settings.require(settings.static_names(part))
            for part in ("PROJECT_NUMBER", "WORKLOAD_POOL_ID", "WORKLOAD_PROVIDER_ID")
        ]
        value = "projects/{}/locations/global/workloadIdentityPools/{}/providers/{}".format(
            *(p.value for p in parts)
        )
        name = " + ".join(p.name for p in parts)
    else:
        value, name = found.value, found.name
    if not PROVIDER_NAME.fullmatch(value):
        raise VariableError(name, f"the workload identity provider must be {PROVIDER_NAME_FORM}")
    return value


class GcpConfiguration(Configuration):
    provider = "gcp"
    files = ("token", "config")

    def __init__(self, settings: Settings) -> None:
        self.provider_name = _provider_name(settings)
        super().__init__(settings)
        self.audience = settings.audience(f"//iam.googleapis.com/{self.provider_name}")
        principal = settings.static("PRINCIPAL_TYPE")
        self.principal_type = principal.value if principal else "service_account"
        if self.principal_type not in PRINCIPAL_TYPES:
            assert principal is not None
            raise VariableError(principal.name, "must be service_account or workload_pool")
        self.service_account_email: str | None = None
        if self.principal_type == "service_account":
            email = settings.require_run("SERVICE_ACCOUNT_EMAIL")
            if not SERVICE_ACCOUNT_EMAIL.fullmatch(email.value):
                raise VariableError(email.name, SERVICE_ACCOUNT_FORM)
            self.service_account_email = email.value

    def credential_config(self, token_file: str) -> dict[str, object]:
        config: dict[str, object] = {
            "universe_domain": "googleapis.com",
            "type": "external_account",
            "audience": self.audience,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": STS_URL,
        }
        if self.service_account_email is not None:
            config["service_account_impersonation_url"] = IMPERSONATION_URL.format(
                email=self.service_account_email
            )
        config["credential_source"] = {"file": token_file, "format": {"type": "text"}}
        return config

    def render(self, credential: str, names: FileNames) -> Rendered:
        config = self.credential_config(str(names.path("token")))
        config_path = str(names.path("config"))
        return Rendered(
            files={
                names.name("token"): credential.encode(),
                names.name("config"): json.dumps(config, indent=2).encode(),
            },
            env={"GOOGLE_APPLICATION_CREDENTIALS": config_path},
            tfvars={"credentials": config_path},
        )
