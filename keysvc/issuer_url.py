"""The issuer URL as the clouds read it.

AWS names its trust-policy condition keys after the issuer without its scheme
(`<host>[/<path>]:sub`), refuses a port or query, and every cloud needs https.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from keysvc.config import check_issuer


class InvalidIssuer(ValueError):
    pass


@dataclass(frozen=True)
class IssuerURL:
    url: str

    @classmethod
    def parse(cls, value: str, *, require_https: bool = True) -> IssuerURL:
        """Parse and check an issuer by the service's own rule (config.check_issuer: a host,
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
