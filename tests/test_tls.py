"""TLS and mutual TLS from [server], with certificates from a throwaway CA."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import jwt
import pytest
import trustme

from tests.conftest import file_config
from tests.service import RUN, RunningService, start_service
from tests.verification import ALGORITHMS, REQUIRED_CLAIMS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(str(tmp_path / "tls.crt"), append=True)
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    return {"tls_cert": str(tmp_path / "tls.crt"), "tls_key": str(tmp_path / "tls.key")}


async def issue_and_verify(svc: RunningService) -> None:
    """Issue a token over the TLS connection and verify it with PyJWT against the JWKS the
    service served over that same connection (discovery's jwks_uri, an https URL)."""
    issued = await svc.issue()
    status, _, discovery = await svc.request("GET", "/.well-known/openid-configuration")
    assert status == 200 and discovery["jwks_uri"] == svc.url + "/.well-known/jwks"
    assert discovery["jwks_uri"].startswith("https://")
    (key,) = [k for k in (await svc.jwks())["keys"] if k["kid"] == issued["kid"]]
    claims = jwt.decode(
        issued["token"], jwt.PyJWK(key), algorithms=ALGORITHMS, audience=RUN["audience"],
        issuer=svc.url, options={"require": REQUIRED_CLAIMS},
    )
    assert claims["sub"] == "organization:acme:workspace:networking:run_phase:plan"


async def test_https(ca: trustme.CA, key_dir: Path, tmp_path: Path) -> None:
    client = ssl.create_default_context()
    ca.configure_trust(client)
    config = {**file_config(key_dir), "server": tls_files(ca, tmp_path)}
    async with start_service(config, client_ssl=client) as svc:
        assert svc.url.startswith("https://")
        await issue_and_verify(svc)


async def test_mutual_tls(ca: trustme.CA, key_dir: Path, tmp_path: Path) -> None:
    files = tls_files(ca, tmp_path)
    config = {**file_config(key_dir), "server": {**files, "client_ca": str(tmp_path / "ca.crt")}}
    with_cert = ssl.create_default_context()
    ca.configure_trust(with_cert)
    ca.issue_cert("otfd.internal").configure_cert(with_cert)
    async with start_service(config, client_ssl=with_cert) as svc:
        await issue_and_verify(svc)
        without = ssl.create_default_context()
        ca.configure_trust(without)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.post(svc.url + "/v1/tokens", json=RUN, ssl=without) as r:
                    await r.read()


async def test_a_tls_handshake_that_never_finishes_is_cut_at_header_timeout(
    ca: trustme.CA, key_dir: Path, tmp_path: Path
) -> None:
    """Half a ClientHello, then nothing: closed after server.header_timeout (asyncio's own
    handshake timeout is 60 s), while the connection cap cannot see it yet."""
    client = ssl.create_default_context()
    ca.configure_trust(client)
    config = {**file_config(key_dir),
              "server": {**tls_files(ca, tmp_path), "header_timeout": "1s"}}
    async with start_service(config, client_ssl=client) as svc:
        parts = urlsplit(svc.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
        async with asyncio.timeout(20):
            try:
                assert await reader.read() == b""
            except ConnectionResetError:
                pass
        writer.close()
        await issue_and_verify(svc)  # and the service still serves
