"""A faithful local stand-in for otfd, the part keysvc's OTF runner endpoint talks to, over
real HTTP. Read from OTF's source (leg100/otf, a 2026 commit after v0.6.3; docs/otf.md lists the
files):

- Tokens (internal/tokens): HS256 JWTs signed with a secret only this fake holds (otfd's
  `--secret`); `sub` is a resource id `<kind>-<id>`. A job token (internal/runner/tokens.go) has
  `sub` = the job id, `iat`, and `exp` an hour after the job started; a user token has
  `sub` = `ut-…` and no `exp`.
- Authentication (internal/authn, internal/api/auth, internal/tokens/registry.go): on
  /otfapi/, /api/v2/ and /v1/modules/ a missing, malformed, badly signed or expired token, a
  token of an unknown kind, or a job token whose job does not exist, gets 401 with the error as
  plain text (`http.Error`). gorilla/mux runs the middleware only for a matched route: an
  unknown path is a plain 404 whatever the token.
- `GET /otfapi/jobs/{job_id}` (internal/runner/api/api.go getJob): any authenticated subject;
  the job as JSON:API (internal/runner/job.go: type `jobs`, attributes run_id, phase, status,
  agent_pool_id, organization, workspace_id, runner_id; DataDog/jsonapi writes attributes in
  key order and nil pointers as null).
- `GET /api/v2/workspaces/{workspace_id}` (internal/workspace/api/tfe.go getWorkspace →
  workspace.Service.GetWorkspace → authz.Authorizer): a job subject per `Job.CanAccess`
  (internal/runner/job.go), faithfully; a user subject here may read the workspaces of its
  organizations (OTF's team permissions, simplified). An unknown workspace is 404 ("resolving
  ID: resource not found"), a forbidden one 403. The body is `TFEWorkspace`
  (internal/workspace/tfe_types.go ToTFE) with a `TFP-API-Version: 2.5` header.
- `GET /healthz` (internal/healthz/check.go): `{"status":"OK"}`, no authentication.
- `POST /otfapi/jobs/{job_id}/dynamic-credentials`: otfd's own handler, as otfd answers once
  its `--private-key-path` is removed: 500 "no private key has been configured".
- Errors as internal/tfeapi/errors.go writes them: `{"errors":[{"status","title","detail"}]}`,
  `application/vnd.api+json`; a malformed id is a 500 (otfd maps no status to it).

Job statuses move as internal/runner/job.go allows (unallocated → allocated → running →
finished | errored | canceled). Faults for tests: `fault` = "hang" (never answers), "garbage"
(200 with a body that is no JSON:API document), "other-resource" (200 with the document of
another id) or "reset" (the connection dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import jwt
from aiohttp import web

from tests.service import free_port

BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
JSONAPI = "application/vnd.api+json"
JOB_TOKEN_EXPIRY = 60 * 60
"""internal/runner/tokens.go defaultJobTokenExpiry."""
API_PREFIXES = ("/api/v2/", "/v1/modules/", "/otfapi")
"""internal/api/auth/auth.go Route.IsPath: the paths the API authentication covers."""
SUBJECT = web.RequestKey("subject", object)
_TRANSITIONS = {
    "unallocated": {"allocated", "canceled"},
    "allocated": {"running", "canceled"},
    "running": {"finished", "canceled", "errored"},
}


def new_id(kind: str) -> str:
    """internal/resource/tfe_id.go NewTfeID: the kind, a hyphen, 16 base58 characters."""
    return f"{kind}-" + "".join(secrets.choice(BASE58) for _ in range(16))


def parse_id(value: str) -> tuple[str, str]:
    """internal/resource/tfe_id.go ParseTfeID: (kind, id), ValueError as otfd's message."""
    parts = value.split("-")
    if len(parts) != 2:
        raise ValueError(f"malformed ID: {value}")
    if len(parts[0]) < 2:
        raise ValueError(f"kind must be at least 2 characters: {value}")
    if len(parts[1]) < 1:
        raise ValueError(f"id suffix must be at least 1 character: {value}")
    return parts[0], parts[1]


@dataclass
class Workspace:
    id: str
    name: str
    organization: str
    global_remote_state: bool = False
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Job:
    id: str
    run_id: str
    phase: str
    organization: str
    workspace_id: str
    status: str = "unallocated"
    runner_id: str | None = None
    agent_pool_id: str | None = None

    def can_access(
        self,
        action: str,
        kind: str,
        organization: str | None,
        workspace: Workspace | None,
    ) -> bool:
        """internal/runner/job.go Job.CanAccess, rule for rule, with the workspace policy of
        internal/workspace/policy.go for another workspace of the organization."""
        if kind == "site":
            return False
        if organization is not None and organization != self.organization:
            return False
        if (kind, action) in {
            ("org", "get"),
            ("ent", "get"),
            ("mod", "get"),
            ("mod", "list"),
            ("privkey", "get"),
        }:
            return True
        if workspace is not None and workspace.id == self.workspace_id:
            allowed = {
                ("sv", "get"),
                ("sv", "download"),
                ("ws", "get"),
                ("run", "get"),
                ("run", "cancel"),
                ("varset", "list"),
                ("var", "list"),
                ("chunk", "upload"),
                ("cv", "download"),
                ("pf", "get"),
            }
            if self.phase == "apply":
                allowed |= {("sv", "create"), ("lock", "get")}
            if self.phase == "plan":
                allowed |= {("run", "apply"), ("pf", "upload"), ("lock", "upload")}
            return (kind, action) in allowed
        if workspace is not None:  # Policy.Check for a job: state sharing only
            return workspace.global_remote_state and (kind, action) in {
                ("sv", "get"),
                ("sv", "download"),
                ("ws", "get"),
            }
        return False

    def document(self) -> dict[str, Any]:
        attributes = {
            "agent_pool_id": self.agent_pool_id,
            "organization": self.organization,
            "phase": self.phase,
            "run_id": self.run_id,
            "runner_id": self.runner_id,
            "status": self.status,
            "workspace_id": self.workspace_id,
        }
        return {"data": {"id": self.id, "type": "jobs", "attributes": attributes}}


@dataclass
class User:
    id: str
    organizations: set[str]

    def can_access(
        self, action: str, kind: str, organization: str | None, workspace: Workspace | None
    ) -> bool:
        return organization is not None and organization in self.organizations


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeOtfd:
    hostname: str = "otf.example.com"
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    """otfd's --secret: only the fake holds it."""
    workspaces: dict[str, Workspace] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    """By user-token id (`ut-…`)."""
    requests: list[Request] = field(default_factory=list)
    fault: str | None = None
    record: bool = True
    """Keep `requests` (off for the benchmark, which sends millions)."""
    url: str = ""
    """Where `serve` listens."""

    # -- state, as OTF's services change it ---------------------------------------------------

    def workspace(self, organization: str = "acme", name: str = "networking") -> Workspace:
        workspace = Workspace(new_id("ws"), name, organization)
        self.workspaces[workspace.id] = workspace
        return workspace

    def job(self, workspace: Workspace, phase: str = "plan", run_id: str | None = None) -> Job:
        """A job for a run phase, as internal/runner/service.go createJob makes it."""
        job = Job(
            new_id("job"), run_id or new_id("run"), phase, workspace.organization, workspace.id
        )
        self.jobs[job.id] = job
        return job

    def move(self, job: Job, status: str) -> None:
        """internal/runner/job.go updateStatus: only the transitions OTF allows."""
        if status not in _TRANSITIONS.get(job.status, set()):
            raise ValueError(f"invalid job state transition {job.status} -> {status}")
        job.status = status
        if status == "allocated":
            job.runner_id = new_id("runner")

    def start(self, job: Job) -> str:
        """Allocate and start `job` (StartJob) and return its job token."""
        self.move(job, "allocated")
        self.move(job, "running")
        return self.token(job.id, expiry=time.time() + JOB_TOKEN_EXPIRY)

    def running_job(
        self, organization: str = "acme", name: str = "networking", phase: str = "plan"
    ) -> tuple[Job, str]:
        job = self.job(self.workspace(organization, name), phase)
        return job, self.start(job)

    def user_token(self, *organizations: str) -> str:
        """A user's API token (internal/user: kind `ut`, no expiry)."""
        user = User(new_id("ut"), set(organizations))
        self.users[user.id] = user
        return self.token(user.id, expiry=None)

    def token(self, subject: str, expiry: float | None, secret: bytes | None = None) -> str:
        """internal/tokens/tokens.go factory.NewToken: sub, iat and optional exp, HS256."""
        claims: dict[str, Any] = {"sub": subject, "iat": int(time.time())}
        if expiry is not None:
            claims["exp"] = int(expiry)
        return jwt.encode(claims, secret or self.secret, algorithm="HS256")

    # -- HTTP ---------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_fault])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/otfapi/jobs/{job_id}", self._authenticated(self.get_job))
        app.router.add_post(
            "/otfapi/jobs/{job_id}/dynamic-credentials",
            self._authenticated(self.generate_dynamic_credentials_token),
        )
        app.router.add_get(
            "/api/v2/workspaces/{workspace_id}", self._authenticated(self.get_workspace)
        )
        app.router.add_route("*", "/{path:.*}", self.not_found)
        return app

    @web.middleware
    async def _record_and_fault(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.record:
            self.requests.append(Request(request.method, request.path_qs, dict(request.headers)))
        if self.fault == "hang":
            await asyncio.sleep(3600)
        if self.fault == "reset":
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError
        if self.fault == "garbage":
            return web.Response(body=b"<html>502 Bad Gateway</html>", content_type="text/html")
        response = await handler(request)
        if self.fault == "other-resource" and response.status == 200:
            document = json.loads(response.body)
            document["data"]["id"] = new_id(document["data"]["id"].split("-")[0])
            response.body = json.dumps(document).encode()
        return response

    def _authenticated(self, handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                request[SUBJECT] = self.authenticate(request.headers.get("Authorization", ""))
            except LookupError as exc:
                return _text(401, f"{exc.args[0]}\n")
            return await handler(request)

        return wrapped

    def authenticate(self, authorization: str) -> Job | User:
        """internal/tokens: ParseBearerToken, registry.GetSubject, the kinds' subject getters."""
        if not authorization:
            raise LookupError("you need to login to access the requested page")
        parts = authorization.split("Bearer ")
        if len(parts) != 2:
            raise LookupError("parsing bearer token: malformed bearer token")
        try:
            claims = jwt.decode(
                parts[1], self.secret, algorithms=["HS256"], options={"verify_sub": False}
            )
        except jwt.ExpiredSignatureError:
            raise LookupError('"exp" not satisfied') from None
        except jwt.InvalidTokenError:
            raise LookupError("failed to verify jws signature") from None
        try:
            kind, _ = parse_id(str(claims.get("sub", "")))
        except ValueError as exc:
            raise LookupError(str(exc)) from None
        subject_id = claims["sub"]
        if kind == "job":
            if subject_id not in self.jobs:
                raise LookupError("resource not found")
            return self.jobs[subject_id]
        if kind == "ut":
            if subject_id not in self.users:
                raise LookupError("resource not found")
            return self.users[subject_id]
        raise LookupError(f"unknown authentication token kind: {kind}")

    async def get_job(self, request: web.Request) -> web.Response:
        job_id, malformed = _decode_id(request, "job_id")
        if malformed:
            return malformed
        job = self.jobs.get(job_id)
        if job is None:
            return _tfeapi_error(404, "resource not found")
        return _jsonapi(job.document())

    async def get_workspace(self, request: web.Request) -> web.Response:
        workspace_id, malformed = _decode_id(request, "workspace_id")
        if malformed:
            return malformed
        workspace = self.workspaces.get(workspace_id)
        if workspace is None:
            return _tfeapi_error(404, "resolving ID: resource not found")
        subject = request[SUBJECT]
        if not subject.can_access("get", "ws", workspace.organization, workspace):
            return _tfeapi_error(403, "access to the resource is not permitted")
        response = _jsonapi(self._tfe_workspace(workspace, subject))
        response.headers["TFP-API-Version"] = "2.5"
        return response

    async def generate_dynamic_credentials_token(self, request: web.Request) -> web.Response:
        _, malformed = _decode_id(request, "job_id")
        if malformed:
            return malformed
        try:
            json.loads(await request.read())
        except ValueError as exc:
            return _tfeapi_error(422, str(exc))
        return _tfeapi_error(500, "no private key has been configured")

    async def healthz(self, request: web.Request) -> web.Response:
        """internal/healthz/check.go, with a database that answers."""
        return web.Response(body=b'{"status":"OK"}\n', content_type="application/json")

    async def not_found(self, request: web.Request) -> web.Response:
        return _text(404, "404 page not found\n")

    @staticmethod
    def _tfe_workspace(workspace: Workspace, subject: Job | User) -> dict[str, Any]:
        """internal/workspace/tfe_types.go ToTFE for a workspace with default settings."""

        def can(action: str, kind: str = "ws") -> bool:
            return subject.can_access(action, kind, workspace.organization, workspace)

        stamp = workspace.created_at.isoformat().replace("+00:00", "Z")
        attributes = {
            "actions": {"is-destroyable": True},
            "agent-pool-id": None,
            "allow-destroy-plan": True,
            "apply-duration-average": 0,
            "auto-apply": False,
            "auto-apply-run-trigger": False,
            "can-queue-destroy-plan": False,
            "created-at": stamp,
            "description": "",
            "environment": "",
            "execution-mode": "remote",
            "file-triggers-enabled": False,
            "global-remote-state": workspace.global_remote_state,
            "locked": False,
            "migration-environment": "",
            "name": workspace.name,
            "operations": True,
            "permissions": {
                "can-destroy": can("delete"),
                "can-force-unlock": can("force_unlock"),
                "can-lock": can("lock"),
                "can-queue-apply": can("apply", "run"),
                "can-queue-destroy": can("apply", "run"),
                "can-queue-run": can("create", "run"),
                "can-read-settings": can("get"),
                "can-unlock": can("unlock"),
                "can-update": can("update"),
                "can-update-variable": can("update"),
            },
            "plan-duration-average": 0,
            "policy-check-failures": 0,
            "queue-all-runs": False,
            "resource-count": 0,
            "run-failures": 0,
            "setting-overwrites": {"agent-pool": False, "execution-mode": False},
            "source-name": "",
            "source-url": "",
            "speculative-enabled": True,
            "structured-run-output-enabled": True,
            "tag-names": [],
            "terraform-version": "1.9.8",
            "trigger-patterns": [],
            "trigger-prefixes": [],
            "updated-at": stamp,
            "vcs-repo": None,
            "working-directory": "",
            "workspace-kpis-runs-count": 0,
        }
        relationships = {
            "current-run": {"data": None},
            "organization": {"data": {"id": workspace.organization, "type": "organizations"}},
            "outputs": {"data": []},
            "ssh-key": {"data": None},
        }
        return {
            "data": {
                "id": workspace.id,
                "type": "workspaces",
                "attributes": attributes,
                "relationships": relationships,
            }
        }


def _decode_id(request: web.Request, name: str) -> tuple[str, web.Response | None]:
    """internal/http/decode ID: the path parameter, and the error reply when it is no id. A
    malformed id maps to no status in internal/tfeapi/errors.go (500), except the two ids
    go-tfe's tests use for a missing resource (404)."""
    value = request.match_info[name]
    try:
        parse_id(value)
    except ValueError as exc:
        status = 404 if value in ("nonexisting", "nonexistent") else 500
        return value, _tfeapi_error(status, str(exc))
    return value, None


def _tfeapi_error(status: int, detail: str) -> web.Response:
    error = {"status": str(status), "title": HTTPStatus(status).phrase, "detail": detail}
    return web.Response(
        status=status,
        body=json.dumps({"errors": [error]}, separators=(",", ":")).encode(),
        headers={"Content-Type": JSONAPI},
    )


def _jsonapi(document: dict[str, Any]) -> web.Response:
    return web.Response(
        body=json.dumps(document, separators=(",", ":")).encode(),
        headers={"Content-Type": JSONAPI},
    )


def _text(status: int, text: str) -> web.Response:
    """Go's http.Error: text/plain, nosniff."""
    return web.Response(
        status=status,
        body=text.encode(),
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "X-Content-Type-Options": "nosniff",
        },
    )


@contextlib.asynccontextmanager
async def serve(fake: FakeOtfd) -> AsyncIterator[str]:
    """Serve `fake` on a free loopback port; yields its base URL."""
    port = free_port()
    runner = web.AppRunner(fake.app(), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake.url
    finally:
        await runner.cleanup()
