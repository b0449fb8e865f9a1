"""`keysvc init`: a ready-to-run development set-up (what `make run` calls)."""

from __future__ import annotations

import contextlib
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import click

from keysvc import keygen
from keysvc.backends.file import name_for
from keysvc.cli.common import CLIError
from keysvc.issuer_url import check_issuer
from keysvc.secrets import write_private_file

CONFIG_TEMPLATE = """\
# Development configuration written by `keysvc init`. See config/keysvc.example.toml for all settings.
issuer = {issuer}

[server]
host = {host}
port = {port}

[rotation]
# Short enough to watch a rotation happen: keysvc keys rotate --config {config}
publish_lead = "2m"
jwks_max_age = "30s"
refresh_interval = "10s"

[[clients]]
name = "dev"
token_file = {token_file}
scopes = ["tokens:issue", "sign", "keys:read", "keys:rotate"]

[[backends]]
name = "local"
type = "file"
path = {keys_dir}
"""


def toml_string(value: str) -> str:
    """`value` as a TOML basic string: quoted, with the backslash, the quote and every control
    character (which TOML does not allow raw) escaped. Raises ValueError for a lone surrogate
    (a file name that is not valid UTF-8), which TOML cannot hold."""
    out = ['"']
    for char in value:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"{value!r} is not valid Unicode text")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _host_and_port(issuer: str) -> tuple[str, int]:
    """Where the service listens for `issuer`, after `check_issuer` accepted it."""
    parts = urlsplit(issuer)
    try:
        port = parts.port
    except ValueError:
        raise CLIError("--issuer: has a port that is not a number from 0 to 65535") from None
    return parts.hostname or "127.0.0.1", port or 8080


@click.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path(".keysvc"),
              show_default=True)
@click.option("--issuer", default="http://127.0.0.1:8080", show_default=True)
@click.option("--key-type", type=click.Choice(keygen.KEY_TYPES), default="rsa-4096",
              show_default=True)
def init(directory: Path, issuer: str, key_type: str) -> None:
    """Create DIR with a key directory, a client token (0600) and a config, unless present."""
    directory = directory.resolve()
    config = directory / "keysvc.toml"
    token_file = directory / "client-token"
    keys_dir = directory / "keys"
    created = not config.exists()
    if created:
        _create(directory, config, token_file, keys_dir, issuer, key_type)
    rel = os.path.relpath
    click.echo(f"keysvc: {'created' if created else 'using'} {rel(directory)}/: config "
               f"{rel(config)}, keys in {rel(keys_dir)}/, client token in {rel(token_file)}", err=True)
    click.echo(
        "keysvc: try:\n  curl -s -X POST "
        f"{issuer}/v1/tokens -H \"Authorization: Bearer $(cat {rel(token_file)})\" "
        "-H 'Content-Type: application/json' -d '{\"organization\":\"acme\",\"workspace\":"
        "\"networking\",\"workspace_id\":\"ws-123\",\"run_id\":\"run-456\",\"run_phase\":\"plan\","
        "\"audience\":\"aws.workload.identity\"}'\n"
        f"  curl -s {issuer}/.well-known/jwks",
        err=True,
    )


def _create(directory: Path, config: Path, token_file: Path, keys_dir: Path, issuer: str,
            key_type: str) -> None:
    """Validate everything, then write keys/KEY, client-token and keysvc.toml (last). On any
    failure remove what this call wrote, so a re-run starts from nothing."""
    try:
        check_issuer(issuer)
    except ValueError as exc:
        raise CLIError(f"--issuer: {exc}") from None  # not the value: it may hold a password
    host, port = _host_and_port(issuer)
    if token_file.exists() or token_file.is_symlink() or (
        keys_dir.is_dir() and any(keys_dir.iterdir())
    ):
        raise CLIError(
            f"{directory} holds {token_file.name} or keys but no {config.name}: an unfinished "
            "set-up; remove them (or restore the config) and run init again"
        )
    key_path = keys_dir / name_for(datetime.now(UTC))
    try:
        text = CONFIG_TEMPLATE.format(
            issuer=toml_string(issuer), host=toml_string(host), port=port,
            config=toml_string(os.path.relpath(config)), token_file=toml_string(str(token_file)),
            keys_dir=toml_string(str(keys_dir)),
        )
    except ValueError as exc:
        raise CLIError(f"cannot write {config}: {exc}") from None
    key = keygen.generate(key_type)  # type: ignore[arg-type]
    made: list[Path] = []  # directories this call created, outermost first
    written: list[Path] = []
    try:
        missing: list[Path] = []
        ancestor = directory
        while not (ancestor.exists() or ancestor.is_symlink()):  # `/` always exists
            missing.append(ancestor)
            ancestor = ancestor.parent
        for new_dir in reversed(missing):
            new_dir.mkdir(mode=0o700 if new_dir == directory else 0o777)
            made.append(new_dir)
        if not keys_dir.is_dir():
            keys_dir.mkdir(mode=0o700)
            made.append(keys_dir)
        write_private_file(key_path, keygen.private_pem(key))
        written.append(key_path)
        write_private_file(token_file, (secrets.token_urlsafe(32) + "\n").encode())
        written.append(token_file)
        write_private_file(config, text.encode())
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        for made_dir in reversed(made):
            with contextlib.suppress(OSError):
                made_dir.rmdir()
        raise

