"""`keysvc jwks`: the JWKS the service publishes now, computed locally."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from keysvc import jose
from keysvc.cli.common import config_option
from keysvc.cli.loading import load, otfd_options
from keysvc.service import local_ring

GCP_ALGORITHMS = frozenset({"RS256", "ES256"})


@click.command()
@config_option
@otfd_options
@click.option("--for", "target", type=click.Choice(["gcp"]),
              help="gcp: only keys Google accepts (RS256, ES256), for a provider's jwks_json.")
@click.option("--json", "as_json", is_flag=True, help="Accepted for symmetry; output is JSON.")
def jwks(
    config_path: Path | None,
    otfd_flags: dict[str, Any],
    target: str | None,
    as_json: bool,
) -> None:
    """Print the JWKS: kty, alg, use, kid and the public numbers only (never x5c/x5t)."""
    config, _ = load(config_path, **otfd_flags)

    async def run() -> list[dict[str, str]]:
        async with local_ring(config) as ring:
            return [k.jwk for k in ring.view().published]

    keys = asyncio.run(run())
    if target == "gcp":
        dropped = [k["kid"] for k in keys if k["alg"] not in GCP_ALGORITHMS]
        keys = [k for k in keys if k["alg"] in GCP_ALGORITHMS]
        for kid in dropped:
            click.echo(f"keysvc: warning: {kid} left out: Google accepts RS256 and ES256 only", err=True)
    click.echo(json.dumps(jose.jwks_document(keys), indent=None if target else 2))
