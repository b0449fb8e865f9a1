"""One name each for what every remote backend has (endpoint, ca_file, timeout, retry_budget,
insecure), today's former names still accepted so that no config breaks."""

from __future__ import annotations

from typing import Any

import pytest

from keysvc.backends import available_types, load_backend_class
from keysvc.config import parse_config
from keysvc.service import build_backends
from keysvc.errors import ConfigError

BASE: dict[str, dict[str, Any]] = {
    "vault": {"endpoint": "https://vault.example.com:8200", "key": "keysvc"},
    "azure_kv": {"endpoint": "https://keysvc.vault.azure.net", "key": "keysvc"},
    "aws_kms": {"key_ids": ["alias/keysvc"], "tag": "keysvc=prod"},
}
RENAMED = [
    ("vault", "address", "endpoint", "https://vault2.example.com:8200"),
    ("vault", "ca_cert", "ca_file", "/etc/keysvc/vault-ca.pem"),
    ("vault", "tls_skip_verify", "insecure", True),
    ("vault", "request_timeout", "timeout", "1500ms"),
    ("azure_kv", "vault_url", "endpoint", "https://other.vault.azure.net"),
    ("azure_kv", "ca_cert", "ca_file", "/etc/keysvc/azure-ca.pem"),
    ("azure_kv", "throttle_budget", "retry_budget", "1s"),
    ("aws_kms", "endpoint_url", "endpoint", "https://kms.eu-west-1.amazonaws.com"),
    ("aws_kms", "tagging_endpoint_url", "tagging_endpoint", "https://tagging.example.com"),
    ("aws_kms", "read_timeout", "timeout", "3s"),
]
FORMER_NAMES = {former for _, former, _, _ in RENAMED}
SHARED_NAMES = {"endpoint", "ca_file", "timeout", "retry_budget", "insecure"}


def settings(backend_type: str, **table: Any) -> Any:
    base = {k: v for k, v in BASE[backend_type].items() if k not in table}
    if "address" in table or "vault_url" in table or "endpoint_url" in table:
        base.pop("endpoint", None)
    backend = {"name": "b", "type": backend_type, **base, **table}
    config = parse_config({"issuer": "https://keys.example.com", "backends": [backend]})
    return build_backends(config)[0].settings


@pytest.mark.parametrize(("backend_type", "former", "name", "value"), RENAMED)
def test_the_former_name_still_works(
    backend_type: str, former: str, name: str, value: Any
) -> None:
    assert settings(backend_type, **{former: value}) == settings(backend_type, **{name: value})
    assert getattr(settings(backend_type, **{former: value}), name) not in (None, False)


@pytest.mark.parametrize(("backend_type", "former", "name", "value"), RENAMED)
def test_both_names_at_once_are_refused(
    backend_type: str, former: str, name: str, value: Any
) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(backend_type, **{former: value, name: value})
    assert str(refused.value) == f"backends[0]: set {name} or its former name {former}, not both"


@pytest.mark.parametrize("backend_type", available_types())
def test_no_backend_uses_a_former_name(backend_type: str) -> None:
    fields = set(load_backend_class(backend_type).Settings.model_fields)
    assert not fields & FORMER_NAMES
    # Other timeouts are other things: AWS's TCP connect, GCP's wait for a generated version.
    others = fields - SHARED_NAMES - {"connect_timeout", "generation_timeout"}
    assert not [n for n in others if n.endswith(("_url", "_timeout", "_budget", "_verify"))]
