"""Turning `--config` and otfd-style flags into a validated Config."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from keysvc.cli.common import CLIError
from keysvc.config import (
    ALL_SCOPES,
    DEFAULT_SUBJECT_FORMAT,
    Config,
    ConfigError,
    check_subject_format,
    merge,
    parse_config,
    read_config_file,
)

OTFD_BACKEND = "otfd"


def raw_config(
    config_path: Path | None,
    *,
    issuer: str | None = None,
    private_key_path: Path | None = None,
    public_key_path: Path | None = None,
    listen: str | None = None,
    workers: int | None = None,
    client_token_file: Path | None = None,
) -> dict[str, Any]:
    """The config mapping: the file (when given) with flags merged on top, flags winning."""
    data: dict[str, Any] = read_config_file(config_path) if config_path else {}
    flags: dict[str, Any] = {}
    if issuer:
        flags["issuer"] = issuer
    server: dict[str, Any] = {}
    if listen:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--listen: expected HOST:PORT, got {listen!r}")
        server.update(host=host.strip("[]") or "0.0.0.0", port=int(port))
    if workers:
        server["workers"] = workers
    if server:
        flags["server"] = server
    data = merge(data, flags)
    if public_key_path and not private_key_path:
        raise ConfigError("--public-key-path needs --private-key-path")
    if private_key_path:
        backend: dict[str, Any] = {
            "name": OTFD_BACKEND,
            "type": "file",
            "path": str(private_key_path),
        }
        if public_key_path:
            backend["public_key_path"] = str(public_key_path)
        others = [b for b in data.get("backends", []) if b.get("name") != OTFD_BACKEND]
        data["backends"] = [*others, backend]
    if client_token_file:
        client = {"name": "default", "token_file": str(client_token_file), "scopes": list(ALL_SCOPES)}
        data["clients"] = [*data.get("clients", []), client]
    if not data:
        raise ConfigError("no configuration: give --config (or KEYSVC_CONFIG) or otfd-style flags")
    return data


def load(config_path: Path | None, **flags: Any) -> tuple[Config, dict[str, Any]]:
    data = raw_config(config_path, **flags)
    return parse_config(data), data


OTFD_FLAGS = ("issuer", "private_key_path", "public_key_path")


def otfd_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The otfd-compatible flags (with otfd's environment variables), handed to the command
    together as one `otfd_flags` mapping to pass on to `load()`."""

    @functools.wraps(command)
    def with_flags(*args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in OTFD_FLAGS}
        return command(*args, otfd_flags=flags, **kwargs)

    options = [
        click.option("--issuer", envvar="KEYSVC_ISSUER", help="Issuer URL (https://<host>)."),
        click.option(
            "--private-key-path",
            type=click.Path(path_type=Path),
            envvar="OTF_PRIVATE_KEY_PATH",
            help="otfd's private key (PEM: PKCS#1, PKCS#8 or OpenSSH), or a directory of them.",
        ),
        click.option(
            "--public-key-path",
            type=click.Path(path_type=Path),
            envvar="OTF_PUBLIC_KEY_PATH",
            help="otfd's public key (PEM); must match the private key.",
        ),
    ]
    decorated: Callable[..., Any] = with_flags
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def resolve_subject_format(flag: str | None, config_path: Path | None) -> str:
    """The `sub` format the service uses: `--subject-format`, else `[tokens] subject_format` of
    the config file, else the default. Checked by the config's own rule; CLIError otherwise.

    Only that one key is read from the file, so the operator tools work from a copy of the
    service's config on a machine without its backends' libraries or key files."""
    if flag is not None:
        try:
            return check_subject_format(flag)
        except ValueError as exc:
            raise CLIError(f"--subject-format {flag!r}: {exc}") from None
    if config_path is None:
        return DEFAULT_SUBJECT_FORMAT
    try:
        tokens = read_config_file(config_path).get("tokens", {})
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    where = f"tokens.subject_format in {config_path}"
    if not isinstance(tokens, dict):
        raise CLIError(f"tokens in {config_path} must be a table")
    value = tokens.get("subject_format", DEFAULT_SUBJECT_FORMAT)
    if not isinstance(value, str):
        raise CLIError(f"{where} must be a string")
    try:
        return check_subject_format(value)
    except ValueError as exc:
        raise CLIError(f"{where}: {exc}") from None


def subject_format_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--subject-format` and `--config` (env KEYSVC_CONFIG), handed to the command as one
    checked `subject_format`: the tools that write or judge cloud trust must spell `sub` as
    the service does (see run_identity)."""

    @functools.wraps(command)
    def with_format(*args: Any, **kwargs: Any) -> Any:
        flag = kwargs.pop("subject_format_flag")
        config_path = kwargs.pop("config_path")
        return command(*args, subject_format=resolve_subject_format(flag, config_path), **kwargs)

    options = [
        click.option(
            "--subject-format",
            "subject_format_flag",
            metavar="FMT",
            help="The service's tokens.subject_format (default: --config's, else OTF's).",
        ),
        click.option(
            "--config",
            "config_path",
            type=click.Path(path_type=Path, dir_okay=False),
            envvar="KEYSVC_CONFIG",
            help="The service's TOML config: only tokens.subject_format is read"
            " (env KEYSVC_CONFIG).",
        ),
    ]
    decorated: Callable[..., Any] = with_format
    for option in reversed(options):
        decorated = option(decorated)
    return decorated
