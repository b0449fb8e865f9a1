"""The two public documents verifiers fetch: OIDC discovery and the JWKS.

Both are built once per ring change as bytes with their cache metadata, so the service answers
a JWKS fetch with a dictionary lookup, and `keysvc publish` writes exactly the same bytes and
headers to a directory or bucket.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from keysvc import jose
from keysvc.keyring import RingView

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/jwks"

CLAIMS_SUPPORTED = (
    "sub",
    "aud",
    "exp",
    "iat",
    "iss",
    "jti",
    "nbf",
    "terraform_organization_name",
    "terraform_workspace_id",
    "terraform_workspace_name",
    "terraform_full_workspace",
    "terraform_run_id",
    "terraform_run_phase",
)


@dataclass(frozen=True)
class Document:
    body: bytes
    etag: str
    cache_control: str
    content_type: str = "application/json"


def etag_of(body: bytes) -> str:
    """The ETag (quoted) of a document's bytes: the same for the service and a static copy."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _document(data: Any, max_age: timedelta) -> Document:
    body = json.dumps(data, separators=(",", ":")).encode()
    return Document(body, etag_of(body), f"public, max-age={int(max_age.total_seconds())}")


def discovery_data(issuer: str, algorithms: list[str]) -> dict[str, Any]:
    """otfd's discovery fields; `jwks_uri` is the issuer plus the well-known path."""
    return {
        "issuer": issuer,
        "jwks_uri": issuer + JWKS_PATH,
        "id_token_signing_alg_values_supported": algorithms or ["RS256"],
        "response_types_supported": ["id_token"],
        "claims_supported": list(CLAIMS_SUPPORTED),
        "scopes_supported": ["openid"],
        "subject_types_supported": ["public"],
    }


@dataclass(frozen=True)
class PublicDocuments:
    discovery: Document
    jwks: Document

    @classmethod
    def build(cls, view: RingView, issuer: str, max_age: timedelta) -> PublicDocuments:
        keys = view.published
        algorithms = sorted({k.alg.value for k in keys})
        return cls(
            discovery=_document(discovery_data(issuer, algorithms), max_age),
            jwks=_document(jose.jwks_document([k.jwk for k in keys]), max_age),
        )
