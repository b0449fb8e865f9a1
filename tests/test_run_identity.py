"""What a token says about its run (keysvc.run_identity): names, subject formats and patterns.
The claims themselves are checked against minted tokens in tests/operations/test_doctor_trust.py
and tests/test_api.py."""

from __future__ import annotations

import pytest

from keysvc import run_identity
from keysvc.config import DEFAULT_SUBJECT_FORMAT
from keysvc.run_identity import InvalidRunName, check_name


@pytest.mark.parametrize("name", ["acme", "ws-1", "a.b_c", "A9"])
def test_a_valid_name_is_returned_as_it_is(name: str) -> None:
    assert check_name("workspace", name) == name
    assert check_name("workspace", name, pattern=True) == name


@pytest.mark.parametrize("name", ["a:b", "a b", "a*", "", "ws\n", "é"])
def test_a_name_outside_the_alphabet_is_refused_and_quoted(name: str) -> None:
    with pytest.raises(InvalidRunName) as refused:
        check_name("organization", name)
    assert str(refused.value) == (
        f"organization {name!r} may only contain letters, digits, '.', '_', '-'"
    )


def test_a_pattern_may_also_hold_the_wildcards() -> None:
    assert check_name("workspace", "net-*", pattern=True) == "net-*"
    assert check_name("workspace", "n?t", pattern=True) == "n?t"
    with pytest.raises(InvalidRunName) as refused:
        check_name("workspace", "net:*", pattern=True)
    assert str(refused.value) == (
        "workspace 'net:*' may only contain letters, digits, '.', '_', '-' and the wildcards * ?"
    )


@pytest.mark.parametrize(
    ("pattern", "wildcard"),
    [("net", False), ("net-*", True), ("n?t", True), ("*", True), ("?*", True), ("", False)],
)
def test_is_wildcard(pattern: str, wildcard: bool) -> None:
    assert run_identity.is_wildcard(pattern) is wildcard


def test_subject_fields_and_literal() -> None:
    assert run_identity.subject_fields(DEFAULT_SUBJECT_FORMAT) == {
        "organization", "workspace", "run_phase"
    }
    assert run_identity.subject_literal(DEFAULT_SUBJECT_FORMAT) == (
        "organization::workspace::run_phase:"
    )
    assert run_identity.subject_literal("{{org}}={organization}/{run_id}.") == "{org}=/."
    assert run_identity.subject_fields("{{org}}={organization}/{run_id}.") == {
        "organization", "run_id"
    }


def test_subject_and_full_workspace() -> None:
    assert run_identity.subject("acme", "net", "apply") == (
        "organization:acme:workspace:net:run_phase:apply"
    )
    assert run_identity.subject(
        "acme", "net", "plan", run_id="run-1", subject_format="{organization}/{run_id}/{workspace_id}"
    ) == "acme/run-1/*"
    assert run_identity.full_workspace("acme", "net") == "organization:acme:workspace:net"


def test_one_run_for_the_request_the_run_side_and_doctor() -> None:
    """/v1/tokens' body is a Run's fields (in order, with its phases and name rule) and the
    audience; the run side's request body is built from a Run; doctor's claims are a Run's."""
    from dataclasses import fields

    from pydantic import ValidationError

    from keysvc.tokens import TokenRequest

    run = run_identity.Run("acme", "web", "ws-1", "run-2", "apply")
    body = run.token_request("aud")
    assert list(body) == [*(f.name for f in fields(run_identity.Run)), "audience"]
    assert list(TokenRequest.model_fields)[: len(body)] == list(body)
    request = TokenRequest.model_validate(body)
    assert run_identity.Run(**request.model_dump(exclude={"audience", "ttl_seconds"})) == run
    identity = run_identity.RunIdentity("https://k.example.com", "aud", run)
    assert identity.claims() == {"iss": "https://k.example.com", **run.claims("aud")}
    assert identity.subject == run.subject() == "organization:acme:workspace:web:run_phase:apply"
    for phase in ("destroy", "Plan"):
        with pytest.raises(ValueError, match="run_phase must be plan or apply"):
            run_identity.Run("acme", "web", "ws-1", "run-2", phase)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            TokenRequest.model_validate({**body, "run_phase": phase})
    for name in ("a:b", "a b", "é", "ws\n"):
        assert not run_identity.NAME.fullmatch(name)
        with pytest.raises(ValidationError) as refused:
            TokenRequest.model_validate({**body, "workspace": name})
        assert refused.value.errors()[0]["ctx"]["pattern"] == run_identity.NAME_RULE
