"""TLS and mutual TLS from [server], with certificates from a throwaway CA."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme

from tests.conftest import file_config
from tests.service import RUN, start_service


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


async def test_https(ca: trustme.CA, key_dir: Path, tmp_path: Path) -> None:
    client = ssl.create_default_context()
    ca.configure_trust(client)
    config = {**file_config(key_dir), "server": tls_files(ca, tmp_path)}
    async with start_service(config, client_ssl=client) as svc:
        assert svc.url.startswith("https://")
        assert (await svc.issue())["token"]


async def test_mutual_tls(ca: trustme.CA, key_dir: Path, tmp_path: Path) -> None:
    files = tls_files(ca, tmp_path)
    config = {**file_config(key_dir), "server": {**files, "client_ca": str(tmp_path / "ca.crt")}}
    with_cert = ssl.create_default_context()
    ca.configure_trust(with_cert)
    ca.issue_cert("otfd.internal").configure_cert(with_cert)
    async with start_service(config, client_ssl=with_cert) as svc:
        assert (await svc.issue())["token"]
        without = ssl.create_default_context()
        ca.configure_trust(without)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.post(svc.url + "/v1/tokens", json=RUN, ssl=without) as r:
                    await r.read()
