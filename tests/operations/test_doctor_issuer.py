"""`keysvc doctor --issuer`: checks against a real HTTPS issuer on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from keysvc import jose
from keysvc.cli import cli
from keysvc.doctor import issuer_checks

from .issuer_server import IssuerServer


@pytest.fixture(scope="module")
def rsa_jwk() -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jose.public_jwk(key.public_key(), jose.Algorithm.RS256)


@pytest.fixture(scope="module")
def ec_jwk() -> dict[str, str]:
    return jose.public_jwk(
        ec.generate_private_key(ec.SECP256R1()).public_key(), jose.Algorithm.ES256
    )


def doctor(server: IssuerServer, *args: str, ca: bool = True) -> tuple[int, dict[str, Any], str]:
    ca_args = ["--ca-file", str(server.ca_file)] if ca else []
    result = CliRunner().invoke(
        cli,
        ["doctor", "--issuer", server.url, *ca_args, "--json", *args],
        catch_exceptions=False,
    )
    report = json.loads(result.stdout) if result.stdout.startswith("{") else {}
    return result.exit_code, report, result.stderr


def statuses(report: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for finding in report["findings"]:
        out.setdefault(finding["check"], []).append(finding["status"])
    return out


def message(report: dict[str, Any], check: str) -> str:
    return " | ".join(f["message"] for f in report["findings"] if f["check"] == check)


GOOD = ("--cloud", "gcp", "--cloud", "azure", "--publish-lead", "24h", "--max-ttl", "1h")


def test_a_good_issuer_passes_every_check(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str]
) -> None:
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    code, report, _ = doctor(issuer_server, *GOOD)
    assert code == 0, report
    assert report["ok"] is True
    found = statuses(report)
    for check in (
        "issuer_url",
        "discovery",
        "discovery_issuer",
        "jwks",
        "jwks_response_time",
        "kids",
        "public_only",
        "jwks_size",
        "algorithms.gcp",
        "algorithms.azure",
        "cache_control",
        "publish_lead",
        "token_lifetime.gcp",
        "token_lifetime.azure",
    ):
        assert found.get(check) == ["ok"], (check, found)
    # the only warning: TLS was verified against the test CA, which the clouds do not trust
    assert found["tls"] == ["warn"]
    assert "algorithms.aws" not in found
    assert issuer_server.state.requests == [
        "/.well-known/openid-configuration",
        "/.well-known/jwks",
    ]


def test_human_output_lists_checks_and_a_summary(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str]
) -> None:
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    result = CliRunner().invoke(
        cli,
        [
            "doctor",
            "--issuer",
            issuer_server.url,
            "--ca-file",
            str(issuer_server.ca_file),
            "--cloud",
            "aws",
        ],
    )
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"keysvc doctor: {issuer_server.url} (for AWS)"
    assert any(line.split()[:2] == ["FAIL", "issuer_url"] and "port" in line for line in lines)
    assert any(line.split()[:2] == ["ok", "kids"] for line in lines)
    assert any(line.split()[:2] == ["skip", "publish_lead"] for line in lines)
    assert lines[-1].startswith("1 failed, ")


def test_aws_refuses_an_issuer_with_a_port(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str]
) -> None:
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    code, report, _ = doctor(issuer_server, "--publish-lead", "1d", "--max-ttl", "1h")
    assert code == 1 and report["ok"] is False
    failures = [f for f in report["findings"] if f["status"] == "fail"]
    assert [(f["check"], f.get("clouds")) for f in failures] == [("issuer_url", ["aws"])]


def test_issuer_mismatch_fails(issuer_server: IssuerServer, rsa_jwk: dict[str, str]) -> None:
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    issuer_server.state.discovery_overrides = {"issuer": issuer_server.url + "/"}
    code, report, _ = doctor(issuer_server, *GOOD)
    assert code == 1
    assert statuses(report)["discovery_issuer"] == ["fail"]
    assert "character for character" in message(report, "discovery_issuer")


def test_es256_is_fine_for_gcp_and_aws_but_not_azure(
    issuer_server: IssuerServer, ec_jwk: dict[str, str]
) -> None:
    issuer_server.state.jwks = {"keys": [ec_jwk]}
    code, report, _ = doctor(issuer_server, *GOOD)
    assert code == 1
    found = statuses(report)
    assert found["algorithms.gcp"] == ["ok"] and found["algorithms.azure"] == ["fail"]
    assert "ES256" in message(report, "algorithms.azure")
    code, report, _ = doctor(
        issuer_server, "--cloud", "gcp", "--publish-lead", "1d", "--max-ttl", "1h"
    )
    assert code == 0, report


def test_eddsa_and_keys_without_alg(issuer_server: IssuerServer, rsa_jwk: dict[str, str]) -> None:
    ed = jose.public_jwk(ed25519.Ed25519PrivateKey.generate().public_key(), jose.Algorithm.EdDSA)
    otfd_style = {k: rsa_jwk[k] for k in ("kty", "n", "e", "kid")}  # otfd publishes no alg
    issuer_server.state.jwks = {"keys": [otfd_style, ed]}
    code, report, _ = doctor(issuer_server, *GOOD)
    assert code == 1
    assert statuses(report)["algorithms.gcp"] == ["fail"]
    assert ed["kid"] in message(report, "algorithms.gcp")
    assert otfd_style["kid"] not in message(report, "algorithms.gcp")


@pytest.mark.parametrize(
    ("mutate", "text"),
    [
        (lambda keys: keys.append(dict(keys[0])), "duplicate kid"),
        (lambda keys: keys[0].pop("kid"), "no kid"),
    ],
)
def test_kids_must_be_present_and_unique(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str], mutate: Any, text: str
) -> None:
    keys = [dict(rsa_jwk)]
    mutate(keys)
    issuer_server.state.jwks = {"keys": keys}
    code, report, _ = doctor(issuer_server, *GOOD)
    assert code == 1 and statuses(report)["kids"] == ["fail"] and text in message(report, "kids")


def test_private_key_material_in_the_jwks_fails_without_being_echoed(
    issuer_server: IssuerServer, ec_jwk: dict[str, str]
) -> None:
    leaked = dict(ec_jwk, d="PRIVATE-SCALAR-VALUE")
    issuer_server.state.jwks = {"keys": [leaked]}
    code, report, stderr = doctor(issuer_server, "--cloud", "gcp")
    assert code == 1 and statuses(report)["public_only"] == ["fail"]
    assert "PRIVATE-SCALAR-VALUE" not in json.dumps(report) + stderr


def fake_jwk(i: int) -> dict[str, str]:
    n = base64.urlsafe_b64encode(os.urandom(256)).rstrip(b"=").decode()
    return {"kty": "RSA", "kid": f"kid-{i}", "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"}


@pytest.mark.parametrize(("count", "status"), [(49, "ok"), (60, "warn"), (100, "fail")])
def test_jwks_size_against_aws_limit(issuer_server: IssuerServer, count: int, status: str) -> None:
    issuer_server.state.jwks = {"keys": [fake_jwk(i) for i in range(count)]}
    _, report, _ = doctor(issuer_server, "--cloud", "aws", "--publish-lead", "1d")
    assert statuses(report)["jwks_size"] == [status]
    if status == "fail":
        (finding,) = [f for f in report["findings"] if f["check"] == "jwks_size"]
        assert finding["clouds"] == ["aws"]
        # the limit is AWS's: judged for GCP and Azure only, a large JWKS is no failure
        code, report, _ = doctor(issuer_server, *GOOD)
        assert code == 0 and "jwks_size" not in statuses(report)


@pytest.mark.parametrize(
    ("headers", "args", "cache", "lead"),
    [
        ({}, ("--publish-lead", "1d"), "fail", "skip"),
        ({"Cache-Control": "no-store"}, ("--publish-lead", "1d"), "fail", "skip"),
        ({"Cache-Control": "public, max-age=0"}, ("--publish-lead", "1d"), "fail", "skip"),
        ({"Cache-Control": "public, max-age=86400"}, ("--publish-lead", "1h"), "ok", "fail"),
        ({"Cache-Control": "public, max-age=3600"}, ("--publish-lead", "1h"), "ok", "fail"),
        ({"Cache-Control": "public, max-age=900"}, (), "ok", "skip"),
        ({"Cache-Control": "public, max-age=30"}, ("--publish-lead", "1h"), "warn", "ok"),
    ],
)
def test_cache_control_and_publish_lead(
    issuer_server: IssuerServer,
    rsa_jwk: dict[str, str],
    headers: dict[str, str],
    args: tuple[str, ...],
    cache: str,
    lead: str,
) -> None:
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    issuer_server.state.jwks_headers = headers
    code, report, _ = doctor(issuer_server, "--cloud", "gcp", "--max-ttl", "1h", *args)
    found = statuses(report)
    assert (found["cache_control"], found["publish_lead"]) == ([cache], [lead])
    assert code == (1 if "fail" in (cache, lead) else 0)
    if cache == "warn":  # a warning says why it warns
        assert "so every verifier refetches the JWKS" in message(report, "cache_control")


@pytest.mark.parametrize(
    ("ttl", "gcp", "azure"),
    [("1h", "ok", "ok"), ("7h", "warn", "ok"), ("26h", "warn", "fail"), ("49h", "fail", "fail")],
)
def test_token_lifetime_limits(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str], ttl: str, gcp: str, azure: str
) -> None:
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    code, report, _ = doctor(
        issuer_server,
        "--cloud",
        "gcp",
        "--cloud",
        "azure",
        "--publish-lead",
        "1d",
        "--max-ttl",
        ttl,
    )
    found = statuses(report)
    assert (found["token_lifetime.gcp"], found["token_lifetime.azure"]) == ([gcp], [azure])
    assert code == (1 if "fail" in (gcp, azure) else 0)


def test_without_max_ttl_the_lifetime_check_is_skipped(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str]
) -> None:
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    code, report, _ = doctor(issuer_server, "--cloud", "azure", "--publish-lead", "1d")
    assert code == 0 and statuses(report)["token_lifetime"] == ["skip"]


def test_slow_jwks_is_reported(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(issuer_checks, "SLOW_RESPONSE_SECONDS", 0.2)
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    issuer_server.state.jwks_delay = 0.3
    code, report, _ = doctor(issuer_server, *GOOD)
    assert statuses(report)["jwks_response_time"] == ["warn"] and code == 0


@pytest.mark.parametrize(
    ("field", "status", "text"),
    [
        ("discovery_status", 404, "HTTP 404"),
        ("discovery_status", 302, "redirects"),
        ("jwks_status", 500, "HTTP 500"),
    ],
)
def test_http_errors_fail(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str], field: str, status: int, text: str
) -> None:
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    setattr(issuer_server.state, field, status)
    code, report, _ = doctor(issuer_server, *GOOD)
    failures = [f for f in report["findings"] if f["status"] == "fail"]
    assert code == 1 and len(failures) == 1 and text in failures[0]["message"]


def test_missing_jwks_uri_fails(issuer_server: IssuerServer) -> None:
    issuer_server.state.discovery_overrides = {"jwks_uri": None}
    code, report, _ = doctor(issuer_server, *GOOD)
    assert code == 1 and statuses(report)["jwks_uri"] == ["fail"]


def test_an_untrusted_certificate_fails(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str]
) -> None:
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    code, report, _ = doctor(issuer_server, *GOOD, ca=False)
    assert code == 1 and "not trusted" in message(report, "discovery")
    assert issuer_server.state.requests == []


def test_an_unreachable_issuer_fails(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(cli, ["doctor", "--issuer", f"https://127.0.0.1:{port}", "--json"])
    assert result.exit_code == 1
    assert "cannot connect" in json.loads(result.stdout)["findings"][-1]["message"]


def test_plain_http_issuer_is_a_failed_check_not_bad_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["doctor", "--issuer", "http://127.0.0.1:9", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["findings"][0]["check"] == "issuer_url"


# --- /v1/keys ---------------------------------------------------------------------------------


def service_keys(*keys: tuple[str, str, timedelta]) -> dict[str, Any]:
    now = datetime.now(UTC)
    lead = timedelta(hours=6)
    return {
        "keys": [
            {
                "kid": kid,
                "alg": "RS256",
                "backend": "file",
                "state": state,
                "created_at": (now - age).isoformat(),
                "signs_from": (now - age + lead).isoformat(),
                "published_until": None,
            }
            for kid, state, age in keys
        ]
    }


def test_publish_lead_and_published_keys_come_from_v1_keys(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(issuer_server.state.client_token + "\n")
    token_file.chmod(0o600)
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    issuer_server.state.service_keys = service_keys((rsa_jwk["kid"], "active", timedelta(days=2)))
    code, report, _ = doctor(
        issuer_server, "--cloud", "gcp", "--max-ttl", "1h", "--client-token-file", str(token_file)
    )
    assert code == 0, report
    found = statuses(report)
    assert found["service_keys"] == ["ok"] and found["keys_published"] == ["ok"]
    assert "6h" in message(report, "publish_lead") and found["publish_lead"] == ["ok"]

    # a pending key keysvc knows but the public JWKS (say, a stale static copy) lacks
    issuer_server.state.service_keys = service_keys(
        (rsa_jwk["kid"], "active", timedelta(days=2)), ("new-kid", "pending", timedelta(hours=1))
    )
    code, report, _ = doctor(
        issuer_server, "--cloud", "gcp", "--max-ttl", "1h", "--client-token-file", str(token_file)
    )
    assert code == 1 and "new-kid (pending)" in message(report, "keys_published")


def test_a_refused_client_token_is_reported(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("wrong-token")
    token_file.chmod(0o600)
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    code, report, stderr = doctor(issuer_server, *GOOD, "--client-token-file", str(token_file))
    assert code == 1 and "HTTP 401" in message(report, "service_keys")
    assert "wrong-token" not in json.dumps(report) + stderr


def test_a_group_readable_client_token_file_is_bad_input(
    issuer_server: IssuerServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("secret-token")
    token_file.chmod(0o640)
    code, _, stderr = doctor(issuer_server, "--client-token-file", str(token_file))
    assert code == 2 and stderr.startswith("keysvc: error:") and "chmod 600" in stderr
    assert issuer_server.state.requests == []


@pytest.mark.parametrize(
    "args",
    [
        ("--issuer", "ftp://example.com"),
        ("--issuer", "https://example.com/?q=1"),
        ("--issuer", "https://example.com", "--publish-lead", "soon"),
        ("--issuer", "https://example.com", "--cloud", "oracle"),
    ],
)
def test_bad_input_exits_2(args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, ["doctor", *args])
    assert result.exit_code == 2 and result.stdout == ""


# --- the service's settings from its config file ----------------------------------------------


def write_config(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "keysvc.toml"
    config.write_text(text)
    return config


def doctor_with_config(
    server: IssuerServer, *args: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    """doctor without --issuer: the issuer, like the rest, comes from the config."""
    result = CliRunner(env=env).invoke(
        cli,
        ["doctor", "--ca-file", str(server.ca_file), "--json", "--cloud", "gcp", *args],
        catch_exceptions=False,
    )
    report = json.loads(result.stdout) if result.stdout.startswith("{") else {}
    return result.exit_code, report, result.stderr


def test_issuer_publish_lead_and_max_ttl_come_from_the_config(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str], tmp_path: Path
) -> None:
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    issuer_server.state.jwks_headers = {"Cache-Control": "public, max-age=3600"}
    config = write_config(
        tmp_path,
        f'issuer = "{issuer_server.url}"\n'
        '[rotation]\npublish_lead = "1h"\njwks_max_age = "5m"\n'
        '[tokens]\nmax_ttl = "7h"\ndefault_ttl = "1h"\n'
        # what doctor does not read may need libraries or files this machine lacks
        '[[backends]]\ntype = "pkcs11"\nlibrary = "/nonexistent.so"\n',
    )
    code, report, _ = doctor_with_config(issuer_server, "--config", str(config))
    assert code == 1, report
    assert report["issuer"] == issuer_server.url
    found = statuses(report)
    assert found["discovery_issuer"] == ["ok"]
    assert found["publish_lead"] == ["fail"]
    assert "publish lead 1h" in message(report, "publish_lead")
    assert found["token_lifetime.gcp"] == ["warn"] and "7h" in message(report, "token_lifetime.gcp")

    # KEYSVC_CONFIG names the same file
    code, from_env, _ = doctor_with_config(issuer_server, env={"KEYSVC_CONFIG": str(config)})
    assert code == 1 and from_env["issuer"] == issuer_server.url
    assert statuses(from_env) == found
    for check in ("publish_lead", "token_lifetime.gcp"):
        assert message(from_env, check) == message(report, check)

    # flags win over the file
    code, report, _ = doctor_with_config(
        issuer_server, "--config", str(config), "--publish-lead", "1d", "--max-ttl", "1h"
    )
    assert code == 0, report
    found = statuses(report)
    assert found["publish_lead"] == ["ok"] and "publish lead 1d" in message(report, "publish_lead")
    assert found["token_lifetime.gcp"] == ["ok"] and "1h" in message(report, "token_lifetime.gcp")
    code, report, _ = doctor_with_config(
        issuer_server, "--config", str(config), "--issuer", "https://127.0.0.1:1"
    )
    assert report["issuer"] == "https://127.0.0.1:1" and code == 1


def test_a_config_without_the_keys_means_the_services_defaults(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str], tmp_path: Path
) -> None:
    """The service runs with publish_lead 24h and max_ttl 2h when its file sets neither, so
    doctor judges those (without --config it knows neither and skips the checks)."""
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    config = write_config(tmp_path, f'issuer = "{issuer_server.url}"\n')
    code, report, _ = doctor_with_config(issuer_server, "--config", str(config))
    assert code == 0, report
    found = statuses(report)
    assert found["publish_lead"] == ["ok"] and "publish lead 1d" in message(report, "publish_lead")
    assert found["token_lifetime.gcp"] == ["ok"] and "2h" in message(report, "token_lifetime.gcp")
    _, report, _ = doctor(issuer_server, "--cloud", "gcp")
    assert statuses(report)["publish_lead"] == ["skip"]
    assert statuses(report)["token_lifetime"] == ["skip"]


def test_the_configs_publish_lead_wins_over_v1_keys(
    issuer_server: IssuerServer, rsa_jwk: dict[str, str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(issuer_server.state.client_token)
    token_file.chmod(0o600)
    issuer_server.state.jwks = {"keys": [rsa_jwk]}
    issuer_server.state.service_keys = service_keys((rsa_jwk["kid"], "active", timedelta(days=2)))
    config = write_config(
        tmp_path, f'issuer = "{issuer_server.url}"\n[rotation]\npublish_lead = "2h"\n'
    )
    code, report, _ = doctor_with_config(
        issuer_server, "--config", str(config), "--client-token-file", str(token_file)
    )
    assert code == 0, report
    assert statuses(report)["service_keys"] == ["ok"]  # /v1/keys says 6h
    assert "publish lead 2h" in message(report, "publish_lead")


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('[rotation]\npublish_lead = "soon"', "rotation.publish_lead", "invalid duration 'soon'"),
        ("[rotation]\npublish_lead = true", "rotation.publish_lead", "expected a duration"),
        ('[tokens]\nmax_ttl = "2 hours"', "tokens.max_ttl", "invalid duration '2 hours'"),
        ('[tokens]\nmax_ttl = "30h"', "tokens.max_ttl", "above 24h is refused"),
        ("[tokens]\nmax_ttl = -5", "tokens.max_ttl", "cannot be negative"),
        ('rotation = "1h"', "rotation", "must be a table"),
    ],
)
def test_bad_values_in_the_config_exit_2_before_any_request(
    issuer_server: IssuerServer, tmp_path: Path, text: str, key: str, problem: str
) -> None:
    config = write_config(tmp_path, f'issuer = "{issuer_server.url}"\n{text}\n')
    code, report, stderr = doctor_with_config(issuer_server, "--config", str(config))
    assert code == 2 and report == {} and stderr.count("\n") == 1
    assert stderr.startswith(f"keysvc: error: {key} in {config}") and problem in stderr
    assert issuer_server.state.requests == []


@pytest.mark.parametrize(
    ("issuer", "problem"),
    [
        ("ftp://127.0.0.1", "must be an https URL"),
        ("http://keys.example.com", "must be an https URL"),
        ("https://keys.example.com/", "trailing slash"),
    ],
)
def test_a_bad_issuer_in_the_config_exits_2(tmp_path: Path, issuer: str, problem: str) -> None:
    config = write_config(tmp_path, f'issuer = "{issuer}"\n')
    result = CliRunner().invoke(cli, ["doctor", "--config", str(config)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"keysvc: error: issuer in {config}: ")
    assert problem in result.stderr and result.stderr.count("\n") == 1
