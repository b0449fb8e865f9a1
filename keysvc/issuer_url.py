"""The issuer URL: the service's rule for it, and the URL as the clouds read it.

`check_issuer` is the one rule for the config's `issuer` and every command's `--issuer`.
AWS names its trust-policy condition keys after the issuer without its scheme
(`<host>[/<path>]:sub`), refuses a port or query, and every cloud needs https.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from keysvc.loopback import is_loopback_host

URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
"""The characters RFC 3986 allows in a URI: no spaces, controls, quotes or non-ASCII."""
_HOST = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def check_issuer(value: str, *, http_anywhere: bool = False) -> str:
    """The rule for the top-level `issuer` (the tokens' `iss`): an https URL (http only on the
    loopback host), with a host and no query, fragment or trailing slash. One definition for the
    config, `keysvc init`, and the operator tools (setup, doctor) through IssuerURL.parse.

    Verifiers compare `iss` as a string and append `/.well-known/...` to it, so the URL must
    read back exactly as written: no spaces or other characters a URL cannot hold, no `?` or
    `#` even when empty, no user name or password (they would travel in every token), a port
    only when it is a number from 1 to 65535.
    Raises ValueError with a message fit for one line (it never repeats the value, which could
    hold a password). `http_anywhere` accepts http on any host: for `keysvc doctor`, which
    judges an issuer (and reports http as a finding) rather than configures one."""
    if not URL_CHARACTERS.fullmatch(value):
        raise ValueError(
            "must be a URL of printable ASCII characters without spaces"
            " (write an international host name in its xn-- form)"
        )
    try:
        parts = urlsplit(value)
    except ValueError:  # a bracketed host that is no IPv6 address
        raise ValueError("is not a valid URL") from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    local = is_loopback_host(parts.hostname)
    if parts.scheme != "https" and not (parts.scheme == "http" and (local or http_anywhere)):
        raise ValueError(
            "must be an https URL (http only on loopback: localhost, 127.0.0.0/8, ::1)"
        )
    if not parts.hostname or "?" in value or "#" in value or value.endswith("/"):
        raise ValueError("must be a URL with a host, no query, fragment or trailing slash")
    if "@" in parts.netloc:
        raise ValueError("must not hold a user name or password: every token would carry it")
    if port == 0 or parts.netloc.endswith(":"):  # 0 also stands for a port out of range
        raise ValueError("has a port that is not a number from 1 to 65535")
    if not (_HOST.fullmatch(parts.hostname) or _is_ipv6_literal(parts.netloc, parts.hostname)):
        raise ValueError("has a host that is not a DNS name or IP address")
    if urlunsplit(parts) != value:
        raise ValueError(
            "does not read back as written (an upper-case scheme?): write it exactly as the"
            " tokens' iss should be"
        )
    return value


def _is_ipv6_literal(netloc: str, hostname: str) -> bool:
    if not netloc.startswith("["):
        return False
    try:
        ipaddress.IPv6Address(hostname)
    except ValueError:
        return False
    return True


class InvalidIssuer(ValueError):
    pass


@dataclass(frozen=True)
class IssuerURL:
    url: str

    @classmethod
    def parse(cls, value: str, *, require_https: bool = True) -> IssuerURL:
        """Parse and check an issuer by the service's own rule (check_issuer: a host,
        no query, fragment, user info or trailing slash, reads back as written), and https
        unless `require_https` is False (doctor judges http issuers too)."""
        try:
            check_issuer(value, http_anywhere=not require_https)
        except ValueError as exc:
            raise InvalidIssuer(f"issuer {exc}") from None
        if require_https and not value.startswith("https://"):
            raise InvalidIssuer("issuer must use https: the clouds fetch keys over https")
        return cls(value)

    @property
    def host_and_path(self) -> str:
        """`example.com/path`: AWS's provider name and condition-key prefix."""
        return self.url.split("://", 1)[1]

    @property
    def has_port(self) -> bool:
        return urlsplit(self.url).port is not None

    @property
    def is_loopback(self) -> bool:
        """On this machine: 127.0.0.1, ::1 or localhost (a development instance)."""
        return urlsplit(self.url).hostname in ("127.0.0.1", "::1", "localhost")

    @property
    def is_https(self) -> bool:
        return self.url.startswith("https://")

    @property
    def discovery_url(self) -> str:
        return self.url + "/.well-known/openid-configuration"

    @property
    def jwks_url(self) -> str:
        return self.url + "/.well-known/jwks"
