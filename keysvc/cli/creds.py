"""`keysvc creds apply|clean`: the run side on the command line, for runners that shell out.

Only `keysvc.creds` (standard library HTTP) is loaded here: no backend, key ring or key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import click

from keysvc.cli.common import CLIError, echo_json, json_option
from keysvc.creds import CredsError, Run, TokenClient, apply, clean
from keysvc.creds.apply import EnvFile
from keysvc.creds.output import FORMATS
from keysvc.run_identity import PHASES, Phase

workdir_option = click.option(
    "--workdir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The run's Terraform working directory (the same for plan and apply).",
)


@click.group()
def creds() -> None:
    """Write a run's cloud credentials from its TFC_* variables, and remove them after."""


@creds.command("apply")
@click.option("--url", required=True, help="keysvc base URL, e.g. https://keysvc.example.com.")
@click.option(
    "--token-file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="File holding the client token (scope tokens:issue); must be mode 0600.",
)
@workdir_option
@click.option("--organization", required=True)
@click.option("--workspace", required=True)
@click.option("--workspace-id", required=True)
@click.option("--run-id", required=True)
@click.option("--phase", required=True, type=click.Choice(PHASES))
@click.option(
    "--format",
    "output_format",
    type=click.Choice(sorted(FORMATS)),
    default="dotenv",
    show_default=True,
    help="How to print the variables the run must set.",
)
@click.option(
    "--env-file",
    metavar="FILE",
    help="Write the variables to this file directly inside WORKDIR (mode 0600; `creds clean`"
    " removes it) instead of printing them: they hold tokens.",
)
@json_option
def apply_command(
    url: str,
    token_file: Path,
    workdir: Path,
    organization: str,
    workspace: str,
    workspace_id: str,
    run_id: str,
    phase: str,
    output_format: str,
    env_file: str | None,
    as_json: bool,
) -> None:
    """Get one token per enabled provider configuration from keysvc, write the credential
    files into WORKDIR (mode 0600) and print the variables the run must set.

    Reads the TFC_* variables (TFC_AWS_PROVIDER_AUTH, TFC_GCP_..., TFC_AZURE_...,
    TFC_VAULT_..., TFC_KUBERNETES_..., TFC_WORKLOAD_IDENTITY_AUDIENCE...) from the
    environment. A bad value is an error and nothing is written. `--json` is `--format json`.
    With --env-file the variables go to that file (0600, removed by `clean`), not to stdout."""
    run = Run(organization, workspace, workspace_id, run_id, cast(Phase, phase))
    render = FORMATS["json" if as_json else output_format]
    try:
        variables = None if env_file is None else EnvFile.inside(workdir, env_file, render)
        client = TokenClient.from_token_file(url, token_file)
        result = apply(dict(os.environ), run, workdir, client, env_file=variables)
    except CredsError as exc:
        raise CLIError(str(exc)) from None
    if variables is None:
        click.echo(render(result.env), nl=False)


@creds.command("clean")
@workdir_option
@json_option
def clean_command(workdir: Path, as_json: bool) -> None:
    """Remove every file `keysvc creds apply` wrote in WORKDIR (and revoke its Vault tokens).
    Nothing else is touched; with nothing to remove this succeeds. Quiet unless `--json`.

    Vault tokens are revoked at the Vault the TFC_VAULT_* variables of this environment name
    (give clean the run's variables, as apply had them), never at an address found in WORKDIR:
    the run can rewrite WORKDIR, so an edited manifest can only make clean remove or revoke
    less (with a warning), and clean follows no symlink and opens no FIFO or device there."""
    try:
        removed = clean(workdir, dict(os.environ))
    except CredsError as exc:
        raise CLIError(str(exc)) from None
    if as_json:
        echo_json({"removed": [str(path) for path in removed]})
