"""The `[otf]` table: validation with the key named, TLS to otfd with `ca_file`, and the CLI's
one-line error for a bad table."""

from __future__ import annotations

import asyncio
import ssl
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from keysvc.config import ConfigError, parse_config
from tests.cli import assert_one_line_error, config_file, run
from tests.fakes.otfd import FakeOtfd
from tests.otf import agent
from tests.otf.conftest import keysvc_for
from tests.service import free_port


def with_otf(**otf: object) -> dict:
    return {
        "issuer": "https://otf.example.com",
        "backends": [{"name": "k", "type": "file", "path": "/keys"}],
        "otf": otf,
    }


def test_defaults() -> None:
    otf = parse_config(with_otf(url="https://otf.example.com/")).otf
    assert otf is not None
    assert otf.url == "https://otf.example.com"  # paths are appended to it
    assert otf.timeout == timedelta(seconds=10)
    assert otf.organizations == ["*"] and otf.ca_file is None and otf.allow_http is False
    assert otf.workspace_cache == timedelta(seconds=30)
    assert parse_config({k: v for k, v in with_otf().items() if k != "otf"}).otf is None


@pytest.mark.parametrize(
    "url",
    [
        "https://otf.example.com",
        "https://otf.example.com:8443/prefix",
        "http://127.0.0.1:8080",
        "http://127.3.4.5",
        "http://localhost:8080",
        "http://[::1]:8080",
    ],
)
def test_accepted_urls(url: str) -> None:
    assert parse_config(with_otf(url=url)).otf is not None


def test_plain_http_elsewhere_needs_allow_http() -> None:
    with pytest.raises(ConfigError, match=r"^otf: url must be https .*allow_http"):
        parse_config(with_otf(url="http://otfd.otf.svc.cluster.local"))
    otf = parse_config(with_otf(url="http://otfd.otf.svc.cluster.local", allow_http=True)).otf
    assert otf is not None and otf.url == "http://otfd.otf.svc.cluster.local"


@pytest.mark.parametrize(
    ("otf", "fragment"),
    [
        ({}, "otf.url: is required"),
        ({"url": "ftp://otf.example.com"}, "otf.url: must be an http(s) URL"),
        ({"url": "https://"}, "otf.url: must be an http(s) URL"),
        ({"url": "https://user:pw@otf.example.com"}, "otf.url: must not hold a user name"),
        ({"url": "https://otf.example.com?x=1"}, "otf.url: must not have a query"),
        ({"url": "https://otf.example.com#top"}, "otf.url: must not have a query"),
        ({"url": "https://otf example.com"}, "otf.url: must be a URL of printable ASCII"),
        ({"url": "https://otf.example.com:99999"}, "otf.url: is not a valid URL"),
        ({"url": "https://otf.example.com", "timeout": "0s"}, "otf.timeout: must be more than 0s"),
        ({"url": "https://otf.example.com", "timeout": "6m"}, "otf.timeout: must be more than 0s"),
        ({"url": "https://otf.example.com", "organizations": []}, "otf.organizations"),
        ({"url": "https://otf.example.com", "workspace_cache": "11m"}, "otf.workspace_cache"),
        ({"url": "https://otf.example.com", "secret": "x"}, "otf.secret"),
        ({"url": "https://otf.example.com", "ca_file": "/nonexistent/ca.pem"}, "does not exist"),
    ],
)
def test_refused(otf: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(with_otf(**otf))
    assert fragment in str(caught.value)


def test_a_ca_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^otf\.ca_file: .* cannot be read as PEM CA"):
        parse_config(with_otf(url="https://otf.example.com", ca_file=str(bad)))


def test_the_cli_refuses_a_bad_otf_table_in_one_line(tmp_path: Path, key_dir: Path) -> None:
    path = config_file(tmp_path, key_dir)
    path.write_text(path.read_text() + '[otf]\nurl = "http://otfd.internal:8080"\n')
    assert_one_line_error(run("serve", "--config", str(path)), "otf: url must be https")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_https_to_otfd_is_checked_against_ca_file(
    ca: trustme.CA, tmp_path: Path, key_dir: Path
) -> None:
    """A fake otfd behind TLS (a trustme CA): keysvc reaches it with the CA in ca_file, and
    refuses it (503, no token) with the system's CAs."""
    fake = FakeOtfd()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "otfd-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port = free_port()
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_context).start()
    url = f"https://127.0.0.1:{port}"
    job, token = fake.running_job()
    try:
        async with keysvc_for(url, key_dir, {"ca_file": str(ca_file)}) as svc:
            reply = await asyncio.to_thread(agent.ask, svc.url, job.id, token, "sts.amazonaws.com")
            assert reply.status == 200, reply.body
            assert len(fake.requests) == 2
        async with keysvc_for(url, key_dir) as svc:
            reply = await asyncio.to_thread(agent.ask, svc.url, job.id, token, "sts.amazonaws.com")
            assert reply.status == 503
            assert "TLS certificate was not accepted" in reply.json()["errors"][0]["detail"]
    finally:
        await runner.cleanup()


def test_the_example_configs_otf_table_is_valid() -> None:
    """config/keysvc.example.toml documents [otf] commented out: uncommented, it is accepted."""
    import tomllib

    from keysvc.config import read_config_file

    example = Path(__file__).resolve().parents[2] / "config" / "keysvc.example.toml"
    lines = example.read_text().splitlines()
    start = lines.index("# [otf]")
    end = lines.index("", start)
    uncommented = [line.removeprefix("# ") for line in lines[start:end]]
    # every setting but ca_file, whose example path does not exist here
    table = tomllib.loads("\n".join(line for line in uncommented if "ca_file" not in line))
    otf = parse_config({**read_config_file(example), **table}).otf
    assert otf is not None and otf.url == "https://otfd.internal:8080"
    assert otf.timeout == timedelta(seconds=10) and otf.organizations == ["*"]
