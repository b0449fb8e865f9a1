"""A faithful local stand-in for Google's Security Token Service (`POST /v1/token`, RFC 8693
token exchange) and IAM Credentials (`generateAccessToken`), enough for google-auth's
external_account (identity pool) credentials to complete a real exchange over HTTP.

It checks what Google checks of a federated token: signature against the issuer's JWKS, and
`aud` equal to the exchange's `audience` (the workload identity provider)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tests.fakes.federation import Rejected, verify_token

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


@dataclass
class GoogleSts:
    jwks_url: str
    exchanges: list[dict[str, Any]] = field(default_factory=list)  # verified claims + form
    impersonations: list[str] = field(default_factory=list)  # service account emails
    federated_tokens: set[str] = field(default_factory=set)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/token", self.token)
        app.router.add_post(
            "/v1/projects/-/serviceAccounts/{email}:generateAccessToken", self.impersonate
        )
        return app

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != TOKEN_EXCHANGE or form.get("subject_token_type") != JWT_TYPE:
            return web.json_response({"error": "invalid_request"}, status=400)
        audience = str(form.get("audience", ""))
        try:
            claims = await verify_token(self.jwks_url, str(form.get("subject_token", "")), audience)
        except Rejected as exc:
            return web.json_response(
                {"error": "invalid_grant", "error_description": str(exc)}, status=400
            )
        self.exchanges.append({"claims": claims, "form": dict(form)})
        access = "federated-" + secrets.token_urlsafe(16)
        self.federated_tokens.add(access)
        return web.json_response(
            {
                "access_token": access,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            }
        )

    async def impersonate(self, request: web.Request) -> web.Response:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in self.federated_tokens:
            return web.json_response(
                {"error": {"code": 401, "status": "UNAUTHENTICATED"}}, status=401
            )
        self.impersonations.append(request.match_info["email"])
        expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response(
            {"accessToken": "sa-" + secrets.token_urlsafe(16), "expireTime": expires}
        )
