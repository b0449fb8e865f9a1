"""`keysvc serve`: run the HTTP service."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click

from keysvc import logs
from keysvc.cli.common import CLIError, config_option
from keysvc.cli.loading import load, otfd_options

log = logging.getLogger("keysvc.server")


@click.command()
@config_option
@otfd_options
@click.option("--listen", help="HOST:PORT to listen on (overrides [server]).")
@click.option(
    "--address",
    envvar="OTF_ADDRESS",
    help="otfd's --address, the same as --listen: HOST:PORT, or :PORT for every interface.",
)
@click.option(
    "--host",
    envvar="KEYSVC_HOST",
    help="Listen on this address, keeping [server].port (env KEYSVC_HOST; the container image"
    " sets 0.0.0.0). --listen and --address win over it.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve GET /metrics alone on this port too (overrides server.metrics_port).",
)
@click.option("--workers", type=click.IntRange(1, 64), help="Processes sharing the port.")
@click.option(
    "--client-token-file",
    type=click.Path(path_type=Path),
    help="Add a client with every scope whose bearer token is in this file (mode 0600).",
)
def serve(
    config_path: Path | None,
    otfd_flags: dict[str, Any],
    listen: str | None,
    address: str | None,
    host: str | None,
    metrics_port: int | None,
    workers: int | None,
    client_token_file: Path | None,
) -> None:
    """Serve discovery, JWKS and the token API.

    Works with a config file, or otfd-style: keysvc serve --issuer URL --private-key-path key.pem
    """
    from keysvc.server import serve as run
    from keysvc.service import Service

    if listen and address and listen != address:
        raise CLIError(f"--listen {listen} and --address {address} disagree: give one")

    config, data = load(
        config_path,
        **otfd_flags,
        listen=listen or address,
        host=host,
        metrics_port=metrics_port,
        workers=workers,
        client_token_file=client_token_file,
    )
    logs.configure(config.log_level)
    if config.server.workers > 1:
        # Check keys and client tokens once here so a bad one stops the start with exit 2
        # instead of N workers each failing on its own.
        async def preflight() -> None:
            service = Service(config)
            try:
                await service.start(refresh_loop=False)
            finally:
                await service.stop()

        asyncio.run(preflight())
    server = config.server
    scheme = "https" if server.tls_cert else "http"
    host = f"[{server.host}]" if ":" in server.host else server.host

    def announce() -> None:
        # One JSON log line like every other, with the facts as fields.
        log.info(
            "keysvc is serving",
            extra={
                "issuer": config.issuer,
                "listen": f"{scheme}://{host}:{server.port}",
                "workers": server.workers,
            },
        )

    raise SystemExit(run(config, data, ready=announce))
