"""Vault (HCP Terraform only): log in to Vault's JWT auth method with the token and hand the
run a Vault token, in a file (for `auth_login_token_file`) and as `VAULT_TOKEN`, with
`VAULT_ADDR`, `VAULT_NAMESPACE` and the CA certificate the address needs."""

from __future__ import annotations

import base64
import binascii
import re
import ssl

from keysvc.creds import vault_login
from keysvc.creds.checks import VISIBLE_ASCII, url_problem
from keysvc.creds.errors import VariableError
from keysvc.creds.providers.base import Configuration, FileNames, Rendered
from keysvc.creds.variables import Found, Settings

DEFAULT_AUDIENCE = "vault.workload.identity"
DEFAULT_AUTH_PATH = "jwt"
DEFAULT_TIMEOUT = 60
MAX_TIMEOUT = 3600
_SEGMENT = r"(?!\.{1,2}(?:/|$))[A-Za-z0-9_.-]+"
_AUTH_PATH = re.compile(rf"{_SEGMENT}(/{_SEGMENT})*")


def _ca_pem(found: Found | None) -> str | None:
    """The PEM certificate(s) in a base64-encoded `ENCODED_CACERT`, checked to load."""
    if found is None:
        return None
    try:
        pem = base64.b64decode(found.value.strip(), validate=True).decode("ascii")
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise ValueError
        ssl.create_default_context(cadata=pem)
    except (binascii.Error, ValueError, ssl.SSLError):
        raise VariableError(found.name, "must be a base64-encoded PEM CA certificate") from None
    return pem


def _timeout(found: Found | None) -> int:
    if found is None:
        return DEFAULT_TIMEOUT
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
    if not re.fullmatch(r"[0-9]{1,6}", found.value) or not 0 < int(found.value) <= MAX_TIMEOUT:
        raise VariableError(
            found.name, f"must be a whole number of seconds from 1 to {MAX_TIMEOUT}"
        )
    return int(found.value)


def endpoint(settings: Settings) -> vault_login.VaultEndpoint:
    """Where a configuration's Vault is (address, namespace, CA, timeout): settings that do not
    vary by phase, so `clean` reads them from its own environment as `apply` did, and never
    from the work directory the run controls."""
    address = settings.require(settings.static_names("ADDR"))
    problem = url_problem(address.value)
    if problem is not None:
        raise VariableError(address.name, problem)
    namespace = settings.static("NAMESPACE")
    if namespace and not VISIBLE_ASCII.fullmatch(namespace.value):
        raise VariableError(
            namespace.name,
            "must be printable ASCII without spaces (it is sent as the X-Vault-Namespace header)",
        )
    return vault_login.VaultEndpoint(
        address=address.value.rstrip("/"),
        namespace=namespace.value if namespace else None,
        ca_pem=_ca_pem(settings.static("ENCODED_CACERT", multiline=True)),
        timeout=_timeout(settings.static("CLIENT_TIMEOUT")),
    )


class VaultConfiguration(Configuration):
    provider = "vault"
    files = ("token", "ca_cert.pem")

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.audience = settings.audience(DEFAULT_AUDIENCE)
        self.endpoint = endpoint(settings)
        self.role = settings.require_run("ROLE").value
        auth_path = settings.static("AUTH_PATH")
        self.auth_path = auth_path.value.strip("/") if auth_path else DEFAULT_AUTH_PATH
        if auth_path and not _AUTH_PATH.fullmatch(self.auth_path):
            raise VariableError(auth_path.name, "must be a Vault mount path such as jwt")

    def exchange(self, token: str) -> str:
        return vault_login.login(self.endpoint, self.auth_path, self.role, token)

    def discard(self, credential: str) -> None:
        vault_login.revoke(self.endpoint, credential)

    def render(self, credential: str, names: FileNames) -> Rendered:
        files = {names.name("token"): credential.encode()}
        ca_file: str | None = None
        env = {"VAULT_ADDR": self.endpoint.address, "VAULT_TOKEN": credential}
        if self.endpoint.namespace:
            env["VAULT_NAMESPACE"] = self.endpoint.namespace
        if self.endpoint.ca_pem:
            ca_file = names.name("ca_cert.pem")
            files[ca_file] = self.endpoint.ca_pem.encode()
            env["VAULT_CACERT"] = str(names.path("ca_cert.pem"))
        return Rendered(
            files=files,
            env=env,
            tfvars={
                "token_filename": str(names.path("token")),
                "address": self.endpoint.address,
                "namespace": self.endpoint.namespace or "",
                "ca_cert_file": str(names.path("ca_cert.pem")) if ca_file else "",
            },
            revoke=names.name("token"),
        )
