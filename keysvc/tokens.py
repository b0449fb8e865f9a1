"""Minting tokens: otfd's run claims, the service-owned claims, and the compact JWS.

The hot path is deliberately plain (a dict, json.dumps, base64): it runs once per token, and the
protected header of each key is precomputed by the ring.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from keysvc import jose
from keysvc.backends.base import BackendUnavailable
from keysvc.clouds import ACCEPTED_ALGORITHMS, DEFAULT_AUDIENCE, Cloud
from keysvc.config import TokensConfig
from keysvc.exact_json import INT_RANGE, NOT_FINITE, TOO_BIG, Inexact
from keysvc.keyring import KeyRing, RingKey
from keysvc.run_identity import NAME_PROBLEM, NAME_RULE, Phase
from keysvc.run_identity import run_claims as _run_claims

AUDIENCE_PATTERN = r"^[^\x00-\x1f]*[^\x00-\x1f\s][^\x00-\x1f]*$"
"""Printable text with something besides whitespace: no C0 control characters."""
PATTERN_MESSAGES = {
    NAME_RULE: NAME_PROBLEM,
    AUDIENCE_PATTERN: "must be non-empty printable text",
}
"""What a field that fails one of the patterns above is told (pydantic only names the regex)."""
RESERVED_CLAIMS = frozenset({"iss", "iat", "nbf", "exp", "jti"})
"""Claims the service owns on /v1/sign: a request that sets one, in any letter case, is refused
(Go's encoding/json matches keys without regard to case, so a Go verifier would read `ISS`)."""
AZURE_AUDIENCE = DEFAULT_AUDIENCE[Cloud.AZURE]
AZURE_ALGORITHMS = ACCEPTED_ALGORITHMS[Cloud.AZURE]
MAX_CLAIM_DEPTH = 32
"""How deeply claim values may nest (objects and arrays)."""


class RequestError(ValueError):
    """A request the service refuses (400), with a snake_case code for the error body."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NoSigningKey(BackendUnavailable):
    """The ring has no key that may sign: the backends answer but hold no usable key version
    (none created yet, every one revoked, or the key file refused). Not a backend outage."""


Name = Annotated[str, Field(min_length=1, max_length=255, pattern=NAME_RULE)]
def _a_number(value: Any) -> Any:
    """Before pydantic's lax int, which would also take the text "60" and true."""
    if isinstance(value, (str, bytes, bool)):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


Seconds = Annotated[int, BeforeValidator(_a_number)]
"""A whole number of seconds: `60`, or `60.0` (the same JSON number, and an integer to JSON
Schema, which the OpenAPI document uses); not `"60"`, `true` or `60.5`."""
Audience = Annotated[str, Field(min_length=1, max_length=1024, pattern=AUDIENCE_PATTERN)]


class TokenRequest(BaseModel):
    """What `POST /v1/tokens` takes: a run (run_identity.Run's fields, with its name rule and
    phases) and the audience.

    The checks are pydantic constraints, run in pydantic-core (Rust): validators written in
    Python cost as much again per token, and so would building a Run per token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    organization: Name
    workspace: Name
    workspace_id: Name
    run_id: Name
    run_phase: Phase
    audience: Audience
    ttl_seconds: Seconds | None = None


def _json_faithful(value: Any, where: str, depth: int = 0) -> None:
    """Refuse what would not survive into the token unchanged: numbers the body's reader
    (keysvc.exact_json) marked Inexact, NaN and infinities (JSON has none), integers beyond 64
    bits (verifiers read them inexactly, if at all), text that is not Unicode (a lone surrogate
    from a `\ud800` escape), and nesting deeper than MAX_CLAIM_DEPTH."""
    if isinstance(value, Inexact):
        raise ValueError(f"{where} {value.problem}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} {NOT_FINITE.problem}")
    elif isinstance(value, int):
        if value not in INT_RANGE:
            raise ValueError(f"{where} {TOO_BIG.problem}")
    elif isinstance(value, str):
        _unicode(value, where)
    elif isinstance(value, (dict, list)):
        if depth >= MAX_CLAIM_DEPTH:
            raise ValueError(f"{where} nests deeper than {MAX_CLAIM_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                _unicode(key, where)
                _json_faithful(item, f"{where}.{key}", depth + 1)
            else:
                _json_faithful(item, f"{where}[{key}]", depth + 1)


def _unicode(text: str, where: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{where} holds text that is not Unicode (a lone surrogate)") from None


class SignRequest(BaseModel):
    """What `POST /v1/sign` takes: free-form claims under the service's own time claims."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    claims: dict[str, Any]
    ttl_seconds: Seconds | None = None

    @field_validator("claims")
    @classmethod
    def _faithful(cls, claims: dict[str, Any]) -> dict[str, Any]:
        for key, value in claims.items():
            _unicode(key, "a claim name")
            _json_faithful(value, key)
        return claims


def new_jti() -> str:
    """A random (version 4) UUID as text: what str(uuid.uuid4()) gives, for half the time."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""RFC 9562 variant bits (10xx) in the first digit of the fourth group."""


@dataclass(slots=True)
class IssuedToken:
    token: str
    kid: str
    alg: str
    expires_at: int
    jti: str
    claims: dict[str, Any]
    backend: str

    def reply(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "kid": self.kid,
            "alg": self.alg,
            # Same text as datetime.fromtimestamp(t, UTC).isoformat() with "Z", for a
            # fraction of the cost (whole seconds; years 1000-9999).
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires_at)),
        }


class TokenIssuer:
    """Builds claims and signs them with the ring's current signer."""

    def __init__(self, ring: KeyRing, issuer: str, config: TokensConfig) -> None:
        self.ring = ring
        self.issuer = issuer
        self.config = config
        self._default_ttl = int(config.default_ttl.total_seconds())
        self._max_ttl = int(config.max_ttl.total_seconds())
        self._subject_format = config.subject_format

    def ttl(self, requested: int | None) -> int:
        if requested is None:
            return self._default_ttl
        if requested < 1:
            raise RequestError("invalid_ttl", "ttl_seconds must be a positive number of seconds")
        if requested > self._max_ttl:
            shown = requested if requested < 10**12 else "beyond 10^12"
            raise RequestError(
                "ttl_too_long", f"ttl_seconds {shown} exceeds max_ttl ({self._max_ttl}s)"
            )
        return requested

    def run_claims(self, run: TokenRequest) -> dict[str, Any]:
        """otfd's claims for a run, from the definition `keysvc setup` and `keysvc doctor` use
        (run_identity.run_claims), so the trust they write and check matches the tokens."""
        return _run_claims(
            self._subject_format,
            run.organization,
            run.workspace,
            run.workspace_id,
            run.run_id,
            run.run_phase,
            run.audience,
        )

    def signer(self) -> RingKey:
        key = self.ring.view().signer
        if key is None:
            if self.ring.problems():  # a backend down, refused or with an unsafe key file
                raise BackendUnavailable(
                    "no key can sign: a key backend has a problem (/readyz says which)",
                    retry_after=5,
                )
            raise NoSigningKey(
                "no key can sign: the key backends hold no usable key version", retry_after=5
            )
        return key

    async def issue_for_run(self, run: TokenRequest) -> IssuedToken:
        ttl = self.ttl(run.ttl_seconds)
        key = self.signer()
        if run.audience == AZURE_AUDIENCE and key.alg.value not in AZURE_ALGORITHMS:
            # Azure would refuse the token anyway; say why here instead of in the run's log.
            raise RequestError(
                "algorithm_not_accepted",
                f"Azure accepts only {', '.join(sorted(AZURE_ALGORITHMS))} tokens, but the signing "
                f"key {key.kid} uses {key.alg.value}: sign with an RSA key for Azure runs",
            )
        return await self.issue(self.run_claims(run), ttl, key)

    async def issue_claims(self, request: SignRequest) -> IssuedToken:
        folded = {name.casefold() for name in request.claims}
        reserved = sorted(RESERVED_CLAIMS & folded)
        if reserved:
            raise RequestError(
                "reserved_claim",
                f"claim {reserved[0]!r} (in any letter case) is set by the service and cannot be"
                " given",
            )
        if len(folded) != len(request.claims):
            # {"sub": "a", "SUB": "b"}: a Go verifier reads the last of them as `sub`, others the
            # first: one token, two meanings.
            raise RequestError(
                "ambiguous_claims", "two claim names differ only in letter case"
            )
        return await self.issue(dict(request.claims), self.ttl(request.ttl_seconds))

    async def issue(
        self, claims: dict[str, Any], ttl: int, key: RingKey | None = None
    ) -> IssuedToken:
        key = key or self.signer()
        now = int(time.time())
        jti = new_jti()
        payload = {"iss": self.issuer, **claims, "iat": now, "nbf": now, "exp": now + ttl, "jti": jti}
        message = jose.signing_input(key.header_b64, payload)
        signature = await self.ring.sign(key, message)
        return IssuedToken(
            token=jose.compact(message, signature),
            kid=key.kid,
            alg=key.alg.value,
            expires_at=now + ttl,
            jti=jti,
            claims=payload,
            backend=key.backend_name,
        )
