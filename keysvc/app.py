"""The HTTP API (aiohttp): public discovery and JWKS, the token and signing endpoints for
clients, and the operational endpoints. docs/api.md describes the interface exactly.

Every error leaves as `{"error": {"code", "message"}}`; nothing reaches a client as a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson
from aiohttp import ClientPayloadError, web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from keysvc import content_coding, exact_json, metrics, rotation, validation_errors
from keysvc.audit import AuditTrail
from keysvc.auth import Client
from keysvc.backends.base import BackendError, BackendUnavailable, OperationNotSupported
from keysvc.durations import format_duration, parse_duration
from keysvc.documents import DISCOVERY_PATH, JWKS_PATH, Document, PublicDocuments
from keysvc.errors import Overloaded
from keysvc.keyring import RingView
from keysvc.service import Service
from keysvc.tokens import (
    PATTERN_MESSAGES,
    IssuedToken,
    NoSigningKey,
    RequestError,
    SignRequest,
    TokenRequest,
)

log = logging.getLogger("keysvc.http")

SERVICE_KEY = web.AppKey("service", Service)
OPENAPI = importlib.resources.files("keysvc") / "openapi.json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_JSON = "application/json"


class APIError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.close = close
        """Close the connection after the reply (the rest of the request is in doubt)."""


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    metrics.REQUESTS_REJECTED.labels(code).inc()
    return web.Response(
        status=status, body=error_body(code, message), content_type=_JSON, headers=headers
    )


_HTTP_CODES = {
    404: ("not_found", "no such endpoint"),
    405: ("method_not_allowed", "method not allowed on this endpoint"),
    413: ("body_too_large", "request body exceeds the limit"),
}


def http_exception_response(exc: web.HTTPException) -> web.Response:
    """aiohttp's own HTTP error (a 413 from reading the body, a 417 for an unknown `Expect`)
    as keysvc's JSON error: its standard reason, never the text aiohttp put in it (which may
    quote the request)."""
    code, message = _HTTP_CODES.get(
        exc.status, (exc.reason.lower().replace(" ", "_").replace("-", "_"), exc.reason)
    )
    kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    return error_response(exc.status, code, message, kept or None)


def json_errors(handler: Handler) -> Handler:
    """Every failure of `handler` as a JSON error: APIError as given, aiohttp's own HTTP errors
    (413 from reading the body) by status, anything else as a logged 500 without details.

    A wrapper per handler rather than an aiohttp middleware: the middleware chain costs about
    10 µs per request, a tenth of a JWKS GET (see docs/performance.md)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except APIError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.headers)
            if exc.close:
                response.force_close()
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return http_exception_response(exc)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, "internal_error", "internal error")

    return wrapped


def add_routes(router: web.UrlDispatcher, routes: dict[str, dict[str, Handler]]) -> None:
    """Register `{path: {method: handler}}` with JSON errors throughout: each handler wrapped
    in json_errors, any other method on a known path a 405 with `Allow` (a GET route also
    answers HEAD), and every unknown path a 404, as aiohttp's router would answer them."""
    for path, methods in routes.items():
        resource = router.add_resource(path)
        allowed = set(methods)
        for method, handler in methods.items():
            resource.add_route(method, json_errors(handler))
            if method == "GET":
                resource.add_route("HEAD", json_errors(handler))
                allowed.add("HEAD")
        resource.add_route("*", _method_not_allowed(",".join(sorted(allowed))))
    router.add_route("*", "/{path:.*}", _not_found)


def _method_not_allowed(allow: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return error_response(405, *_HTTP_CODES[405], {"Allow": allow})

    return handler


async def _not_found(request: web.Request) -> web.Response:
    return error_response(404, *_HTTP_CODES[404])


def backend_failure(summary: str, exc: BaseException) -> str:
    """The client's message for a failed signature, and the operator's log line with the details.

    A backend's message names key paths, resources and identities, and may quote the backend's
    own error text: fit for keysvc's log, not for every client. Both carry one error id, so an
    operator can find the log line a client reports."""
    error_id = os.urandom(4).hex()
    log.warning("signing failed (error id %s): %s", error_id, exc)
    return f"{summary} (error id {error_id}; the details are in keysvc's log)"


def authorization(request: web.Request) -> str | None:
    """The request's one `Authorization` header. Two are refused (400): proxies and libraries
    disagree on which one counts, or join them with a comma."""
    values = request.headers.getall("Authorization", ())
    if len(values) > 1:
        raise APIError(400, "duplicate_header", "send exactly one Authorization header")
    return values[0] if values else None


def matches_etag(if_none_match: str, etag: str) -> bool:
    """RFC 9110 13.1.2: `*`, or a list of entity tags compared weakly (W/ ignored)."""
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


class Endpoints:
    """Request handlers over one Service. Public documents are rebuilt only when the ring's
    view changes, and served as precomputed bytes."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.config = service.config
        self._view: RingView | None = None
        self._documents: PublicDocuments | None = None
        self._max_body = service.config.server.max_body_bytes
        self._body_timeout = service.config.server.body_timeout.total_seconds()
        self._issued_counter = functools.cache(_issued_counter)
        """The counter child per (endpoint, kid, backend), looked up once, not per token."""
        self.audit = AuditTrail()
        self._openapi = OPENAPI.read_bytes()
        """docs/openapi.yaml as JSON (scripts/build-openapi writes it into the package)."""
        self._rotating = asyncio.Lock()
        """One API rotation at a time in this process (the backend's own lock, where it has
        one, covers other processes)."""

    # -- helpers ------------------------------------------------------------------------------

    def documents(self) -> PublicDocuments:
        view = self.service.ring.view()
        if view is not self._view or self._documents is None:
            self._documents = PublicDocuments.build(
                view, self.config.issuer, self.config.rotation.jwks_max_age
            )
            self._view = view
        return self._documents

    def client(self, request: web.Request, scope: str) -> Client:
        client = self.service.auth.authenticate(authorization(request))
        if client is None:
            raise APIError(
                401,
                "unauthorized",
                "a valid bearer token is required",
                {"WWW-Authenticate": 'Bearer realm="keysvc"'},
            )
        if scope not in client.scopes:
            raise APIError(403, "forbidden", f"client {client.name!r} lacks scope {scope!r}")
        return client

    async def body(self, request: web.Request, accept: tuple[str, ...] = (_JSON,)) -> bytes:
        if request.content_type not in accept:
            raise APIError(
                415, "unsupported_media_type", f"send the body as {' or '.join(accept)}"
            )
        length = request.content_length
        if length is not None and length > self._max_body:
            raise APIError(413, "body_too_large", f"request body exceeds {self._max_body} bytes")
        try:
            async with asyncio.timeout(self._body_timeout):
                raw = await request.read()
        except TimeoutError:
            raise APIError(
                408,
                "request_timeout",
                f"the request body did not arrive within {self._body_timeout:g}s",
                close=True,
            ) from None
        except (ConnectionResetError, ClientPayloadError):
            # The client sent less than it announced and went away: its mistake, not ours.
            raise APIError(400, "incomplete_body", "the request body ended early") from None
        except RequestPayloadError:
            raise APIError(
                400,
                "malformed_body_framing",
                "the body's framing is invalid (Content-Length or chunked Transfer-Encoding)",
                close=True,
            ) from None
        try:
            coding = ", ".join(request.headers.getall("Content-Encoding", ())) or None
            return content_coding.decode(raw, coding, self._max_body)
        except content_coding.CodingError as exc:
            log.info("refused a request body: %s", exc)
            raise APIError(exc.status, exc.code, str(exc)) from None

    @staticmethod
    def invalid(exc: ValidationError) -> APIError:
        """400 naming every field to fix: all missing ones together, then each other problem,
        in plain words (keysvc.validation_errors), quoting no value the client sent."""
        err = exc.errors(include_url=False)[0]
        if err["type"] in ("json_invalid", "json_type"):
            return APIError(400, "malformed_json", "the body is not a JSON object")
        if err["type"] == "model_type":
            return APIError(400, "invalid_request", "the body must be a JSON object")
        message = validation_errors.describe_all(
            exc, unknown="is not a field of this request", patterns=PATTERN_MESSAGES
        )
        return APIError(400, "invalid_request", message)

    async def sign_or_503(self, issue: Awaitable[IssuedToken], endpoint: str) -> IssuedToken:
        try:
            return await issue
        except RequestError as exc:
            raise APIError(400, exc.code, str(exc)) from None
        except NoSigningKey as exc:
            metrics.TOKENS_ISSUED.labels(endpoint, "", "", "no_signing_key").inc()
            raise APIError(
                503,
                "no_signing_key",
                f"{exc}; an operator must add or fix one (see /readyz); retry later",
                {"Retry-After": str(max(1, round(exc.retry_after)))},
            ) from None
        except Overloaded as exc:  # counted, not logged: under overload a line each would add to it
            metrics.TOKENS_ISSUED.labels(endpoint, "", "", "overloaded").inc()
            raise APIError(
                503,
                "overloaded",
                "keysvc is signing as fast as it can and this token would wait longer than its"
                " sign timeout; retry later",
                {"Retry-After": str(max(1, round(exc.retry_after)))},
            ) from None
        except BackendUnavailable as exc:
            metrics.TOKENS_ISSUED.labels(endpoint, "", "", "unavailable").inc()
            raise APIError(
                503,
                "backend_unavailable",
                backend_failure("the signing backend is unavailable; retry later", exc),
                {"Retry-After": str(max(1, round(exc.retry_after)))},
            ) from None
        except BackendError as exc:
            metrics.TOKENS_ISSUED.labels(endpoint, "", "", "error").inc()
            raise APIError(
                503,
                "backend_error",
                backend_failure("the signing backend refused to sign", exc),
                {"Retry-After": "5"},
            ) from None

    def issued(self, endpoint: str, client: Client, issued: IssuedToken) -> web.Response:
        self.record(endpoint, client.name, issued)
        return web.Response(body=orjson.dumps(issued.reply()), content_type=_JSON)

    def record(self, endpoint: str, client: str, issued: IssuedToken) -> None:
        """Count an issued token and write its audit line."""
        self._issued_counter(endpoint, issued.kid, issued.backend).inc()
        claims = issued.claims
        self.audit.token_issued(
            endpoint=endpoint,
            client=client,
            jti=issued.jti,
            sub=claims.get("sub"),
            aud=claims.get("aud"),
            kid=issued.kid,
            exp=issued.expires_at,
        )

    # -- public -------------------------------------------------------------------------------

    def _serve(self, request: web.Request, document: Document) -> web.Response:
        headers = {"Cache-Control": document.cache_control, "ETag": document.etag}
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match and matches_etag(if_none_match, document.etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=document.body, content_type=_JSON, headers=headers)

    async def discovery(self, request: web.Request) -> web.Response:
        return self._serve(request, self.documents().discovery)

    async def jwks(self, request: web.Request) -> web.Response:
        return self._serve(request, self.documents().jwks)

    # -- clients ------------------------------------------------------------------------------

    async def tokens(self, request: web.Request) -> web.Response:
        client = self.client(request, "tokens:issue")
        raw = await self.body(request)
        try:
            run = TokenRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise self.invalid(exc) from None
        if not client.allows_organization(run.organization):
            raise APIError(
                403,
                "organization_forbidden",
                f"client {client.name!r} may not issue tokens for organization {run.organization!r}",
            )
        issued = await self.sign_or_503(self.service.issuer.issue_for_run(run), "tokens")
        return self.issued("tokens", client, issued)

    async def sign(self, request: web.Request) -> web.Response:
        client = self.client(request, "sign")
        if not client.unrestricted:
            raise APIError(
                403,
                "organization_forbidden",
                f"client {client.name!r} is limited to some organizations and cannot sign "
                "arbitrary claims (they could name any organization)",
            )
        raw = await self.body(request)
        try:
            # Not pydantic's JSON reader: it rounds numbers (1e-400 to 0.0) that the token must
            # carry exactly or not at all.
            document = exact_json.loads(raw)
        except exact_json.DuplicateKey as exc:
            raise APIError(400, "invalid_request", str(exc)) from None
        except ValueError:
            raise APIError(400, "malformed_json", "the body is not a JSON object") from None
        try:
            sign_request = SignRequest.model_validate(document)
        except ValidationError as exc:
            raise self.invalid(exc) from None
        issued = await self.sign_or_503(self.service.issuer.issue_claims(sign_request), "sign")
        return self.issued("sign", client, issued)

    async def keys(self, request: web.Request) -> web.Response:
        self.client(request, "keys:read")
        ring = self.service.ring
        # publish_lead too: the listing alone cannot show it when the only key is the oldest
        # (it signs from its creation), and doctor judges the JWKS max-age against it.
        lead = format_duration(ring.lifecycle.publish_lead)
        return web.json_response({"keys": ring.view().listing(), "publish_lead": lead})

    async def rotate_keys(self, request: web.Request) -> web.Response:
        """Create a key version in a backend, or say why not (keysvc.rotation). Never while the
        backend's newest version is younger than publish_lead: automation that calls too often
        (or a leaked token) gets at most one waiting version per backend, not a JWKS that grows
        with every call."""
        client = self.client(request, "keys:rotate")
        raw = await self.body(request)
        try:
            body = RotateRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise self.invalid(exc) from None
        ring = self.service.ring
        names = [b.name for b in ring.backends]
        if body.backend is None and len(names) > 1:
            raise APIError(
                400, "backend_required",
                f"several backends are configured ({', '.join(names)}): name one in \"backend\"",
            )
        if body.backend is not None and body.backend not in names:
            raise APIError(
                400, "unknown_backend",
                f"no backend named {body.backend!r} (configured: {', '.join(names)})",
            )
        lead = self.config.rotation.publish_lead
        threshold = max(body.if_older_than or lead, lead)
        name = body.backend or names[0]
        try:
            async with self._rotating:
                result = await rotation.rotate(ring, name, threshold)
        except OperationNotSupported as exc:
            raise APIError(409, "cannot_rotate", str(exc)) from None
        except (BackendError, OSError) as exc:
            metrics.BACKEND_ERRORS.labels(name, "rotate").inc()
            unavailable = isinstance(exc, BackendUnavailable)
            raise APIError(
                503,
                "backend_unavailable" if unavailable else "backend_error",
                backend_failure(f"backend {name} could not rotate", exc),
                {"Retry-After": str(max(1, round(exc.retry_after))) if unavailable else "5"},
            ) from None
        log.info(
            "rotation requested by client %s: %s", client.name, result.message,
            extra={"event": "rotation", "client": client.name, "backend": name,
                   "rotated": result.rotated, "if_older_than": format_duration(threshold),
                   "kid": (result.created or {}).get("kid")},
        )
        return web.json_response(result.to_json())

    # -- operations ---------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """200 while a key signs, even when a backend has a problem: the ring then signs with
        its last good keys, and every replica sees the same backend, so taking them all out of
        the load balancer would only stop the service. `status` is then "degraded" and
        `problems` says why; 503 (naming the problems) only when nothing can sign."""
        ring = self.service.ring
        signer = ring.view().signer
        problems = ring.problems()
        if signer is None:
            why = "; ".join(f"backend {p.backend!r}: {p.message}" for p in problems)
            return error_response(
                503,
                "not_ready",
                f"no signing key is usable: {why}" if why else "no signing key is usable yet",
                {"Retry-After": "5"},
            )
        return web.json_response(
            {
                "status": "degraded" if problems else "ready",
                "signing_kid": signer.kid,
                "problems": [p.to_json() for p in problems],
            }
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type=_JSON)

    async def metrics(self, request: web.Request) -> web.Response:
        return await metrics_endpoint(request)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body, content_type = metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def create_metrics_app() -> web.Application:
    """The app of `server.metrics_port`: GET /metrics and nothing else (any other path 404),
    for a scraper that a network policy keeps off the token API."""
    app = web.Application(client_max_size=1024)
    add_routes(app.router, {"/metrics": {"GET": metrics_endpoint}})
    return app


API_DURATION = re.compile(r"([0-9]{1,3}d)?([0-9]{1,4}h)?([0-9]{1,6}m)?([0-9]{1,8}s)?([0-9]{1,9}ms)?")
"""The durations the API takes (docs/openapi.yaml, Duration)."""


class RotateRequest(BaseModel):
    """The body of `POST /v1/keys/rotate`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: str | None = None
    """The backend to rotate; required when several are configured."""
    if_older_than: timedelta | None = None
    """Only when the backend's newest version is older than this (at least publish_lead)."""

    @field_validator("if_older_than", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta | None:
        """Whole units, largest first (docs/openapi.yaml's Duration): every such value is
        below the config's 3650d cap, and the message never repeats what the client sent."""
        if value is None:
            return None
        if not isinstance(value, str) or len(value) < 2 or not API_DURATION.fullmatch(value):
            raise ValueError('must be a duration such as "30d", "12h" or "1h30m"')
        return parse_duration(value)


def _issued_counter(endpoint: str, kid: str, backend: str) -> Any:
    return metrics.TOKENS_ISSUED.labels(endpoint, kid, backend, "issued")


def create_app(service: Service) -> web.Application:
    """The aiohttp application. The caller starts and stops `service` (see keysvc.server).

    Routes go through add_routes (no middleware), so a route added elsewhere must too to keep
    the JSON error shape."""
    app = web.Application(client_max_size=service.config.server.max_body_bytes)
    app[SERVICE_KEY] = service
    endpoints = Endpoints(service)

    async def flush_audit(app: web.Application) -> None:
        endpoints.audit.flush()

    app.on_cleanup.append(flush_audit)
    routes: dict[str, dict[str, Handler]] = {
        DISCOVERY_PATH: {"GET": endpoints.discovery},
        JWKS_PATH: {"GET": endpoints.jwks},
        "/v1/tokens": {"POST": endpoints.tokens},
        "/v1/sign": {"POST": endpoints.sign},
        "/v1/keys": {"GET": endpoints.keys},
        "/v1/keys/rotate": {"POST": endpoints.rotate_keys},
        "/healthz": {"GET": endpoints.healthz},
        "/readyz": {"GET": endpoints.readyz},
        "/metrics": {"GET": endpoints.metrics},
        "/openapi.json": {"GET": endpoints.openapi},
    }
    if service.otfd is not None and service.config.otf is not None:
        # OTF's runner endpoint, only with [otf]: without it the path is unknown (404).
        from keysvc.otf import PATH
        from keysvc.otf.endpoint import DynamicCredentials

        otf = DynamicCredentials(endpoints, service.otfd, service.config.otf)
        routes[PATH] = {"POST": otf}
    add_routes(app.router, routes)
    return app
