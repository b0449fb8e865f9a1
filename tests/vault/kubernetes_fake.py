"""A faithful fake of the one Kubernetes API call Vault's Kubernetes auth makes: TokenReview.

Like the real API server it acts as the service-account token issuer: it signs pod tokens with
its own key and, asked to review one, verifies signature, expiry and audience before answering
`authenticated: true` with the `system:serviceaccount:<ns>:<name>` user. Vault (the real OpenBao
server) is configured with `kubernetes_host` pointing here.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from tests.vault.local_http import LocalHTTPApp

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


class KubernetesAPI(LocalHTTPApp):
    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.reviews: list[dict[str, Any]] = []

    def service_account_token(self, namespace: str, name: str, audience: str = "vault") -> str:
        now = int(time.time())
        uid = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}.{name}"))
        claims = {
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "aud": [audience], "iat": now, "nbf": now, "exp": now + 3600,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        }
        return jwt.encode(claims, self._key, algorithm="ES256")

    async def _review(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.reviews.append(review)
        spec = review.get("spec", {})
        status: dict[str, Any] = {"authenticated": False}
        try:
            claims = jwt.decode(spec.get("token", ""), self._key.public_key(), algorithms=["ES256"],
                                audience=spec.get("audiences") or None,
                                options={"verify_aud": bool(spec.get("audiences"))})
        except jwt.PyJWTError as exc:
            status["error"] = f"invalid bearer token: {exc}"
        else:
            account = claims["kubernetes.io"]["serviceaccount"]
            status = {
                "authenticated": True,
                "user": {"username": claims["sub"], "uid": account["uid"],
                         "groups": ["system:serviceaccounts",
                                    f"system:serviceaccounts:{claims['kubernetes.io']['namespace']}"]},
                "audiences": claims["aud"],
            }
        return web.json_response({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                                  "metadata": {}, "spec": spec, "status": status}, status=201)

    def routes(self, app: web.Application) -> None:
        app.router.add_post(REVIEW_PATH, self._review)
