"""`keysvc publish --to DIR|s3://BUCKET[/PREFIX]|gs://BUCKET[/PREFIX] [--watch]`: static copies of the documents."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from keysvc import logs
from keysvc.cli.common import CLIError, config_option, echo_json, json_option
from keysvc.cli.loading import load, otfd_options
from keysvc.cli.params import DURATION
from keysvc.durations import format_duration
from keysvc.publish.publisher import Publication, Publisher
from keysvc.publish.targets import PublishError, parse_target
from keysvc.service import local_ring


@click.command()
@config_option
@otfd_options
@click.option(
    "--to",
    "to",
    required=True,
    metavar="DIR|s3://BUCKET[/PREFIX]|gs://BUCKET[/PREFIX]",
    help="Where to write .well-known/openid-configuration and .well-known/jwks.",
)
@click.option("--watch", is_flag=True, help="Keep publishing as keys rotate (until stopped).")
@click.option(
    "--interval",
    type=DURATION,
    help="How often --watch re-reads the backends (default: rotation.refresh_interval).",
)
@click.option(
    "--s3-endpoint-url", envvar="AWS_ENDPOINT_URL_S3", help="S3 endpoint (S3-compatible stores)."
)
@click.option("--s3-region", help="S3 region (default: the AWS configuration's).")
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Write a JWKS even when the backends list no key (refused by default).",
)
@json_option
def publish(
    config_path: Path | None,
    otfd_flags: dict[str, Any],
    to: str,
    watch: bool,
    interval: timedelta | None,
    s3_endpoint_url: str | None,
    s3_region: str | None,
    allow_empty: bool,
    as_json: bool,
) -> None:
    """Write the discovery document and JWKS exactly as the service serves them (same bytes and
    Cache-Control), atomically. With --watch, a new key is published as soon as a backend has
    it, a full publish lead before it may sign; a retired key drops out when the service drops it.

    A JWKS with no keys is never written unless --allow-empty: without it, publish exits 2 and
    --watch waits for a key. A backend that lists nothing after listing keys is a fault: --watch
    keeps publishing its last good keys. In a directory, a symlinked .well-known or document is
    refused, never followed.
    """
    config, _ = load(config_path, **otfd_flags)
    rotation = config.rotation
    every = interval or rotation.refresh_interval
    if every <= timedelta(0):
        raise CLIError("--interval must be positive")
    if watch and every + rotation.jwks_max_age >= rotation.publish_lead:
        raise CLIError(
            f"--interval {format_duration(every)} + jwks_max_age"
            f" {format_duration(rotation.jwks_max_age)} must be shorter than publish_lead"
            f" {format_duration(rotation.publish_lead)}, or a verifier could meet a key's first"
            " token before the published copy has the key"
        )
    try:
        target = parse_target(to, endpoint_url=s3_endpoint_url, region=s3_region)
    except PublishError as exc:
        raise CLIError(str(exc)) from None

    def report(publication: Publication) -> None:
        if as_json:
            click.echo(json.dumps(publication.to_json(), separators=(",", ":")))
        else:
            click.echo(publication.summary())

    async def run() -> Publication | None:
        async with local_ring(config) as ring:
            publisher = Publisher(
                ring, config.issuer, rotation.jwks_max_age, target, allow_empty=allow_empty
            )
            if not watch:
                return await publisher.publish()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            # Signal handlers exist only on the main thread (elsewhere Ctrl-C still ends the
            # watch through KeyboardInterrupt).
            if threading.current_thread() is threading.main_thread():
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(signum, stop.set)
            await publisher.watch(every.total_seconds(), stop, report)
            return None

    if watch:
        logs.configure(config.log_level)
    try:
        publication = asyncio.run(run())
    except PublishError as exc:
        raise CLIError(str(exc)) from None
    if publication is not None:
        if as_json:
            echo_json(publication.to_json())
        else:
            report(publication)
