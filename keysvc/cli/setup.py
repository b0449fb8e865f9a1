"""`keysvc setup aws|gcp|azure`: print the cloud-side Terraform that trusts keysvc's tokens.

HCP Terraform's published examples match subjects with a `project:` segment that OTF's tokens do
not carry; these commands write the trust for OTF's own subject
`organization:<org>:workspace:<ws>:run_phase:<phase>` so it works the first time, or for the
service's own `tokens.subject_format` (`--subject-format`, or `--config`) when it has another.
The issuer is `--issuer`, or the `issuer` of the service's config (`--config`).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from keysvc import http_fetch
from keysvc.cli.common import CLIError, json_option
from keysvc.cli.loading import service_settings_options
from keysvc.cloudsetup import SetupError, SetupRequest, SetupResult
from keysvc.cloudsetup import aws as aws_setup
from keysvc.cloudsetup import azure as azure_setup
from keysvc.cloudsetup import gcp as gcp_setup
from keysvc.issuer_url import InvalidIssuer, IssuerURL
from keysvc.loopback import is_loopback_url
from keysvc.run_identity import PHASES


def _request_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options every cloud shares and hand the command one validated `request`."""

    @functools.wraps(command)
    def wrapper(
        issuer: str,
        organization: str,
        workspaces: tuple[str, ...],
        phase: str | None,
        audience: str | None,
        name: str,
        subject_format: str,
        workspace_id: str | None,
        **kwargs: Any,
    ) -> Any:
        try:
            request = SetupRequest(
                issuer=IssuerURL.parse(issuer),
                organization=organization,
                workspaces=workspaces,
                phase=phase,
                audience=audience,
                name=name,
                subject_format=subject_format,
                workspace_id=workspace_id,
            )
        except (InvalidIssuer, SetupError) as exc:
            raise CLIError(str(exc)) from None
        return command(request=request, **kwargs)

    options = [
        service_settings_options("issuer", "subject_format"),
        click.option("--organization", required=True, help="OTF organization whose runs to trust."),
        click.option(
            "--workspace",
            "workspaces",
            multiple=True,
            help="Workspace name, or a glob with * and ? (AWS, GCP); repeatable."
            " Default: every workspace.",
        ),
        click.option(
            "--phase",
            type=click.Choice(PHASES),
            help="Trust only this run phase (default: plan and apply).",
        ),
        click.option(
            "--workspace-id",
            help="The id of the one --workspace, for a subject format with {workspace_id}"
            " (AWS writes * without it, Azure needs it); GCP's condition checks it too.",
        ),
        click.option("--audience", help="Token audience (default: the cloud's OTF default)."),
        click.option(
            "--name",
            default="keysvc",
            show_default=True,
            help="Terraform local name of the generated resources.",
        ),
        json_option,
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _emit(build: Callable[[], SetupResult], as_json: bool) -> None:
    try:
        result = build()
    except SetupError as exc:
        raise CLIError(str(exc)) from None
    for warning in result.warnings:
        click.echo(f"keysvc: warning: {warning}", err=True)
    document = result.document
    click.echo(document.to_json() if as_json else document.to_hcl(), nl=False)


@click.group()
def setup() -> None:
    """Print Terraform for the cloud side of the trust (HCL; Terraform JSON with --json).

    Save the output as a .tf file (or .tf.json with --json) and apply it with credentials for
    the cloud account; `keysvc doctor` then checks the result."""


@setup.command("aws")
@_request_options
@click.option("--role-name", help="IAM role name (default: otf-<organization>).")
@click.option(
    "--existing-provider",
    is_flag=True,
    help="Refer to the account's existing OIDC provider for the issuer instead of creating one.",
)
def aws(
    request: SetupRequest, as_json: bool, role_name: str | None, existing_provider: bool
) -> None:
    """IAM OIDC provider and a role whose trust policy admits the runs."""
    _emit(
        lambda: aws_setup.generate(
            request, role_name=role_name, existing_provider=existing_provider
        ),
        as_json,
    )


def _read_jwks(source: str, ca_file: Path | None) -> Any:
    """A JWKS from a file, `-` (stdin) or an https URL (http only on the loopback interface)."""
    if source.startswith(("https://", "http://")):
        if source.startswith("http://") and not is_loopback_url(source):
            raise CLIError(f"--jwks {source}: fetch the JWKS over https")
        try:
            return http_fetch.fetch_json(source, ca_file)
        except http_fetch.FetchError as exc:
            raise CLIError(f"--jwks: {exc}") from None
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise CLIError(f"--jwks {source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--jwks {source} is not JSON: {exc}") from None


@setup.command("gcp")
@_request_options
@click.option("--pool-id", default="keysvc", show_default=True, help="Workload identity pool id.")
@click.option("--provider-id", default="keysvc-oidc", show_default=True, help="Pool provider id.")
@click.option(
    "--service-account-id",
    default="otf-terraform-runs",
    show_default=True,
    help="Account id of the service account the runs impersonate.",
)
@click.option("--project", help="GCP project id (default: the provider's project).")
@click.option(
    "--jwks",
    "jwks_source",
    metavar="FILE|URL|-",
    help="Upload this JWKS inline (jwks_json) instead of letting GCP fetch it, e.g. the output"
    " of `keysvc jwks --for gcp`. It must then be re-applied after every rotation.",
)
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="CA bundle to trust when fetching --jwks from a URL.",
)
def gcp(
    request: SetupRequest,
    as_json: bool,
    pool_id: str,
    provider_id: str,
    service_account_id: str,
    project: str | None,
    jwks_source: str | None,
    ca_file: Path | None,
) -> None:
    """Workload identity pool, OIDC provider and service-account binding."""
    jwks = _read_jwks(jwks_source, ca_file) if jwks_source else None
    _emit(
        lambda: gcp_setup.generate(
            request,
            pool_id=pool_id,
            provider_id=provider_id,
            service_account_id=service_account_id,
            project=project,
            jwks=jwks,
        ),
        as_json,
    )


@setup.command("azure")
@_request_options
@click.option("--display-name", help="Entra application name (default: otf-<organization>).")
def azure(request: SetupRequest, as_json: bool, display_name: str | None) -> None:
    """Entra application, service principal and one federated credential per workspace phase."""
    _emit(lambda: azure_setup.generate(request, display_name=display_name), as_json)
