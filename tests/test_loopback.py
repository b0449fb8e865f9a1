"""One loopback rule for every "only on loopback" check (keysvc/loopback.py says why)."""

from __future__ import annotations

import pytest

from keysvc.loopback import is_loopback_host, is_loopback_url


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST", "127.0.0.1", "127.0.0.2", "127.1.2.3", "127.255.255.254", "::1",
     "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1"],
)
def test_loopback(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host",
    [None, "", "localhost.example.com", "my.localhost", "128.0.0.1", "126.255.255.255",
     "10.0.0.1", "0.0.0.0", "::", "::ffff:10.0.0.1", "::2", "example.com", "127.0.0.1.nip.io"],
)
def test_not_loopback(host: str | None) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.2:8200", True),
        ("http://[::1]:8080/x", True),
        ("https://localhost", True),
        ("//127.0.0.1:9", True),  # an authority, as a gRPC endpoint is read
        ("http://[::1", False),  # unparseable
        ("http://user@10.0.0.1", False),
        ("http://127.0.0.1@example.com", False),  # user info, not the host
    ],
)
def test_urls(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback
