"""`keysvc setup aws|gcp|azure` prints Terraform that `terraform fmt -check` accepts, for every
kind of document each generator writes (see terraform_fmt.py for how fmt is run here)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from keysvc.cli import cli

from .terraform_fmt import terraform_fmt_problems

BASE = ("--issuer", "https://keys.example.com", "--organization", "acme")
VARIANTS = {
    "aws": [
        (),
        ("--workspace", "web", "--workspace", "db-*", "--phase", "apply"),
        ("--existing-provider", "--audience", "sts.amazonaws.com", "--role-name", "runs"),
        ("--subject-format", "org:{organization}:ws:{workspace}:id:{workspace_id}:{run_phase}",
         "--workspace", "web", "--workspace-id", "ws-1"),
    ],
    "gcp": [
        (),
        ("--workspace", "web", "--phase", "plan", "--project", "acme-prod"),
        ("--workspace", "web", "--workspace", "d?-*", "--audience", "//iam.googleapis.com/x",
         "--pool-id", "pool-1", "--provider-id", "prov-1", "--service-account-id", "runner-01"),
    ],
    "azure": [
        ("--workspace", "web"),
        ("--workspace", "web", "--workspace", "db", "--phase", "apply", "--display-name", "OTF"),
    ],
}


def printed(*args: str) -> str:
    result = CliRunner().invoke(cli, ["setup", *args], catch_exceptions=False)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def test_every_generator_prints_canonically_formatted_hcl(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [
        {"kty": "EC", "kid": "k1", "use": "sig", "alg": "ES256", "crv": "P-256",
         "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
         "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
    ]}))
    documents = {
        f"{cloud} {' '.join(args) or '(defaults)'}": printed(cloud, *BASE, *args)
        for cloud, variants in VARIANTS.items()
        for args in variants
    }
    documents["gcp --jwks"] = printed("gcp", *BASE, "--jwks", str(jwks))
    problems = terraform_fmt_problems(documents)
    assert not problems, "\n\n".join(f"{name}:\n{problem}" for name, problem in problems.items())


def test_the_check_rejects_what_terraform_fmt_rewrites() -> None:
    """The check fails where terraform fmt -check would: misaligned `=` (the bug `setup gcp` had),
    a wrongly indented line, an interpolation-only string, a legacy quoted type."""
    canonical = 'resource "a" "b" {\n  x    = 1\n  name = "n"\n  map = {\n    k = "v"\n  }\n}\n'
    bad = {
        "aligned across a multi-line value": canonical.replace("  map = {", "  map  = {"),
        "indent": canonical.replace('    k = "v"', '   k = "v"'),
        "interpolation only": canonical.replace('name = "n"', 'name = "${var.n}"'),
        "legacy type": 'variable "v" {\n  type = "string"\n}\n',
    }
    problems = terraform_fmt_problems({"canonical": canonical, **bad})
    assert set(problems) == set(bad)
