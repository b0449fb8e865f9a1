"""Turning `--config` and otfd-style flags into a validated Config."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from keysvc.config import ALL_SCOPES, Config, ConfigError, merge, parse_config, read_config_file

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
