"""Bearer-token authentication (keysvc.auth) on its own: which `Authorization` header
authenticates which client, and how the presented token is compared with the configured digests.

The HTTP side (401 with WWW-Authenticate, 403 for a missing scope or organization) is in
tests/test_api.py."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from keysvc.auth import Authenticator
from keysvc.config import ClientConfig
from keysvc.errors import ConfigError


def client(name: str, token: str, organizations: tuple[str, ...] = ("*",)) -> ClientConfig:
    return ClientConfig(
        name=name,
        token_sha256=hashlib.sha256(token.encode()).hexdigest(),
        scopes=["tokens:issue"],
        organizations=list(organizations),
    )


CLIENTS = [client(f"client-{i}", f"token-{i}") for i in range(4)]


def name_of(authenticator: Authenticator, header: str | None) -> str | None:
    found = authenticator.authenticate(header)
    return None if found is None else found.name


@pytest.mark.parametrize(
    "header",
    ["Bearer token-2", "bearer token-2", "BEARER token-2", "Bearer token-2 ", "Bearer   token-2"],
)
def test_the_bearer_scheme_in_any_case_authenticates(header: str) -> None:
    assert name_of(Authenticator(CLIENTS), header) == "client-2"


@pytest.mark.parametrize(
    "header",
    [
        "Basic token-2",  # the right token under another scheme
        "Token token-2",
        "token-2",  # no scheme at all
        "Bearertoken-2",
        "Bearer\ttoken-2",
        "xBearer token-2",
        "Bearer token-22",
        "Bearer token",
        "Bearer",
        "",
        None,
    ],
)
def test_anything_but_a_bearer_header_with_a_known_token_is_refused(header: str | None) -> None:
    assert name_of(Authenticator(CLIENTS), header) is None


def test_an_empty_bearer_token_authenticates_no_one() -> None:
    """Not even a client configured with the digest of the empty string."""
    authenticator = Authenticator([*CLIENTS, client("empty", "")])
    for header in ("Bearer ", "Bearer    ", "bearer \t"):
        assert authenticator.authenticate(header) is None, repr(header)


def test_each_token_authenticates_its_own_client() -> None:
    authenticator = Authenticator(CLIENTS)
    for index, config in enumerate(CLIENTS):
        found = authenticator.authenticate(f"Bearer token-{index}")
        assert found is not None and found.name == config.name and found.config is config
        assert found.digest == hashlib.sha256(f"token-{index}".encode()).digest()
        assert found.scopes == frozenset({"tokens:issue"})


def test_every_client_digest_is_compared_in_constant_time_without_an_early_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timing must say nothing about which client, or how much of a digest, matched: the
    presented digest is compared with every client's, each time with hmac.compare_digest, even
    after a match. The comparisons are observed through hmac.compare_digest (which keysvc.auth
    calls through the hmac module), each delegated to the real one."""
    authenticator = Authenticator(CLIENTS)
    configured = sorted(c.token_digest() for c in CLIENTS)
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def observed(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", observed)
    # The first client (an early exit would stop there), the last, and no client at all.
    for token, expected in (("token-0", "client-0"), ("token-3", "client-3"), ("nope", None)):
        compared.clear()
        assert name_of(authenticator, f"Bearer {token}") == expected
        presented = hashlib.sha256(token.encode()).digest()
        assert all(presented in pair for pair in compared), token
        others = sorted(b if a == presented else a for a, b in compared)
        assert others == configured, f"{token}: {len(compared)} comparisons"


def test_two_clients_with_one_token_are_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        Authenticator([*CLIENTS, client("twin", "token-1")])
    assert str(refused.value) == (
        "clients 'client-1' and 'twin' have the same bearer token: give each client its own"
    )


def test_a_client_is_unrestricted_only_with_the_star_pattern() -> None:
    authenticator = Authenticator(
        [client("all", "a"), client("some", "s", ("acme", "acme-*")), client("both", "b", ("x", "*"))]
    )
    found = {name: authenticator.authenticate(f"Bearer {token}") for name, token in
             (("all", "a"), ("some", "s"), ("both", "b"))}
    assert {name: c.unrestricted for name, c in found.items() if c} == {
        "all": True, "some": False, "both": True
    }
    some = found["some"]
    assert some is not None
    assert [some.allows_organization(o) for o in ("acme", "acme-dev", "ACME", "Acme-dev", "other")] == [
        True, True, False, False, False
    ]
