"""The client of otfd's API that keysvc needs: a job and its workspace, read with the caller's
own job token, so otfd checks the token's signature and OTF's authorization rules itself.

- `GET /otfapi/jobs/{job_id}` (internal/runner/api/api.go `getJob`): any authenticated caller;
  a job token authenticates only while its job exists (internal/runner/service.go registers
  the job kind with the token registry).
- `GET /api/v2/workspaces/{workspace_id}` (internal/workspace/api/tfe.go `getWorkspace`): a
  job's token may read its own workspace and no other (`Job.CanAccess`, internal/runner/job.go).

otfd answers an unauthenticated request 401 (plain text), a forbidden one 403 and an unknown
resource 404 (JSON:API errors, internal/tfeapi/errors.go): those are OtfdRefused. Anything else
(no connection, no answer within the timeout, a 5xx, a body that is not the resource asked for)
is OtfdUnavailable: the runner should retry. The job token is sent in the Authorization header
and nowhere else: never in a URL, an exception or a log line. This module knows nothing of
keysvc's keys or replies.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from keysvc import __version__
from keysvc.otf.jsonapi import MEDIA_TYPE, NotAResource, resource

MAX_REPLY_BYTES = 1 << 20
"""A job or workspace document is a few kB; more is not otfd answering."""
_WORKSPACE_ID = re.compile(r"ws-[1-9A-HJ-NP-Za-km-z]{1,64}")
"""A workspace id as otfd makes them; anything else must not reach a URL path."""


class OtfdError(Exception):
    pass


class OtfdUnavailable(OtfdError):
    """otfd could not be asked, or did not give an answer: the caller should retry later.
    The message says which, without the request's headers."""


class OtfdRefused(OtfdError):
    """otfd refused the token for this request (401), or the resource to it (403), or does not
    know the resource (404)."""

    def __init__(self, status: int, what: str) -> None:
        super().__init__(f"otfd answered {status} for {what}")
        self.status = status
        self.what = what


@dataclass(frozen=True, slots=True)
class Job:
    """A job as otfd serves it (internal/runner/job.go `Job`, JSON:API type `jobs`)."""

    id: str
    run_id: str
    phase: str
    status: str
    organization: str
    workspace_id: str


@dataclass(frozen=True, slots=True)
class Workspace:
    """The part of a workspace keysvc uses (internal/workspace/tfe_types.go `TFEWorkspace`)."""

    id: str
    name: str


class OtfdClient:
    """One aiohttp session to otfd for the service's lifetime (`start`, `close`): connections
    are kept alive between requests, so a token costs two requests on open connections."""

    def __init__(self, url: str, timeout: float, ca_file: Path | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self._ssl = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"Accept": MEDIA_TYPE, "User-Agent": f"keysvc/{__version__}"},
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def job(self, job_id: str, token: str) -> Job:
        """The job `job_id` (an id checked by the caller), as `token` may read it."""
        what = f"job {job_id}"
        attributes = await self._resource(f"/otfapi/jobs/{job_id}", token, "jobs", job_id, what)
        try:
            return Job(
                id=job_id,
                run_id=_text(attributes, "run_id"),
                phase=_text(attributes, "phase"),
                status=_text(attributes, "status"),
                organization=_text(attributes, "organization"),
                workspace_id=_text(attributes, "workspace_id"),
            )
        except KeyError as exc:
            raise OtfdUnavailable(f"otfd's {what} has no {exc.args[0]} text attribute") from None

    async def workspace(self, workspace_id: str, token: str) -> Workspace:
        """The workspace `workspace_id`, as `token` may read it."""
        what = f"workspace {workspace_id}"
        if not _WORKSPACE_ID.fullmatch(workspace_id):
            raise OtfdUnavailable("otfd named a workspace id that is not one")
        attributes = await self._resource(
            f"/api/v2/workspaces/{workspace_id}", token, "workspaces", workspace_id, what
        )
        try:
            return Workspace(id=workspace_id, name=_text(attributes, "name"))
        except KeyError:
            raise OtfdUnavailable(f"otfd's {what} has no name") from None

    async def _resource(self, path: str, token: str, type_: str, id_: str, what: str) -> dict:
        status, body = await self._get(path, token, what)
        if status in (401, 403, 404):
            raise OtfdRefused(status, what)
        if status != 200:
            raise OtfdUnavailable(f"otfd answered {status} for {what}")
        try:
            return resource(body, type_, id_)
        except NotAResource as exc:
            raise OtfdUnavailable(f"otfd's answer for {what} is {exc}") from None

    async def _get(self, path: str, token: str, what: str) -> tuple[int, bytes]:
        if self._session is None:
            raise OtfdUnavailable("the otfd client is not started")
        try:
            async with self._session.get(
                self.url + path,
                headers={"Authorization": f"Bearer {token}"},
                allow_redirects=False,
            ) as reply:
                if (reply.content_length or 0) > MAX_REPLY_BYTES:
                    raise OtfdUnavailable(f"otfd's answer for {what} is too large")
                body = await reply.content.read(MAX_REPLY_BYTES + 1)
                if len(body) > MAX_REPLY_BYTES:
                    raise OtfdUnavailable(f"otfd's answer for {what} is too large")
                return reply.status, body
        except TimeoutError:
            raise OtfdUnavailable(f"otfd did not answer within {self.timeout:g}s") from None
        except aiohttp.ClientSSLError as exc:
            raise OtfdUnavailable(
                f"otfd's TLS certificate was not accepted ({exc.__class__.__name__})"
            ) from None
        except aiohttp.ServerDisconnectedError:
            raise OtfdUnavailable("otfd closed the connection without an answer") from None
        except aiohttp.ClientConnectionError as exc:
            raise OtfdUnavailable(
                f"otfd could not be reached ({_connection_problem(exc)})"
            ) from None
        except aiohttp.ClientError as exc:  # a malformed reply, cut short
            raise OtfdUnavailable(
                f"otfd's answer for {what} was malformed ({exc.__class__.__name__})"
            ) from None


def _text(attributes: dict, name: str) -> str:
    value = attributes[name]
    if not isinstance(value, str):
        raise KeyError(name)
    return value


def _connection_problem(exc: aiohttp.ClientConnectionError) -> str:
    """A connection failure in a few words: the class, and for a refused or unresolvable
    address the OS's reason (which names no request header)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.strerror or exc.__class__.__name__
    return exc.__class__.__name__
