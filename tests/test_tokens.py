"""The token issuer on its own (keysvc.tokens): lifetimes, the claims the service owns, the
jti. The same rules through HTTP, with every token verified by PyJWT, are in tests/test_api.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from keysvc.backends.base import BackendUnavailable
from keysvc.config import TokensConfig
from keysvc.keyring import KeyRing, Lifecycle
from keysvc.tokens import (
    MAX_CLAIM_DEPTH,
    NoSigningKey,
    RequestError,
    SignRequest,
    TokenIssuer,
    new_jti,
)
from tests.plugin_backend import PluginBackend

LIFE = Lifecycle(
    publish_lead=timedelta(hours=24), jwks_max_age=timedelta(minutes=15), max_ttl=timedelta(minutes=10)
)


def issuer(backend: PluginBackend | None = None) -> TokenIssuer:
    ring = KeyRing([backend or PluginBackend()], LIFE)
    return TokenIssuer(ring, "https://keysvc.example", TokensConfig(default_ttl="1m", max_ttl="10m"))


def test_ttl_defaults_and_bounds() -> None:
    tokens = issuer()
    assert tokens.ttl(None) == 60
    assert [tokens.ttl(s) for s in (1, 599, 600)] == [1, 599, 600]
    for seconds in (0, -5):
        with pytest.raises(RequestError) as refused:
            tokens.ttl(seconds)
        assert (refused.value.code, str(refused.value)) == (
            "invalid_ttl", "ttl_seconds must be a positive number of seconds"
        )
    with pytest.raises(RequestError) as refused:
        tokens.ttl(601)
    assert (refused.value.code, str(refused.value)) == (
        "ttl_too_long", "ttl_seconds 601 exceeds max_ttl (600s)"
    )
    # A number too long to repeat in full is not (the reply stays short).
    for seconds, shown in ((10**12 - 1, str(10**12 - 1)), (10**12, "beyond 10^12"),
                           (10**30, "beyond 10^12")):
        with pytest.raises(RequestError) as refused:
            tokens.ttl(seconds)
        assert str(refused.value) == f"ttl_seconds {shown} exceeds max_ttl (600s)"


@pytest.mark.parametrize("ttl", ["60", b"60", True])
def test_ttl_seconds_is_a_number_not_text_or_a_boolean(ttl: object) -> None:
    with pytest.raises(ValidationError) as refused:
        SignRequest(claims={}, ttl_seconds=ttl)
    (error,) = refused.value.errors(include_url=False)
    assert (error["type"], error["msg"]) == ("int_type", "Input should be a valid integer")


async def test_no_signing_key_says_whether_a_backend_has_a_problem() -> None:
    backend = PluginBackend()
    tokens = issuer(backend)
    await tokens.ring.refresh(raise_errors=True)  # the backend holds no key version
    with pytest.raises(NoSigningKey) as none:
        tokens.signer()
    assert str(none.value) == "no key can sign: the key backends hold no usable key version"
    assert none.value.retry_after == 5
    backend.list_error = BackendUnavailable("down")
    await tokens.ring.refresh()
    with pytest.raises(BackendUnavailable) as unavailable:
        tokens.signer()
    assert not isinstance(unavailable.value, NoSigningKey)
    assert str(unavailable.value) == (
        "no key can sign: a key backend has a problem (/readyz says which)"
    )
    assert unavailable.value.retry_after == 5


@pytest.mark.parametrize(
    ("claims", "named"),
    [({"sub": "s", "jti": "x", "iss": "evil"}, "iss"), ({"NBF": 0}, "nbf"), ({"Exp": 1}, "exp")],
)
async def test_a_claim_the_service_owns_is_refused_by_name(claims: dict, named: str) -> None:
    backend = PluginBackend()
    backend.add(datetime.now(UTC) - timedelta(days=2))
    tokens = issuer(backend)
    await tokens.ring.refresh(raise_errors=True)
    with pytest.raises(RequestError) as refused:
        await tokens.issue_claims(SignRequest(claims=claims))
    assert (refused.value.code, str(refused.value)) == (
        "reserved_claim",
        f"claim {named!r} (in any letter case) is set by the service and cannot be given",
    )


def test_jti_is_a_random_version_4_uuid() -> None:
    """122 random bits: unique, and no digit follows from another (a jti must not be guessable)."""
    jtis = [new_jti() for _ in range(400)]
    assert len(set(jtis)) == 400
    for jti in jtis:
        parsed = uuid.UUID(jti)
        assert str(parsed) == jti and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # The variant digit carries two random bits of its own: they match the next digit's low two
    # bits a quarter of the time (about 100 of 400), not always.
    same = sum("89ab".index(j[19]) == int(j[20], 16) & 3 for j in jtis)
    assert same < 200, same


def refusal(claims: dict) -> str:
    """The message SignRequest refuses these claims with (what /v1/sign puts after 'claims: ')."""
    with pytest.raises(ValidationError) as refused:
        SignRequest(claims=claims)
    (error,) = refused.value.errors(include_url=False)
    return error["msg"].removeprefix("Value error, ")


def nested(levels: int) -> dict:
    """`levels` objects inside one another: {"a": {"a": ... {"a": 1}}}."""
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value  # type: ignore[return-value]


def test_claims_a_token_cannot_carry_faithfully_are_refused_by_path() -> None:
    """Values built in Python, as an embedding program passes them (the HTTP body's reader marks
    such numbers itself, see test_api)."""
    assert refusal({"n": {"x": [1, float("nan")]}}) == "n.x[1] is not a finite number"
    assert refusal({"n": [float("-inf")]}) == "n[0] is not a finite number"
    assert refusal({"n": {"big": 2**64}}) == "n.big is an integer beyond 64 bits"
    assert refusal({"n": {"\ud800": 1}}) == "n holds text that is not Unicode (a lone surrogate)"
    assert refusal({"\ud800": 1}) == "a claim name holds text that is not Unicode (a lone surrogate)"


def test_claims_nest_objects_up_to_the_limit() -> None:
    SignRequest(claims={"deep": nested(MAX_CLAIM_DEPTH)})  # accepted
    path = "deep" + ".a" * MAX_CLAIM_DEPTH
    assert refusal({"deep": nested(MAX_CLAIM_DEPTH + 1)}) == (
        f"{path} nests deeper than {MAX_CLAIM_DEPTH} levels"
    )


async def test_claim_names_that_differ_only_in_case_are_refused() -> None:
    backend = PluginBackend()
    backend.add(datetime.now(UTC) - timedelta(days=2))
    tokens = issuer(backend)
    await tokens.ring.refresh(raise_errors=True)
    with pytest.raises(RequestError) as refused:
        await tokens.issue_claims(SignRequest(claims={"sub": "a", "SUB": "b"}))
    assert (refused.value.code, str(refused.value)) == (
        "ambiguous_claims", "two claim names differ only in letter case"
    )
