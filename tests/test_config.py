"""Configuration validation, including the shipped example files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from keysvc.config import (
    DEFAULT_RSA_SIGNING,
    Config,
    ConfigError,
    SettingError,
    TokensConfig,
    parse_config,
    read_config_file,
    read_settings,
)
from keysvc.service import build_backends

ROOT = Path(__file__).resolve().parent.parent


def base(**overrides: object) -> dict:
    data: dict = {"issuer": "https://otf.example.com",
                  "backends": [{"name": "k", "type": "file", "path": "/keys"}]}
    data.update(overrides)
    return data


def test_example_config_is_valid() -> None:
    config = parse_config(read_config_file(ROOT / "config" / "keysvc.example.toml"))
    assert [b.settings.path for b in build_backends(config)] == [Path("/etc/keysvc/keys")]
    assert config.rotation.publish_lead.total_seconds() == 86400
    assert [c.name for c in config.clients] == ["otfd", "ops"]


def test_the_rsa_signing_default_is_the_one_the_docs_state() -> None:
    """Flipping tokens.rsa_signing's default is one line in keysvc/config.py; this names the two
    places that state it to users."""
    assert TokensConfig().rsa_signing == DEFAULT_RSA_SIGNING
    readme = (ROOT / "README.md").read_text()
    assert f"| `tokens.rsa_signing` | `{DEFAULT_RSA_SIGNING}` |" in readme
    example = (ROOT / "config" / "keysvc.example.toml").read_text()
    assert f'\n# rsa_signing = "{DEFAULT_RSA_SIGNING}"\n' in example


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
        # `re.match` with `$` would let a trailing newline through
        (base(backends=[{"name": "a\n", "type": "file", "path": "/k"}]), "backends[0].name"),
        (base(backends=[{"name": "a b", "type": "file", "path": "/k"}]), "backends[0].name"),
        (base(clients=[{"name": "c", "scopes": ["sign"]}]), "exactly one of token_sha256"),
        (base(clients=[{"name": "c", "token_sha256": "abc", "scopes": ["sign"]}]), "token_sha256"),
        (base(clients=[{"name": "c", "token_sha256": "a" * 64, "scopes": ["admin"]}]), "scopes"),
        (base(server={"tls_cert": "/c"}), "tls_cert and tls_key"),
        (base(server={"client_ca": "/c"}), "client_ca"),
        (base(tokens={"max_ttl": "30h"}), "tokens.max_ttl: above 24h is refused"),
        (base(tokens={"rsa_signing": "inline"}), "tokens.rsa_signing"),
        (base(tokens={"subject_format": "o:{org}"}), "tokens.subject_format: unknown placeholder"),
        (base(tokens={"subject_format": "o:{organization!r}"}), "no conversion or format spec"),
        (base(tokens={"subject_format": "o:{organization"}), "tokens.subject_format"),
        # org "a-b" + workspace "c" and org "a" + workspace "b-c" would share one sub
        (base(tokens={"subject_format": "{organization}-{workspace}"}), "separate them"),
        (base(tokens={"subject_format": "o:{organization}.v1_{run_id}"}), "{organization} and {run_id}"),
        (base(rotation={"publish_lead": "1m", "jwks_max_age": "50s", "refresh_interval": "10s"}),
         "publish_lead"),
        # a duration far beyond datetime's range is a config error, not an OverflowError
        (base(rotation={"publish_lead": "99999999999999d"}), "rotation.publish_lead: duration"),
        (base(rotation={"publish_lead": 1e30}), "rotation.publish_lead: duration 1e+30 is too long"),
        (base(rotation={"jwks_max_age": float("inf")}), "rotation.jwks_max_age: duration inf is too"),
        (base(rotation={"jwks_max_age": float("nan")}), "rotation.jwks_max_age: duration nan is not"),
        (base(rotation={"publish_lead": "3651d"}), "at most 3650d"),
        # a JWT's iat and exp are whole seconds
        (base(tokens={"default_ttl": "500ms"}), "tokens.default_ttl: must be a whole number of seconds"),
        (base(tokens={"default_ttl": "1500ms"}), "tokens.default_ttl: must be a whole number"),
        (base(tokens={"default_ttl": "0s"}), "tokens.default_ttl: must be a whole number"),
        (base(tokens={"max_ttl": "900ms", "default_ttl": "1s"}), "tokens.max_ttl: must be a whole"),
        (base(tokens={"default_ttl": "3h", "max_ttl": "1h"}), "default_ttl must not exceed max_ttl"),
    ],
)
def test_invalid(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_backends(parse_config(data))  # backend settings are checked as backends are built
    assert fragment in str(info.value)


def test_token_file_must_be_private(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("secret-value\n")
    token.chmod(0o644)
    config = parse_config(base(clients=[{"name": "c", "token_file": str(token), "scopes": ["sign"]}]))
    with pytest.raises(ConfigError) as info:
        config.clients[0].token_digest()
    assert "chmod 600" in str(info.value) and "secret-value" not in str(info.value)


@pytest.mark.parametrize(
    ("issuer", "problem"),
    [
        ("https://otf.example.com?", "no query, fragment"),
        ("https://otf.example.com#", "no query, fragment"),
        ("https://otf.example.com/?", "no query, fragment"),
        ("https://otf.example.com ", "printable ASCII characters without spaces"),
        (" https://otf.example.com", "printable ASCII characters without spaces"),
        ("https://otf.example.com\n", "printable ASCII characters without spaces"),
        ("https://otf.example.com/a\tb", "printable ASCII characters without spaces"),
        ("https://otf.exa mple.com", "printable ASCII characters without spaces"),
        ("https://bücher.example", "xn--"),
        ("https://user:pw-in-the-url@otf.example.com", "user name or password"),
        ("https://user@otf.example.com", "user name or password"),
        ("https://otf.example.com:99999", "port that is not a number from 1 to 65535"),
        ("https://otf.example.com:0", "port that is not a number"),
        ("https://otf.example.com:", "port that is not a number"),
        ("https://otf.example.com:https", "port that is not a number"),
        ("https://otf%2eexample.com", "host that is not a DNS name"),
        ("https://otf..example.com", "host that is not a DNS name"),
        ("https://[not-ipv6]", "not a valid URL"),
        ("HTTPS://otf.example.com", "does not read back as written"),
        ("https:///otf.example.com", "with a host"),
        ("http://otf.example.com", "must be an https URL"),
        ("", "must be an https URL"),
    ],
)
def test_issuer_must_read_back_as_written(issuer: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(base(issuer=issuer))
    message = str(info.value)
    assert message.startswith("issuer: ") and problem in message
    assert "pw-in-the-url" not in message  # the value is never repeated: it may hold a password


@pytest.mark.parametrize(
    "issuer",
    [
        "https://otf.example.com",
        "https://otf.example.com/tenant/keys",  # a path prefix, no trailing slash
        "https://otf.example.com:8443/keys",
        "https://xn--bcher-kva.example",
        "https://10.0.0.7",
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
    ],
)
def test_valid_issuers(issuer: str) -> None:
    assert parse_config(base(issuer=issuer)).issuer == issuer


def test_durations_and_ttls_at_their_limits() -> None:
    config = parse_config(base(
        tokens={"default_ttl": "1s", "max_ttl": "24h"},
        rotation={"publish_lead": "3650d", "jwks_max_age": "1500ms", "refresh_interval": "500ms"},
    ))
    assert config.tokens.default_ttl.total_seconds() == 1
    assert config.rotation.publish_lead.days == 3650


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ('[rotation]\npublish_lead = "99999999999999d"', "rotation.publish_lead: duration"),
        ("[rotation]\npublish_lead = 1e30", "rotation.publish_lead: duration 1e+30 is too long"),
        ('[tokens]\ndefault_ttl = "500ms"', "tokens.default_ttl: must be a whole number"),
        ('issuer = "https://user:pw@otf.example.com"', "issuer: must not hold a user name"),
    ],
)
def test_out_of_range_config_exits_2_on_one_line(tmp_path: Path, table: str, fragment: str) -> None:
    from tests.cli import assert_one_line_error, run

    path = tmp_path / "keysvc.toml"
    issuer = "" if table.startswith("issuer") else 'issuer = "https://otf.example.com"\n'
    path.write_text(
        f'{issuer}{table}\n[[backends]]\nname = "k"\ntype = "file"\npath = "{tmp_path}"\n'
    )
    result = run("keys", "list", "--config", str(path))
    assert_one_line_error(result, fragment)
    assert "pw@" not in result.stderr


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"backends": [{"type": "file", "path": "/k"}]}, "issuer: is required"),
        (base(server={"workerz": 2}), "server.workerz: is not a setting keysvc knows"),
        (base(server={"port": "eighty"}), "server.port: must be a whole number"),
        (base(server={"port": 70000}), "server.port: must be at most 65535"),
        (base(log_level="loud"), "log_level: must be 'debug', 'info', 'warning' or 'error'"),
        (base(backends=[{"type": "file"}]), "backends[0]: path: is required"),
        (base(backends=[{"type": "file", "path": "/k", "colour": "red"}]),
         "backends[0]: colour: is not a setting keysvc knows"),
        (base(clients=[{"name": "c", "token_sha256": "a" * 64, "scopes": []}]),
         "clients[0].scopes: must not be empty"),
        (base(tokens={"default_ttl": True}), "tokens.default_ttl: "),
    ],
)
def test_config_errors_are_plain_words_naming_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build_backends(parse_config(data))
    text = str(refused.value)
    assert text.startswith(message), text
    for pydantic_words in ("Field required", "Extra inputs", "Input should", "valid integer"):
        assert pydantic_words not in text



TOOL_KEYS = ["issuer", "tokens.subject_format", "tokens.max_ttl", "rotation.publish_lead"]


def test_read_settings_reads_only_what_holds_the_keys() -> None:
    """What the operator tools read from a copy of the service's config: the keys' values, or
    the service's defaults; the other tables are not judged (no backends, a bad port)."""
    data = {
        "issuer": "https://keys.example.com",
        "tokens": {"max_ttl": "3h"},
        "server": {"port": "eighty"},
        "backends": [{"type": "no-such-type"}],
    }
    assert read_settings(data, TOOL_KEYS) == {
        "issuer": "https://keys.example.com",
        "tokens.subject_format": TokensConfig().subject_format,
        "tokens.max_ttl": timedelta(hours=3),
        "rotation.publish_lead": timedelta(hours=24),
    }
    assert read_settings({}, ["issuer", "tokens.max_ttl"]) == {
        "issuer": None,  # the service has no default: the tool says so
        "tokens.max_ttl": timedelta(hours=2),
    }


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"issuer": 443}, "issuer", "must be a string"),
        ({"issuer": "http://keys.example.com"}, "issuer", "must be an https URL"),
        ({"rotation": "1h"}, "rotation", "must be a table of names and values"),
        ({"tokens": {"max_ttl": "30h"}}, "tokens.max_ttl", "above 24h is refused"),
        ({"tokens": {"colour": 1}}, "tokens.colour", "is not a setting keysvc knows"),
        # a table is judged whole, as the service judges it
        ({"tokens": {"max_ttl": "30m"}}, "tokens", "default_ttl must not exceed max_ttl"),
        ({"rotation": {"publish_lead": "1m"}}, "rotation", "must be shorter than publish_lead"),
    ],
)
def test_read_settings_refuses_what_the_service_refuses(
    data: dict, key: str, problem: str
) -> None:
    with pytest.raises(SettingError) as refused:
        read_settings(data, TOOL_KEYS)
    assert refused.value.key == key and problem in refused.value.problem
    with pytest.raises(ConfigError) as also:
        parse_config({**data, "issuer": data.get("issuer", "https://k.example.com"),
                      "backends": [{"type": "memory"}]})
    assert str(also.value).startswith(key) and problem in str(also.value)


def test_top_level_rules_are_in_the_types() -> None:
    """read_settings checks a top-level setting by its type alone: a field_validator on Config
    would be skipped there, so Config has none."""
    assert not Config.__pydantic_decorators__.field_validators
