"""The `keysvc` command line.

Each command group lives in its own module and is imported only when used, so `keysvc creds`
inside a Terraform run never imports a key backend, and `--help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import click

from keysvc import __version__

# command name -> (module, attribute): loaded on first use
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("keysvc.cli.serve", "serve"),
    "init": ("keysvc.cli.init", "init"),
    "keys": ("keysvc.cli.keys", "keys"),
    "jwks": ("keysvc.cli.jwks", "jwks"),
    "token": ("keysvc.cli.token", "token"),
    "creds": ("keysvc.cli.creds", "creds"),
    "setup": ("keysvc.cli.setup", "setup"),
    "doctor": ("keysvc.cli.doctor", "doctor"),
    "publish": ("keysvc.cli.publish", "publish"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="keysvc")
def cli() -> None:
    """keysvc: signs short-lived OIDC tokens for Terraform runs, with rotating keys."""


def main() -> None:
    from keysvc.cli.common import run_cli

    sys.exit(run_cli(cli))
