"""A test-only credential: hands the Azure SDK a fixed bearer token the fake vault accepts.

azure-identity's real credentials are exercised against the fake's token endpoint in their own
tests; this one lets the other tests pick a token's permissions directly."""

from __future__ import annotations

import time
from typing import Any, Self

from azure.core.credentials import AccessToken


class StaticTokenCredential:
    """An AsyncTokenCredential (the protocol the aio Key Vault clients take)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == ("https://vault.azure.net/.default",), scopes
        self.requests += 1
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None
