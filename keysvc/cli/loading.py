"""Turning `--config` and otfd-style flags into a validated Config; and, for the operator tools
(setup, doctor), reading just the service settings they need from the same file."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from keysvc.cli.common import CLIError
from keysvc.cli.params import DURATION
from keysvc.config import (
    ALL_SCOPES,
    Config,
    ConfigError,
    SettingError,
    merge,
    parse_config,
    read_config_file,
    read_settings,
)
from keysvc.run_identity import DEFAULT_SUBJECT_FORMAT, check_subject_format

OTFD_BACKEND = "otfd"


def raw_config(
    config_path: Path | None,
    *,
    issuer: str | None = None,
    hostname: str | None = None,
    private_key_path: Path | None = None,
    public_key_path: Path | None = None,
    listen: str | None = None,
    host: str | None = None,
    metrics_port: int | None = None,
    workers: int | None = None,
    client_token_file: Path | None = None,
) -> dict[str, Any]:
    """The config mapping: the file (when given) with flags merged on top, flags winning."""
    data: dict[str, Any] = read_config_file(config_path) if config_path else {}
    flags: dict[str, Any] = {}
    if hostname:
        # otfd's tokens carry iss = https://<--hostname>: the same issuer from the same setting.
        from_hostname = f"https://{hostname}"
        if issuer and issuer != from_hostname:
            raise ConfigError(
                f"--issuer {issuer} and --hostname {hostname} (issuer {from_hostname}) disagree:"
                " give one"
            )
        issuer = from_hostname
    if issuer:
        flags["issuer"] = issuer
    server: dict[str, Any] = {}
    if host:
        server["host"] = host
    if listen:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--listen: expected HOST:PORT, got {listen!r}")
        server.update(host=host.strip("[]") or "0.0.0.0", port=int(port))
    if workers:
        server["workers"] = workers
    if metrics_port:
        server["metrics_port"] = metrics_port
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


OTFD_FLAGS = ("issuer", "hostname", "private_key_path", "public_key_path")


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
            "--hostname",
            envvar="OTF_HOSTNAME",
            help="otfd's --hostname: the issuer is then https://HOSTNAME, as otfd's tokens have it.",
        ),
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


# --- the service settings the operator tools need -------------------------------------------
#
# `keysvc setup` and `keysvc doctor` write or judge the cloud side of the trust, so they must
# assume what the service does: its issuer, the `sub` it spells, its publish lead and longest
# token. Each is a flag, else read from a copy of the service's config (--config) by the
# config's own reader (keysvc.config.read_settings), which reads only what holds those keys, so
# the tools work on a machine without the backends' libraries or key files.


def _checked_subject_format(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """--subject-format must be a format the service could mint (it describes the service)."""
    if value is None:
        return None
    try:
        return check_subject_format(value)
    except ValueError as exc:
        raise CLIError(f"--subject-format {value!r}: {exc}") from None


@dataclass(frozen=True)
class ServiceSetting:
    """A setting of the service's config that an operator tool also takes as a flag."""

    key: str
    """Its dotted key in the config file."""
    flag: str
    """Its flag; the command receives the setting under the flag's name (--max-ttl: max_ttl)."""
    flag_options: dict[str, Any]
    """The flag's click settings (help, type, ...); its value is None when not given."""
    default: Any = None
    """What the tool assumes with neither flag nor config (None: unknown)."""
    required: bool = False
    """Whether the command cannot do without it."""

    @property
    def name(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


SERVICE_SETTINGS = {
    setting.name: setting
    for setting in (
        ServiceSetting(
            key="issuer",
            flag="--issuer",
            flag_options={
                "metavar": "URL",
                "help": "keysvc's issuer URL, exactly as tokens carry it"
                " (default: --config's issuer).",
            },
            required=True,
        ),
        ServiceSetting(
            key="tokens.subject_format",
            flag="--subject-format",
            flag_options={
                "metavar": "FMT",
                "callback": _checked_subject_format,
                "help": "The service's tokens.subject_format (default: --config's, else OTF's).",
            },
            default=DEFAULT_SUBJECT_FORMAT,
        ),
        ServiceSetting(
            key="rotation.publish_lead",
            flag="--publish-lead",
            flag_options={
                "type": DURATION,
                "help": "The service's rotation.publish_lead (default: --config's, else"
                " /v1/keys' with --client-token-file).",
            },
        ),
        ServiceSetting(
            key="tokens.max_ttl",
            flag="--max-ttl",
            flag_options={
                "type": DURATION,
                "help": "The service's tokens.max_ttl (default: --config's).",
            },
        ),
    )
}
"""The service settings the operator tools need, by the name the commands receive them under."""


def read_service_settings(config_path: Path, names: list[str]) -> dict[str, Any]:
    """The named settings as the service would run with this config file (see
    keysvc.config.read_settings); a bad value is a CLIError naming the key and the file."""
    try:
        data = read_config_file(config_path)
        found = read_settings(data, [SERVICE_SETTINGS[name].key for name in names])
    except SettingError as exc:
        raise CLIError(f"{exc.key} in {config_path}: {exc.problem}") from None
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    return {name: found[SERVICE_SETTINGS[name].key] for name in names}


def resolve_service_settings(flags: dict[str, Any], config_path: Path | None) -> dict[str, Any]:
    """Each setting named in `flags` (which maps it to its flag's value, None when not given):
    the flag, else the config file's value, else the tool's default. The file is read only for
    what the flags leave open, as a flag wins anyway."""
    settings = dict(flags)
    open_names = [name for name, value in flags.items() if value is None]
    if config_path is not None and open_names:
        settings.update(read_service_settings(config_path, open_names))
    else:
        settings.update({name: SERVICE_SETTINGS[name].default for name in open_names})
    for name, value in settings.items():
        setting = SERVICE_SETTINGS[name]
        if value is None and setting.required:
            if config_path is None:
                raise CLIError(f"no {setting.key}: give {setting.flag} or --config (the service's)")
            raise CLIError(f"{config_path} has no {setting.key}: give {setting.flag}")
    return settings


def service_settings_options(
    *names: str,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The flags of the named service settings and `--config` (env KEYSVC_CONFIG), handed to the
    command as the resolved settings under their names (see resolve_service_settings)."""
    settings = [SERVICE_SETTINGS[name] for name in names]
    *others, last = [setting.key for setting in settings]
    keys = f"{', '.join(others)} and {last}" if others else last

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def with_settings(*args: Any, **kwargs: Any) -> Any:
            config_path = kwargs.pop("config_path")
            flags = {name: kwargs.pop(f"{name}_flag") for name in names}
            return command(*args, **resolve_service_settings(flags, config_path), **kwargs)

        options = [
            *(click.option(s.flag, f"{s.name}_flag", **s.flag_options) for s in settings),
            click.option(
                "--config",
                "config_path",
                type=click.Path(path_type=Path, dir_okay=False),
                envvar="KEYSVC_CONFIG",
                help=f"The service's TOML config (env KEYSVC_CONFIG), for what the flags leave"
                f" open: only {keys} (and the tables holding them) are read.",
            ),
        ]
        decorated: Callable[..., Any] = with_settings
        for option in reversed(options):
            decorated = option(decorated)
        return decorated

    return decorate
