"""`POST /otfapi/jobs/{job_id}/dynamic-credentials`: OTF's runner endpoint, answered as otfd
answers it (internal/runner/api/api.go `generateDynamicCredentialsToken`) for a well-behaved
caller: body `{"audience": ...}`, reply 200 with the compact JWT as the raw body.

The caller is accepted only when, in this order (cheap and local first):
1. its bearer token is an unexpired JWT whose `sub` is the job of the URL (job_token.py);
2. the body is JSON (labelled application/json or application/vnd.api+json, as OTF's client
   sends it) with a non-empty printable `audience`;
3. otfd returns that job for the same token, and the job is `running` in phase plan or apply
   (otfd itself would sign for a finished job, or for any caller that may read the workspace);
4. the job's organization is allowed by `[otf] organizations`;
5. otfd returns the job's workspace for the same token (OTF's `Job.CanAccess`); the answer is
   reused for the same job token's next tokens within `[otf] workspace_cache`
   (workspace_cache.py says why every refusal stays correct);
6. the names pass /v1/tokens' checks (a name that would forge another `sub` is refused).
The token is then the one /v1/tokens mints for that run (tokens.TokenIssuer.issue_for_run).

Errors are OTF's JSON:API errors (jsonapi.py) with the status otfd uses for the same kind of
failure: 401 for a token that does not authenticate, 403 for a caller not allowed, 404 for an
unknown job, 422 for a body it cannot use, 503 with Retry-After when otfd or the signing
backend cannot answer now (OTF's client retries those, honouring Retry-After).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from keysvc import metrics
from keysvc.app import APIError, authorization
from keysvc.config import OtfConfig, organization_allowed
from keysvc.otf import job_token
from keysvc.otf.jsonapi import MEDIA_TYPE, error_response
from keysvc.otf.otfd import OtfdClient, OtfdRefused, OtfdUnavailable
from keysvc.otf.workspace_cache import WorkspaceCache
from keysvc.run_identity import PHASES
from keysvc.tokens import PATTERN_MESSAGES, Audience, TokenRequest

if TYPE_CHECKING:
    from keysvc.app import Endpoints

log = logging.getLogger("keysvc.otf")

ENDPOINT = "otf"
"""The `endpoint` label of keysvc_tokens_issued and the audit line."""
CONTENT_TYPES = ("application/json", MEDIA_TYPE)
RETRY_AFTER = "5"
T = TypeVar("T")


class Refusal(Exception):
    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers

    def response(self) -> web.Response:
        metrics.REQUESTS_REJECTED.labels(self.code).inc()
        return error_response(self.status, self.code, self.detail, self.headers)


class CredentialsRequest(BaseModel):
    """The body OTF's client sends. Other fields are ignored, as otfd's JSON decoder does."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    audience: Audience


class DynamicCredentials:
    """The handler, over keysvc's endpoints (body limits, signing, audit) and an otfd client."""

    def __init__(self, endpoints: Endpoints, otfd: OtfdClient, config: OtfConfig) -> None:
        self.endpoints = endpoints
        self.issuer = endpoints.service.issuer
        self.otfd = otfd
        self.organizations = config.organizations
        self.workspaces = WorkspaceCache(config.workspace_cache.total_seconds())

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self.issue(request)
        except Refusal as exc:
            return exc.response()
        except APIError as exc:  # keysvc's own refusals: body, media type, signing backend
            return Refusal(exc.status, exc.code, exc.message, exc.headers).response()
        except web.HTTPRequestEntityTooLarge:
            limit = self.endpoints.config.server.max_body_bytes
            return Refusal(413, "body_too_large", f"request body exceeds {limit} bytes").response()
        except Exception:
            log.exception("unhandled error on the OTF dynamic-credentials endpoint")
            return Refusal(500, "internal_error", "internal error").response()

    async def issue(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        try:
            token = job_token.bearer(authorization(request))
            job_token.check(token, job_id, time.time())
        except job_token.TokenRefused as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            raise Refusal(exc.status, exc.code, exc.detail, headers) from None
        audience = self.audience(await self.endpoints.body(request, CONTENT_TYPES))
        job = await self.ask("job", self.otfd.job(job_id, token))
        if job.status != "running":
            raise Refusal(
                403,
                "job_not_running",
                f"job {job_id} is {job.status}: tokens are issued only while a job runs",
            )
        if job.phase not in PHASES:
            raise Refusal(403, "job_phase", f"job {job_id} is not a plan or apply")
        if not organization_allowed(self.organizations, job.organization):
            raise Refusal(
                403,
                "organization_forbidden",
                f"keysvc does not issue tokens for organization {job.organization!r}"
                " ([otf] organizations)",
            )
        workspace = self.workspaces.get(token, job.workspace_id)
        if workspace is None:
            workspace = await self.ask("workspace", self.otfd.workspace(job.workspace_id, token))
            self.workspaces.put(token, workspace)
        run = self.run(
            job.organization, workspace.name, job.workspace_id, job.run_id, job.phase, audience
        )
        issued = await self.endpoints.sign_or_503(self.issuer.issue_for_run(run), ENDPOINT)
        self.endpoints.record(ENDPOINT, f"otf-job:{job_id}", issued)
        # otfd writes the token with no Content-Type; Go's server then labels it text/plain.
        return web.Response(body=issued.token.encode(), content_type="text/plain", charset="utf-8")

    @staticmethod
    def audience(raw: bytes) -> str:
        try:
            return CredentialsRequest.model_validate_json(raw).audience
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            if err["type"] in ("json_invalid", "json_type", "model_type"):
                detail = "the body must be a JSON object"
            elif err["type"] == "missing":
                detail = "audience is required"
            elif err["type"] == "string_pattern_mismatch":
                detail = f"audience {PATTERN_MESSAGES[err['ctx']['pattern']]}"
            else:
                detail = f"audience: {err['msg']}"
            raise Refusal(422, "invalid_request", detail) from None

    @staticmethod
    def run(
        organization: str, workspace: str, workspace_id: str, run_id: str, phase: str, audience: str
    ) -> TokenRequest:
        """The run as /v1/tokens takes it, with the same checks on every name otfd returned."""
        try:
            return TokenRequest(
                organization=organization,
                workspace=workspace,
                workspace_id=workspace_id,
                run_id=run_id,
                run_phase=phase,  # type: ignore[arg-type]  # checked against PHASES
                audience=audience,
            )
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in err["loc"])
            message = PATTERN_MESSAGES.get(err.get("ctx", {}).get("pattern"), err["msg"])
            raise Refusal(
                403,
                "invalid_run_name",
                f"otfd's {field.replace('_', ' ')} cannot go into a token: it {message}",
            ) from None

    @staticmethod
    async def ask(operation: str, lookup: Awaitable[T]) -> T:
        """otfd's answer, or the runner's refusal for otfd's refusal or silence."""
        try:
            found = await lookup
        except OtfdRefused as exc:
            metrics.OTFD_REQUESTS.labels(operation, "refused").inc()
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            raise Refusal(
                exc.status, _REFUSED_CODES[exc.status], _refused_detail(exc), headers
            ) from None
        except OtfdUnavailable as exc:
            metrics.OTFD_REQUESTS.labels(operation, "unavailable").inc()
            log.warning("otfd unavailable: %s", exc)
            raise Refusal(
                503, "otfd_unavailable", f"{exc}; retry later", {"Retry-After": RETRY_AFTER}
            ) from None
        metrics.OTFD_REQUESTS.labels(operation, "ok").inc()
        return found


_REFUSED_CODES = {401: "otfd_refused_token", 403: "otfd_forbidden", 404: "not_found"}


def _refused_detail(exc: OtfdRefused) -> str:
    if exc.status == 401:
        return "otfd did not accept the job token"
    if exc.status == 403:
        return f"otfd does not allow this job to read {exc.what}"
    return f"otfd has no {exc.what}"
