"""Client authentication: bearer tokens checked against SHA-256 digests from the config.

The config never holds a plaintext token. Each presented token is hashed once and compared with
every client's digest in constant time (no early exit), so response timing says nothing about
which client, or how much of a digest, matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from keysvc.config import ClientConfig
from keysvc.errors import ConfigError


@dataclass(frozen=True)
class Client:
    name: str
    digest: bytes
    scopes: frozenset[str]
    config: ClientConfig

    def allows_organization(self, organization: str) -> bool:
        return self.config.allows_organization(organization)

    @property
    def unrestricted(self) -> bool:
        """True when the client may act for every organization (patterns include "*")."""
        return "*" in self.config.organizations


class Authenticator:
    def __init__(self, clients: Sequence[ClientConfig]) -> None:
        self.clients = [
            Client(c.name, c.token_digest(), frozenset(c.scopes), c) for c in clients
        ]
        # One token for two clients would act with whichever scopes and organizations the last
        # one has: refuse it rather than let the order of [[clients]] decide.
        seen: dict[bytes, str] = {}
        for client in self.clients:
            if client.digest in seen:
                raise ConfigError(
                    f"clients {seen[client.digest]!r} and {client.name!r} have the same bearer"
                    " token: give each client its own"
                )
            seen[client.digest] = client.name

    def authenticate(self, authorization: str | None) -> Client | None:
        """The client whose token this `Authorization` header carries, or None."""
        # The scheme is case-insensitive (RFC 9110 11.1): "bearer x" is the same as "Bearer x".
        if not authorization or authorization[:7].lower() != "bearer ":
            return None
        # aiohttp decodes header bytes as UTF-8 with surrogateescape: encoding back the same
        # way hashes exactly the bytes sent, and bytes that are not UTF-8 simply do not match.
        token = authorization[7:].strip().encode("utf-8", "surrogateescape")
        if not token:
            return None
        presented = hashlib.sha256(token).digest()
        found: Client | None = None
        for client in self.clients:
            if hmac.compare_digest(presented, client.digest):
                found = client
        return found
