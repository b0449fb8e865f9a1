"""What each cloud's token verifier accepts, in one place.

`keysvc setup` writes trust configurations that respect these limits and `keysvc doctor` checks a
running issuer against them, so both read the same facts (gathered in
docs/cloud-setup.md from the providers' documentation).
"""

from __future__ import annotations

import enum
from datetime import timedelta


class Cloud(str, enum.Enum):
    AWS = "aws"
    GCP = "gcp"
    AZURE = "azure"

    @property
    def title(self) -> str:
        return {"aws": "AWS", "gcp": "GCP", "azure": "Azure"}[self.value]


ALL_CLOUDS: tuple[Cloud, ...] = (Cloud.AWS, Cloud.GCP, Cloud.AZURE)

DEFAULT_AUDIENCE: dict[Cloud, str] = {
    Cloud.AWS: "aws.workload.identity",
    Cloud.AZURE: "api://AzureADTokenExchange",
}
"""The audience OTF asks for when the workspace sets none. GCP's default is the provider's own
resource name (`//iam.googleapis.com/projects/<n>/.../providers/<p>`), which setup cannot know."""

ACCEPTED_ALGORITHMS: dict[Cloud, frozenset[str]] = {
    # STS accepts RSA and, since November 2024, ECDSA signatures.
    Cloud.AWS: frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}),
    Cloud.GCP: frozenset({"RS256", "ES256"}),
    Cloud.AZURE: frozenset({"RS256"}),
}


def refusing(algorithm: str) -> list[Cloud]:
    """The clouds whose verifiers refuse tokens signed with `algorithm`."""
    return [cloud for cloud in ALL_CLOUDS if algorithm not in ACCEPTED_ALGORITHMS[cloud]]


def refusal_warning(kid: str, algorithm: str) -> str | None:
    """What an operator is told when a new key signs what some cloud refuses (None: all
    accept it): said when the key is made, not when a run fails."""
    clouds = refusing(algorithm)
    if not clouds:
        return None
    accepts = "; ".join(
        f"{c.title} accepts only {', '.join(sorted(ACCEPTED_ALGORITHMS[c]))}" for c in clouds
    )
    return (
        f"key {kid} signs {algorithm}, which {' and '.join(c.title for c in clouds)}"
        f" refuse{'s' if len(clouds) == 1 else ''} ({accepts}): sign runs for"
        f" {'that cloud' if len(clouds) == 1 else 'those clouds'} with an RSA key (RS256, which"
        " every cloud accepts)"
    )

MAX_TOKEN_LIFETIME: dict[Cloud, timedelta] = {
    Cloud.GCP: timedelta(hours=48),
    Cloud.AZURE: timedelta(hours=25),
}
GCP_RECOMMENDED_TOKEN_LIFETIME = timedelta(hours=6)
MAX_TTL = timedelta(hours=24)
"""The longest lifetime keysvc mints a token with (`tokens.max_ttl` at most): within every
limit above, so that no cloud refuses a token for living too long."""


def check_max_ttl(value: timedelta) -> timedelta:
    """The clouds' rule for `tokens.max_ttl` (whole seconds is the config's own): they refuse
    longer-lived tokens, so the service refuses to mint them. One definition for the config and
    for `keysvc doctor`, which judges the max_ttl it reads from the config."""
    if value > MAX_TTL:
        raise ValueError("above 24h is refused (Azure accepts at most 25h, GCP 48h)")
    return value


AWS_MAX_JWKS_KEYS = 100
"""Observed by users (not documented): STS stops finding keys in a JWKS of about 100 keys."""
JWKS_KEYS_WARNING = 50
AWS_JWKS_TIMEOUT_SECONDS = 5.0
"""STS gives up on a JWKS endpoint that takes longer than about 5 s to answer."""

AZURE_MAX_FEDERATED_CREDENTIALS = 20
AZURE_MAX_SUBJECT_CHARS = 600

GCP_MAX_SUBJECT_BYTES = 127
GCP_MAX_CONDITION_CHARS = 4096
GCP_MAX_AUDIENCES = 10
GCP_MAX_AUDIENCE_CHARS = 256
GCP_UPLOADED_JWK_FIELDS = ("kty", "alg", "use", "kid", "n", "e", "x", "y", "crv")
"""The only members an uploaded JWKS (`jwks_json`) may hold: `x5c`/`x5t` are refused."""

PRIVATE_JWK_FIELDS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
"""Members that only private (or symmetric) JWKs carry: never publish, print or upload them."""
