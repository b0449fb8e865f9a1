"""The issuer URL as the clouds read it.

AWS names its trust-policy condition keys after the issuer without its scheme
(`<host>[/<path>]:sub`), refuses a port or query, and every cloud needs https.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


class InvalidIssuer(ValueError):
    pass


@dataclass(frozen=True)
class IssuerURL:
    url: str

    @classmethod
    def parse(cls, value: str, *, require_https: bool = True) -> IssuerURL:
        """Parse and check an issuer: absolute https URL, no query, fragment or trailing slash."""
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise InvalidIssuer(f"issuer {value!r} is not a valid URL") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise InvalidIssuer(f"issuer {value!r} must be an absolute https:// URL")
        if require_https and parts.scheme != "https":
            raise InvalidIssuer(
                f"issuer {value!r} must use https: the clouds fetch keys over https"
            )
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise InvalidIssuer(f"issuer {value!r} must not have a query, fragment or user info")
        if value.endswith("/"):
            raise InvalidIssuer(
                f"issuer {value!r} must not end with '/': the token's iss has no trailing slash"
            )
        return cls(value)

    @property
    def host_and_path(self) -> str:
        """`example.com/path`: AWS's provider name and condition-key prefix."""
        return self.url.split("://", 1)[1]

    @property
    def has_port(self) -> bool:
        return urlsplit(self.url).port is not None

    @property
    def is_https(self) -> bool:
        return self.url.startswith("https://")

    @property
    def discovery_url(self) -> str:
        return self.url + "/.well-known/openid-configuration"

    @property
    def jwks_url(self) -> str:
        return self.url + "/.well-known/jwks"
