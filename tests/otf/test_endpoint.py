"""OTF's runner endpoint through the real service and a fake otfd over real HTTP: the agent's
request as OTF's client writes it, every token verified with PyJWT against the served JWKS,
and every refusal."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
from multidict import CIMultiDict
from prometheus_client import REGISTRY

from tests.fakes.otfd import FakeOtfd, new_id
from tests.otf import agent
from tests.otf.conftest import keysvc_for
from tests.conftest import file_config
from tests.service import RunningService, free_port, start_service
from tests.verification import verify_once

AUDIENCE = "aws.workload.identity"
JSONAPI = "application/vnd.api+json"
GENERATE_TOKEN_CLAIMS = {
    "sub", "aud", "iat", "iss", "nbf", "exp",
    "terraform_organization_name", "terraform_workspace_name", "terraform_workspace_id",
    "terraform_full_workspace", "terraform_run_id", "terraform_run_phase",
}  # fmt: skip
"""What internal/dynamiccreds/token.go generateToken sets; keysvc adds `jti` (CONTRACT.md)."""


async def ask(url: str, job_id: str, token: str, audience: str = AUDIENCE) -> agent.Reply:
    return await asyncio.to_thread(agent.ask, url, job_id, token, audience)


async def post(
    svc: RunningService,
    job_id: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = b'{"audience":"aws.workload.identity"}',
    content_type: str = JSONAPI,
) -> tuple[int, Any, Any]:
    """Any request to the endpoint; (status, headers, parsed JSON body or raw bytes)."""
    send = CIMultiDict({"Content-Type": content_type})
    send.extend(headers or {})
    path = f"/otfapi/jobs/{job_id}/dynamic-credentials"
    async with svc.session.post(svc.url + path, data=body, headers=send) as reply:
        raw = await reply.read()
        try:
            parsed: Any = await reply.json(content_type=None)
        except ValueError:
            parsed = raw
        return reply.status, reply.headers.copy(), parsed


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(status: int, headers: Any, body: Any, expected: int, code: str) -> str:
    """The reply is tfeapi.Error's shape with `expected` status; returns the detail."""
    assert status == expected, body
    assert headers["Content-Type"] == JSONAPI
    (error,) = body["errors"]
    assert error["status"] == str(expected)
    assert error["code"] == code, error
    assert error["title"] and error["detail"]
    if expected == 401:
        assert headers["WWW-Authenticate"] == "Bearer"
    if expected == 503:
        assert int(headers["Retry-After"]) >= 1
    return error["detail"]


def otfd_paths(otfd: FakeOtfd) -> list[str]:
    return [f"{r.method} {r.path}" for r in otfd.requests]


# -- a well-behaved agent -------------------------------------------------------------------------


async def test_the_agents_request_gets_the_token_v1_tokens_would_mint(
    otfd: FakeOtfd, keysvc: RunningService
) -> None:
    job, token = otfd.running_job("acme", "networking", "apply")
    reply = await ask(keysvc.url, job.id, token)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    compact = reply.body.decode("ascii")
    assert compact.count(".") == 2 and compact.strip() == compact  # the raw JWT, nothing else

    claims = await verify_once(keysvc.url, compact, AUDIENCE)
    assert set(claims) == GENERATE_TOKEN_CLAIMS | {"jti"}
    assert claims["iss"] == keysvc.url
    assert claims["sub"] == "organization:acme:workspace:networking:run_phase:apply"
    assert claims["aud"] == AUDIENCE
    assert claims["nbf"] == claims["iat"] and claims["exp"] - claims["iat"] == 3600
    expected_terraform_claims = {
        "terraform_organization_name": "acme",
        "terraform_workspace_name": "networking",
        "terraform_workspace_id": job.workspace_id,
        "terraform_full_workspace": "organization:acme:workspace:networking",
        "terraform_run_id": job.run_id,
        "terraform_run_phase": "apply",
    }
    assert {k: claims[k] for k in expected_terraform_claims} == expected_terraform_claims
    kids = await keysvc.kids()
    header = jwt.get_unverified_header(compact)
    assert header["kid"] in kids and header["typ"] == "JWT"

    # The same run through /v1/tokens: the same claims but for the per-token ones.
    minted = await keysvc.issue(
        organization="acme",
        workspace="networking",
        workspace_id=job.workspace_id,
        run_id=job.run_id,
        run_phase="apply",
        audience=AUDIENCE,
    )
    same = await verify_once(keysvc.url, minted["token"], AUDIENCE)
    per_token = {"jti", "iat", "nbf", "exp"}
    assert {k: v for k, v in same.items() if k not in per_token} == {
        k: v for k, v in claims.items() if k not in per_token
    }
    assert minted["kid"] == header["kid"]

    # keysvc asked otfd for the job and its workspace, with the job's own token.
    assert otfd_paths(otfd) == [
        f"GET /otfapi/jobs/{job.id}",
        f"GET /api/v2/workspaces/{job.workspace_id}",
    ]
    assert all(r.headers["Authorization"] == f"Bearer {token}" for r in otfd.requests)


async def test_application_json_is_accepted_too(otfd: FakeOtfd, keysvc: RunningService) -> None:
    job, token = otfd.running_job()
    status, headers, body = await post(keysvc, job.id, headers=bearer(token), content_type="application/json")
    assert status == 200, body
    claims = await verify_once(keysvc.url, body.decode(), AUDIENCE)
    assert claims["terraform_run_phase"] == "plan"


async def test_unknown_fields_are_ignored_as_otfd_ignores_them(
    otfd: FakeOtfd, keysvc: RunningService
) -> None:
    job, token = otfd.running_job()
    body = b'{"audience":"api://AzureADTokenExchange","ttl_seconds":99999,"sub":"x"}'
    status, _, reply = await post(keysvc, job.id, headers=bearer(token), body=body)
    # Azure's audience with an ES256 key: refused as /v1/tokens refuses it (RS256 only).
    assert_refused(status, _, reply, 400, "algorithm_not_accepted")
    status, _, reply = await post(
        keysvc, job.id, headers=bearer(token), body=b'{"audience":"sts.amazonaws.com","ttl_seconds":99999}'
    )
    assert status == 200, reply
    claims = await verify_once(keysvc.url, reply.decode(), "sts.amazonaws.com")
    assert claims["exp"] - claims["iat"] == 3600  # default_ttl: the body sets no lifetime


async def test_tokens_are_counted_and_audited(
    otfd: FakeOtfd, keysvc: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    def count(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    job, token = otfd.running_job()
    before_jobs = count("keysvc_otfd_requests_total", operation="job", outcome="ok")
    with caplog.at_level(logging.INFO, logger="keysvc.audit"):
        reply = await ask(keysvc.url, job.id, token)
    assert reply.status == 200
    kid = jwt.get_unverified_header(reply.body.decode())["kid"]
    issued = count(
        "keysvc_tokens_issued_total", endpoint="otf", kid=kid, backend="local", outcome="issued"
    )
    assert issued >= 1
    assert count("keysvc_otfd_requests_total", operation="job", outcome="ok") == before_jobs + 1
    (line,) = [r for r in caplog.records if r.name == "keysvc.audit"]
    assert line.endpoint == "otf" and line.client == f"otf-job:{job.id}"  # type: ignore[attr-defined]


# -- refusals before anything reaches otfd -------------------------------------------------------


async def test_a_job_token_for_another_job_is_refused_before_otfd(
    otfd: FakeOtfd, keysvc: RunningService
) -> None:
    plan, plan_token = otfd.running_job()
    other, other_token = otfd.running_job()  # the same organization and workspace name
    assert_refused(*await post(keysvc, plan.id, headers=bearer(other_token)), 403, "job_token_mismatch")
    # Not even the apply job of the same run, with the plan job's token.
    apply = otfd.job(otfd.workspaces[plan.workspace_id], "apply", run_id=plan.run_id)
    otfd.start(apply)
    assert_refused(*await post(keysvc, apply.id, headers=bearer(plan_token)), 403, "job_token_mismatch")
    assert otfd.requests == []


async def test_an_expired_job_token_is_refused_before_otfd(
    otfd: FakeOtfd, keysvc: RunningService
) -> None:
    job, _ = otfd.running_job()
    expired = otfd.token(job.id, expiry=time.time() - 1)
    detail = assert_refused(*await post(keysvc, job.id, headers=bearer(expired)), 401, "job_token_expired")
    assert "expired" in detail
    no_exp = otfd.token(job.id, expiry=None)
    assert_refused(*await post(keysvc, job.id, headers=bearer(no_exp)), 401, "invalid_job_token")
    assert otfd.requests == []


async def test_a_users_token_is_refused_before_otfd(otfd: FakeOtfd, keysvc: RunningService) -> None:
    job, _ = otfd.running_job()
    user_token = otfd.user_token("acme")  # otfd itself would serve this user the job
    assert_refused(*await post(keysvc, job.id, headers=bearer(user_token)), 403, "job_token_mismatch")
    user_id = jwt.decode(user_token, options={"verify_signature": False})["sub"]
    assert_refused(*await post(keysvc, user_id, headers=bearer(user_token)), 403, "not_a_job_token")
    assert otfd.requests == []


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_job_token"),
        ("Basic dXNlcjpwYXNz", "missing_job_token"),
        ("Bearer ", "missing_job_token"),
        ("Bearer not-a-jwt", "invalid_job_token"),
        ("Bearer a.b.c", "invalid_job_token"),
        ("Bearer " + jwt.encode({"sub": "job-x", "exp": 9999999999}, "k" * 64, "HS512"), "invalid_job_token"),
    ],
)
async def test_no_job_token_is_401(
    otfd: FakeOtfd, keysvc: RunningService, authorization: str | None, code: str
) -> None:
    job, _ = otfd.running_job()
    headers = {} if authorization is None else {"Authorization": authorization}
    assert_refused(*await post(keysvc, job.id, headers=headers), 401, code)
    assert otfd.requests == []


async def test_two_authorization_headers_are_refused(
    otfd: FakeOtfd, keysvc: RunningService
) -> None:
    """Proxies and libraries disagree on which of two counts: neither does."""
    job, token = otfd.running_job()
    headers = CIMultiDict([("Authorization", f"Bearer {token}"), ("Authorization", "Bearer x")])
    assert_refused(*await post(keysvc, job.id, headers=headers), 400, "duplicate_header")
    assert otfd.requests == []


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{}", JSONAPI, 422, "invalid_request"),
        (b'{"audience":""}', JSONAPI, 422, "invalid_request"),
        (b'{"audience":"   "}', JSONAPI, 422, "invalid_request"),
        (b'{"audience":"a\\u0000b"}', JSONAPI, 422, "invalid_request"),
        (b'{"audience":5}', JSONAPI, 422, "invalid_request"),
        (b'{"audience":', JSONAPI, 422, "invalid_request"),
        (b'["aws.workload.identity"]', JSONAPI, 422, "invalid_request"),
        (b'{"audience":"aws.workload.identity"}', "text/plain", 415, "unsupported_media_type"),
    ],
)
async def test_a_body_without_a_usable_audience_is_refused(
    otfd: FakeOtfd,
    keysvc: RunningService,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    job, token = otfd.running_job()
    reply = await post(keysvc, job.id, headers=bearer(token), body=body, content_type=content_type)
    detail = assert_refused(*reply, status, code)
    if status == 422:
        assert "audience" in detail or "JSON object" in detail
    assert otfd.requests == []


async def test_a_body_over_the_limit_is_413(otfd: FakeOtfd, keysvc: RunningService) -> None:
    job, token = otfd.running_job()
    big = b'{"audience":"' + b"a" * 70_000 + b'"}'
    assert_refused(*await post(keysvc, job.id, headers=bearer(token), body=big), 413, "body_too_large")

    async def chunks():  # no Content-Length: the limit is met while reading
        yield b'{"audience":"'
        for _ in range(70):
            yield b"a" * 1000
        yield b'"}'

    reply = await post(keysvc, job.id, headers=bearer(token), body=chunks())  # type: ignore[arg-type]
    assert_refused(*reply, 413, "body_too_large")
    assert otfd.requests == []


# -- refusals otfd decides, or keysvc decides from otfd's answers ---------------------------------


async def test_a_token_otfd_does_not_accept_is_401(otfd: FakeOtfd, keysvc: RunningService) -> None:
    job, _ = otfd.running_job()
    forged = otfd.token(job.id, expiry=time.time() + 600, secret=b"s" * 32)  # not otfd's secret
    detail = assert_refused(*await post(keysvc, job.id, headers=bearer(forged)), 401, "otfd_refused_token")
    assert "otfd" in detail
    assert otfd_paths(otfd) == [f"GET /otfapi/jobs/{job.id}"]


async def test_a_job_otfd_no_longer_has_is_401(otfd: FakeOtfd, keysvc: RunningService) -> None:
    job, token = otfd.running_job()
    del otfd.jobs[job.id]  # otfd authenticates a job token by its job
    assert_refused(*await post(keysvc, job.id, headers=bearer(token)), 401, "otfd_refused_token")


@pytest.mark.parametrize("status", ["finished", "errored", "canceled"])
async def test_a_job_that_is_not_running_is_refused(
    otfd: FakeOtfd, keysvc: RunningService, status: str
) -> None:
    job, token = otfd.running_job()
    otfd.move(job, status)  # the token itself stays valid for its hour
    detail = assert_refused(*await post(keysvc, job.id, headers=bearer(token)), 403, "job_not_running")
    assert status in detail
    assert otfd_paths(otfd) == [f"GET /otfapi/jobs/{job.id}"]  # no workspace lookup


async def test_a_job_of_another_phase_is_refused(otfd: FakeOtfd, keysvc: RunningService) -> None:
    job, token = otfd.running_job()
    job.phase = "pending"
    assert_refused(*await post(keysvc, job.id, headers=bearer(token)), 403, "job_phase")


async def test_an_organization_outside_the_allowed_globs_is_refused(
    otfd: FakeOtfd, key_dir: Path
) -> None:
    async with keysvc_for(otfd.url, key_dir, {"organizations": ["acme", "team-*"]}) as svc:
        for organization in ("acme", "team-blue"):
            job, token = otfd.running_job(organization)
            assert (await ask(svc.url, job.id, token)).status == 200
        otfd.requests.clear()
        job, token = otfd.running_job("Acme")  # globs are case-sensitive, as OTF's names
        detail = assert_refused(
            *await post(svc, job.id, headers=bearer(token)), 403, "organization_forbidden"
        )
        assert "Acme" in detail
        assert otfd_paths(otfd) == [f"GET /otfapi/jobs/{job.id}"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("workspace", "net:work"),
        ("workspace", "networking:run_phase:apply"),
        ("workspace", "net work"),
        ("workspace", "networking\n"),
        ("organization", "acme:workspace:x"),
        ("run_id", "run-1:x"),
    ],
)
async def test_a_name_that_would_forge_a_sub_is_refused(
    otfd: FakeOtfd, keysvc: RunningService, field: str, value: str
) -> None:
    job, token = otfd.running_job()
    if field == "workspace":
        otfd.workspaces[job.workspace_id].name = value
    else:
        setattr(job, field, value)
        otfd.workspaces[job.workspace_id].organization = job.organization
    detail = assert_refused(*await post(keysvc, job.id, headers=bearer(token)), 403, "invalid_run_name")
    assert field.replace("_", " ") in detail and "':'" in detail


async def test_a_workspace_otfd_does_not_let_the_job_read_is_refused(
    otfd: FakeOtfd, keysvc: RunningService
) -> None:
    job, token = otfd.running_job("acme")
    foreign = otfd.workspace("globex", "networking")
    job.workspace_id = foreign.id  # otfd pointing the job at another organization's workspace
    assert_refused(*await post(keysvc, job.id, headers=bearer(token)), 403, "otfd_forbidden")
    job.workspace_id = new_id("ws")  # or at none
    assert_refused(*await post(keysvc, job.id, headers=bearer(token)), 404, "not_found")
    assert otfd_paths(otfd)[-1] == f"GET /api/v2/workspaces/{job.workspace_id}"


# -- otfd down, slow, or answering garbage: 503 + Retry-After --------------------------------------


async def test_otfd_unreachable_is_503(otfd: FakeOtfd, key_dir: Path) -> None:
    job, token = otfd.running_job()
    async with keysvc_for(f"http://127.0.0.1:{free_port()}", key_dir) as svc:
        detail = assert_refused(*await post(svc, job.id, headers=bearer(token)), 503, "otfd_unavailable")
        assert "could not be reached" in detail


@pytest.mark.parametrize(
    ("fault", "says"),
    [("hang", "did not answer within 1s"), ("garbage", "not a JSON:API"), ("reset", "closed the connection")],
)
async def test_otfd_slow_or_garbled_is_503(
    otfd: FakeOtfd, key_dir: Path, fault: str, says: str
) -> None:
    job, token = otfd.running_job()
    async with keysvc_for(otfd.url, key_dir, {"timeout": "1s"}) as svc:
        otfd.fault = fault
        detail = assert_refused(*await post(svc, job.id, headers=bearer(token)), 503, "otfd_unavailable")
        assert says in detail
        otfd.fault = None  # and the next request works again, on the same session
        assert (await ask(svc.url, job.id, token)).status == 200


async def test_otfd_answering_another_resource_is_503(otfd: FakeOtfd, keysvc: RunningService) -> None:
    job, token = otfd.running_job()
    otfd.fault = "other-resource"
    detail = assert_refused(*await post(keysvc, job.id, headers=bearer(token)), 503, "otfd_unavailable")
    assert f"not the JSON:API document of jobs {job.id}" in detail


# -- secrets and configuration ---------------------------------------------------------------------


async def test_the_job_token_never_reaches_a_log_line_or_a_reply(
    otfd: FakeOtfd, key_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    job, token = otfd.running_job()
    replies: list[bytes] = []
    async with keysvc_for(otfd.url, key_dir, {"timeout": "1s"}) as svc:
        for fault in (None, "garbage", "hang", "reset"):
            otfd.fault = fault
            reply = await ask(svc.url, job.id, token)
            replies.append(bytes(reply.headers) + reply.body)
        otfd.fault = None
        otfd.move(job, "finished")
        reply = await ask(svc.url, job.id, token)
        replies.append(bytes(reply.headers) + reply.body)
    async with keysvc_for(f"http://127.0.0.1:{free_port()}", key_dir) as svc:
        reply = await ask(svc.url, job.id, token)
        replies.append(bytes(reply.headers) + reply.body)
    assert len(replies) == 6 and b"errors" in replies[-1]
    signature = token.rsplit(".", 1)[1]
    for text in [*replies, *(r.getMessage().encode() for r in caplog.records)]:
        assert signature.encode() not in text
    for record in caplog.records:
        assert signature not in str(record.__dict__)


async def test_without_otf_the_path_is_unknown(key_dir: Path) -> None:
    async with start_service(file_config(key_dir)) as svc:
        status, _, body = await svc.request(
            "POST", "/otfapi/jobs/job-1/dynamic-credentials", json={"audience": "x"}
        )
        assert status == 404
        assert body == {"error": {"code": "not_found", "message": "no such endpoint"}}


async def test_other_methods_on_the_path_are_405(otfd: FakeOtfd, keysvc: RunningService) -> None:
    status, headers, _ = await keysvc.request("GET", "/otfapi/jobs/job-1/dynamic-credentials")
    assert status == 405 and headers["Allow"] == "POST"


async def test_the_otfd_session_lives_as_long_as_the_service(otfd: FakeOtfd, key_dir: Path) -> None:
    async with keysvc_for(otfd.url, key_dir) as svc:
        client = svc.service.otfd
        assert client is not None
        job, token = otfd.running_job()
        for _ in range(3):
            assert (await ask(svc.url, job.id, token)).status == 200
        session = client._session
        assert session is not None and not session.closed
    assert session.closed and client._session is None


# -- the workspace cache: the job is asked for every token, its workspace once per job -------------


def lookups(otfd: FakeOtfd) -> tuple[int, int]:
    jobs = sum(r.path.startswith("/otfapi/jobs/") for r in otfd.requests)
    return jobs, sum(r.path.startswith("/api/v2/workspaces/") for r in otfd.requests)


async def test_a_jobs_next_tokens_reuse_its_workspace_but_not_its_job(
    otfd: FakeOtfd, keysvc: RunningService
) -> None:
    job, token = otfd.running_job()
    for audience in ("sts.amazonaws.com", AUDIENCE, "//iam.googleapis.com/x"):
        reply = await ask(keysvc.url, job.id, token, audience)
        assert reply.status == 200, reply.body
        claims = await verify_once(keysvc.url, reply.body.decode(), audience)
        assert claims["terraform_workspace_name"] == "networking"
    assert lookups(otfd) == (3, 1)
    other, other_token = otfd.running_job()  # another job has its own lookup
    assert (await ask(keysvc.url, other.id, other_token)).status == 200
    assert lookups(otfd) == (4, 2)


@pytest.mark.parametrize("change", ["finished", "canceled", "gone", "organization", "otfd down"])
async def test_every_refusal_holds_for_a_job_whose_workspace_is_cached(
    otfd: FakeOtfd, key_dir: Path, change: str
) -> None:
    async with keysvc_for(otfd.url, key_dir, {"organizations": ["acme"], "timeout": "1s"}) as svc:
        job, token = otfd.running_job("acme")
        assert (await ask(svc.url, job.id, token)).status == 200  # the workspace is cached now
        expected = {
            "finished": (403, "job_not_running"),
            "canceled": (403, "job_not_running"),
            "gone": (401, "otfd_refused_token"),
            "organization": (403, "organization_forbidden"),
            "otfd down": (503, "otfd_unavailable"),
        }[change]
        if change in ("finished", "canceled"):
            otfd.move(job, change)
        elif change == "gone":
            del otfd.jobs[job.id]
        elif change == "organization":
            job.organization = "globex"
        else:
            otfd.fault = "hang"
        assert_refused(*await post(svc, job.id, headers=bearer(token)), *expected)


async def test_workspace_cache_off_asks_for_the_workspace_every_time(
    otfd: FakeOtfd, key_dir: Path
) -> None:
    async with keysvc_for(otfd.url, key_dir, {"workspace_cache": "0s"}) as svc:
        job, token = otfd.running_job()
        assert (await ask(svc.url, job.id, token)).status == 200
        otfd.workspaces[job.workspace_id].name = "renamed"
        reply = await ask(svc.url, job.id, token)
        claims = await verify_once(svc.url, reply.body.decode(), AUDIENCE)
        assert claims["terraform_workspace_name"] == "renamed"
        assert lookups(otfd) == (2, 2)


def test_the_cache_expires_is_bounded_and_holds_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from keysvc.otf import workspace_cache
    from keysvc.otf.otfd import Workspace

    cache = workspace_cache.WorkspaceCache(ttl=0.2)
    cache.put("token-a", Workspace("ws-1", "networking"))
    assert cache.get("token-a", "ws-1") == Workspace("ws-1", "networking")
    assert cache.get("token-b", "ws-1") is None and cache.get("token-a", "ws-2") is None
    assert "token-a" not in repr(cache._entries)
    time.sleep(0.3)
    assert cache.get("token-a", "ws-1") is None
    monkeypatch.setattr(workspace_cache, "MAX_ENTRIES", 3)
    for i in range(5):
        cache.put(f"token-{i}", Workspace(f"ws-{i}", "n"))
    assert len(cache._entries) == 3
    assert cache.get("token-0", "ws-0") is None and cache.get("token-4", "ws-4") is not None
    assert workspace_cache.WorkspaceCache(ttl=0).get("token-4", "ws-4") is None
