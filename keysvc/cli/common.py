"""What every command shares: one-line errors with exit 2, JSON output, config loading."""

from __future__ import annotations

import json
import os
import sys
from itertools import islice
from pathlib import Path
from typing import Any

import click

from keysvc.errors import BackendError, ConfigError


class CLIError(click.ClickException):
    """A one-line error: `keysvc: error: <message>` on stderr, exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"keysvc: error: {self.format_message()}", err=True)


def run_cli(group: click.Group, args: list[str] | None = None) -> int:
    """Run the CLI on `args` (default: sys.argv); known failures become one-line errors (exit
    2), never tracebacks."""
    try:
        group.main(args, standalone_mode=False, prog_name="keysvc")
    except click.exceptions.Abort:
        click.echo("keysvc: aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (ConfigError, BackendError, OSError) as exc:
        CLIError(one_line(exc)).show()
        return 2
    except KeyboardInterrupt:
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


def one_line(exc: BaseException) -> str:
    """An exception as one line of text (for `keysvc: error: ...`)."""
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="KEYSVC_CONFIG",
    help="TOML configuration file (env KEYSVC_CONFIG).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


class DashArgumentCommand(click.Command):
    """A command whose argument may begin with "-", as one kid in 64 does (base64url).

    click reads "-hX..." as the short-option cluster "-h X...", so "ignore_unknown_options" is not
    enough. Here only an exact option name (or "--name=value") is an option; anything else that
    begins with "-" is moved behind "--" and so becomes the argument."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value: dict[str, bool] = {}
        for param in self.get_params(ctx):
            if isinstance(param, click.Option):
                for name in (*param.opts, *param.secondary_opts):
                    takes_value[name] = not (param.is_flag or param.count)
        options: list[str] = []
        positional: list[str] = []
        items = iter(args)
        for arg in items:
            if arg == "--":
                positional.extend(items)
                break
            long_with_value = arg.startswith("--") and "=" in arg
            name = arg.split("=", 1)[0] if long_with_value else arg
            if name not in takes_value:
                positional.append(arg)
                continue
            options.append(arg)
            if takes_value[name] and not long_with_value:
                options.extend(islice(items, 1))
        return super().parse_args(ctx, [*options, "--", *positional])


def fail(message: str) -> CLIError:
    return CLIError(message)


def stderr_is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
