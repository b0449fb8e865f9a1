"""What every federation endpoint (Google STS, Entra ID) does with a keysvc token: verify it
against the issuer's JWKS, fetched over HTTP as the cloud would, with PyJWT.

Async, because these fakes share an event loop with the keysvc service under test."""

from __future__ import annotations

from typing import Any

import aiohttp
import jwt


class Rejected(Exception):
    pass


async def verify_token(jwks_url: str, token: str, audience: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(jwks_url) as response:
        jwks = await response.json()
    try:
        kid = jwt.get_unverified_header(token)["kid"]
        key = jwt.PyJWKSet.from_dict(jwks)[kid]
        return jwt.decode(
            token,
            key.key,
            algorithms=[key.algorithm_name],
            audience=audience,
            options={"require": ["iss", "sub", "aud", "iat", "exp"]},
        )
    except (jwt.PyJWTError, KeyError) as exc:
        raise Rejected(str(exc)) from None
