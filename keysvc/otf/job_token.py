"""What keysvc can tell about a job token on its own, before anything goes to otfd.

A job token is an HS256 JWT otfd signs with its `--secret` (internal/runner/tokens.go,
internal/tokens/tokens.go): `sub` is the job's id (`job-` and base58), `exp` an hour after the
job started, `iat`. keysvc cannot check the signature (the secret also signs user sessions, so
keysvc never holds it): otfd does, when keysvc forwards the token. What keysvc checks first is
what makes it no oracle for other tokens: only a token that names the job of the URL and has not
expired by its own `exp` is ever sent to otfd. A user's or an agent's token, or a job token
replayed for another job, is refused here.
"""

from __future__ import annotations

import re

import orjson

from keysvc import jose

JOB_ID = re.compile(r"job-[1-9A-HJ-NP-Za-km-z]{1,64}")
"""An OTF job id: the kind, a hyphen and base58 (internal/resource/tfe_id.go)."""


class TokenRefused(Exception):
    """`status` 401 for a token that is no (live) token at all, 403 for one that is not this
    job's; `code` and `detail` for the error reply."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def bearer(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    if not authorization or authorization[:7].lower() != "bearer ":
        raise TokenRefused(
            401, "missing_job_token", "send the job token: Authorization: Bearer <job token>"
        )
    token = authorization[7:].strip()
    if not token:
        raise TokenRefused(401, "missing_job_token", "the bearer token is empty")
    return token


def check(token: str, job_id: str, now: float) -> None:
    """Refuse `token` unless it is an unexpired JWT whose `sub` is `job_id`, an OTF job id.

    The messages quote nothing from the token or the URL."""
    claims = _claims(token)
    if claims.get("sub") != job_id:
        raise TokenRefused(
            403, "job_token_mismatch", "the bearer token is not the job token of the job in the URL"
        )
    if not JOB_ID.fullmatch(job_id):
        raise TokenRefused(403, "not_a_job_token", "the bearer token is not an OTF job token")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenRefused(401, "invalid_job_token", "the job token has no numeric exp claim")
    if exp <= now:
        raise TokenRefused(401, "job_token_expired", "the job token has expired")


def _claims(token: str) -> dict[str, object]:
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRefused(401, "invalid_job_token", "the bearer token is not a JWT")
    try:
        header = orjson.loads(jose.b64url_decode(parts[0]))
        claims = orjson.loads(jose.b64url_decode(parts[1]))
    except (ValueError, TypeError):  # bad base64 or JSON (orjson's error is a ValueError)
        raise TokenRefused(401, "invalid_job_token", "the bearer token is not a JWT") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        raise TokenRefused(
            401, "invalid_job_token", "the bearer token is not an OTF job token (HS256 JWT)"
        )
    return claims
