"""`keysvc init`: a ready-to-run development set-up (what `make run` calls)."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import click

from keysvc import keygen
from keysvc.backends.file import name_for
from keysvc.secrets import write_private_file

CONFIG_TEMPLATE = """\
# Development configuration written by `keysvc init`. See config/keysvc.example.toml for all settings.
issuer = "{issuer}"

[server]
host = "{host}"
port = {port}

[rotation]
# Short enough to watch a rotation happen: `keysvc keys rotate --config {config}`.
publish_lead = "2m"
jwks_max_age = "30s"
refresh_interval = "10s"

[[clients]]
name = "dev"
token_file = "{token_file}"
scopes = ["tokens:issue", "sign", "keys:read", "keys:rotate"]

[[backends]]
name = "local"
type = "file"
path = "{keys_dir}"
"""


@click.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path(".keysvc"),
              show_default=True)
@click.option("--issuer", default="http://127.0.0.1:8080", show_default=True)
@click.option("--key-type", type=click.Choice(keygen.KEY_TYPES), default="rsa-4096",
              show_default=True)
def init(directory: Path, issuer: str, key_type: str) -> None:
    """Create DIR with a key directory, a client token (0600) and a config, unless present."""
    from urllib.parse import urlsplit

    directory = directory.resolve()
    config = directory / "keysvc.toml"
    token_file = directory / "client-token"
    keys_dir = directory / "keys"
    created = not config.exists()
    if created:
        parts = urlsplit(issuer)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys_dir.mkdir(mode=0o700, exist_ok=True)
        key = keygen.generate(key_type)  # type: ignore[arg-type]
        write_private_file(keys_dir / name_for(datetime.now(UTC)), keygen.private_pem(key))
        write_private_file(token_file, (secrets.token_urlsafe(32) + "\n").encode())
        text = CONFIG_TEMPLATE.format(
            issuer=issuer, host=parts.hostname or "127.0.0.1", port=parts.port or 8080,
            config=os.path.relpath(config), token_file=token_file, keys_dir=keys_dir,
        )
        write_private_file(config, text.encode())
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
