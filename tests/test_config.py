"""Configuration validation, including the shipped example files."""

from __future__ import annotations

from pathlib import Path

import pytest

from keysvc.config import ConfigError, parse_config, read_config_file

ROOT = Path(__file__).resolve().parent.parent


def base(**overrides: object) -> dict:
    data: dict = {"issuer": "https://otf.example.com",
                  "backends": [{"name": "k", "type": "file", "path": "/keys"}]}
    data.update(overrides)
    return data


def test_example_config_is_valid() -> None:
    config = parse_config(read_config_file(ROOT / "config" / "keysvc.example.toml"))
    assert config.rotation.publish_lead.total_seconds() == 86400
    assert [c.name for c in config.clients] == ["otfd", "ops"]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (base(issuer="https://otf.example.com/"), "issuer"),
        (base(issuer="http://otf.example.com"), "issuer"),
        (base(issuer="https://otf.example.com?x=1"), "issuer"),
        (base(backends=[]), "backends"),
        (base(backends=[{"type": "file"}]), "backends[0]: path"),
        (base(backends=[{"type": "file", "path": "/k", "colour": "red"}]), "colour"),
        (base(backends=[{"name": "a", "type": "file", "path": "/k"}] * 2), "duplicate name 'a'"),
        (base(backends=[{"name": "a b", "type": "file", "path": "/k"}]), "backends[0].name"),
        (base(clients=[{"name": "c", "scopes": ["sign"]}]), "exactly one of token_sha256"),
        (base(clients=[{"name": "c", "token_sha256": "abc", "scopes": ["sign"]}]), "token_sha256"),
        (base(clients=[{"name": "c", "token_sha256": "a" * 64, "scopes": ["admin"]}]), "scopes"),
        (base(server={"tls_cert": "/c"}), "tls_cert and tls_key"),
        (base(server={"client_ca": "/c"}), "client_ca"),
        (base(tokens={"max_ttl": "30h"}), "tokens.max_ttl: above 24h is refused"),
        (base(tokens={"subject_format": "o:{org}"}), "tokens.subject_format: unknown placeholder"),
        (base(tokens={"subject_format": "o:{organization!r}"}), "no conversion or format spec"),
        (base(tokens={"subject_format": "o:{organization"}), "tokens.subject_format"),
        # org "a-b" + workspace "c" and org "a" + workspace "b-c" would share one sub
        (base(tokens={"subject_format": "{organization}-{workspace}"}), "separate them"),
        (base(tokens={"subject_format": "o:{organization}.v1_{run_id}"}), "{organization} and {run_id}"),
        (base(rotation={"publish_lead": "1m", "jwks_max_age": "50s", "refresh_interval": "10s"}),
         "publish_lead"),
    ],
)
def test_invalid(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert fragment in str(info.value)


def test_token_file_must_be_private(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("secret-value\n")
    token.chmod(0o644)
    config = parse_config(base(clients=[{"name": "c", "token_file": str(token), "scopes": ["sign"]}]))
    with pytest.raises(ConfigError) as info:
        config.clients[0].token_digest()
    assert "chmod 600" in str(info.value) and "secret-value" not in str(info.value)
