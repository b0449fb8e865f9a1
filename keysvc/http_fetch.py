"""Fetching an issuer's public documents the way a cloud verifier does.

No redirects are followed and TLS is verified (against the system store, or a CA file for a
private test CA), bodies are capped, and every failure becomes a `FetchError` whose message says
what went wrong without a traceback.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

MAX_BODY_BYTES = 1024 * 1024
DEFAULT_TIMEOUT = 10.0


class FetchError(Exception):
    """The document could not be fetched; the message is safe to print."""


@dataclass(frozen=True)
class Fetched:
    url: str
    status: int
    headers: Mapping[str, str]
    """Case-insensitive, as HTTP header names are."""
    body: bytes
    elapsed: float
    """Seconds from sending the request to the last byte of the body."""

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FetchError(f"{self.url} did not answer with JSON: {exc}") from None


def ssl_context(ca_file: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise FetchError(f"cannot load CA file {ca_file}: {exc}") from None
    return context


def session(ca_file: Path | None = None, timeout: float = DEFAULT_TIMEOUT) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl_context(ca_file)),
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


async def fetch(
    client: aiohttp.ClientSession, url: str, headers: Mapping[str, str] | None = None
) -> Fetched:
    """GET `url` without following redirects."""
    started = time.monotonic()
    try:
        async with client.get(url, headers=headers, allow_redirects=False) as response:
            body = await response.content.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                raise FetchError(f"{url} answered more than {MAX_BODY_BYTES} bytes")
            return Fetched(
                url=url,
                status=response.status,
                headers=CIMultiDictProxy(CIMultiDict(response.headers)),
                body=body,
                elapsed=time.monotonic() - started,
            )
    except aiohttp.ClientConnectorCertificateError as exc:
        raise FetchError(f"{url}: TLS certificate not trusted ({exc.certificate_error})") from None
    except aiohttp.ClientSSLError as exc:
        raise FetchError(f"{url}: TLS handshake failed ({exc})") from None
    except aiohttp.ClientConnectorError as exc:
        raise FetchError(f"{url}: cannot connect ({exc.os_error.strerror or exc})") from None
    except TimeoutError:
        raise FetchError(f"{url}: no answer within {client.timeout.total:g} s") from None
    except aiohttp.ClientError as exc:
        raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None


def fetch_json(url: str, ca_file: Path | None = None, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Fetch one JSON document synchronously (for commands that need a single document)."""

    async def run() -> Any:
        async with session(ca_file, timeout) as client:
            fetched = await fetch(client, url)
        if fetched.status != 200:
            raise FetchError(f"{url} answered HTTP {fetched.status}")
        return fetched.json()

    return asyncio.run(run())
