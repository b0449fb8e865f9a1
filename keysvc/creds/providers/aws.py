"""AWS: a web-identity token file and a shared config file, as OTF writes them, so both the
AWS provider and every AWS SDK find the role through `AWS_ROLE_ARN` /
`AWS_WEB_IDENTITY_TOKEN_FILE` or through `shared_config_file`."""

from __future__ import annotations

from keysvc.creds.providers.base import Configuration, FileNames, Rendered
from keysvc.creds.variables import Settings

DEFAULT_AUDIENCE = "aws.workload.identity"


class AwsConfiguration(Configuration):
    provider = "aws"
    files = ("token", "config.ini")

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.audience = settings.audience(DEFAULT_AUDIENCE)
        self.role_arn = settings.require_run("ROLE_ARN").value  # one line: Settings checks

    def render(self, credential: str, names: FileNames) -> Rendered:
        token_path = str(names.path("token"))
        config = (
            "[default]\n"
            f"web_identity_token_file = {token_path}\n"
            f"role_arn                = {self.role_arn}\n"
        )
        return Rendered(
            files={
                names.name("token"): credential.encode(),
                names.name("config.ini"): config.encode(),
            },
            env={"AWS_ROLE_ARN": self.role_arn, "AWS_WEB_IDENTITY_TOKEN_FILE": token_path},
            tfvars={"shared_config_file": str(names.path("config.ini"))},
        )
