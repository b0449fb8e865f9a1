"""A faithful local stand-in for Microsoft Entra ID's v2.0 endpoints, enough for
azure-identity (MSAL) to complete a client-credentials grant with a federated client assertion:
tenant discovery (`/{tenant}/v2.0/.well-known/openid-configuration`) and the token endpoint.

It checks what Entra checks of a federated credential: the assertion's signature against the
issuer's JWKS, RS256 only, `aud` = `api://AzureADTokenExchange`, and a known client id."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web

from tests.fakes.federation import Rejected, verify_token

AUDIENCE = "api://AzureADTokenExchange"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class EntraId:
    jwks_url: str
    client_ids: set[str]
    base_url: str = ""  # https://127.0.0.1:PORT, set once the server listens
    grants: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self.discovery)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self.token)
        return app

    async def discovery(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        base = f"{self.base_url}/{tenant}"
        return web.json_response(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "tenant_region_scope": None,
            }
        )

    @staticmethod
    def error(code: str, description: str) -> web.Response:
        return web.json_response({"error": code, "error_description": description}, status=400)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return self.error("unsupported_grant_type", "client_credentials only")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return self.error("invalid_request", "a federated client assertion is required")
        if form.get("client_id") not in self.client_ids:
            return self.error("unauthorized_client", "AADSTS700016: application not found")
        assertion = str(form.get("client_assertion", ""))
        if jwt.get_unverified_header(assertion).get("alg") != "RS256":
            return self.error("invalid_client", "AADSTS5002738: only RS256 is supported")
        try:
            claims = await verify_token(self.jwks_url, assertion, AUDIENCE)
        except Rejected as exc:
            return self.error("invalid_client", f"AADSTS700211: {exc}")
        self.grants.append(
            {
                "claims": claims,
                "client_id": form["client_id"],
                "tenant": request.match_info["tenant"],
                "scope": form.get("scope"),
            }
        )
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": "entra-" + secrets.token_urlsafe(16),
            }
        )
