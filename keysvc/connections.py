"""keysvc's HTTP/1.1 connections: aiohttp's RequestHandler with the limits aiohttp leaves open.

Left to its defaults, aiohttp waits for a request header forever, keeps an idle connection for
an hour, accepts connections until the process runs out of file descriptors (after which the
event loop resets everyone, legitimate clients included), and answers what its parser refuses in
text/plain, quoting the offending bytes back (a bearer token with a stray CR included).
`Connection` closes each gap at the one place every connection passes through:

- a header deadline (`server.header_timeout`, 408) and an idle deadline
  (`server.keepalive_timeout`), checked by one sweep per worker rather than a timer per request;
- a cap per worker (`server.max_connections`, lowered to what RLIMIT_NOFILE allows): at the
  cap, the connection that has waited longest for a request is closed to admit the new one, as
  nginx reuses idle connections when it runs out; a new connection is refused (503) only when
  every connection is busy with a request. Logged at most every 10 s; counted in metrics;
- every reply aiohttp makes itself (parser errors, and the `HTTPException`s its router and
  `Expect` handling raise) leaves in keysvc's JSON error shape, naming the kind of fault, never
  its bytes.

aiohttp has no supported hook for its parser's replies (aio-libs/aiohttp#3287, #6463): this is a
subclass of its public `web.RequestHandler`, given to the event loop by `listen()`.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_parser import RawRequestMessage
from aiohttp.http_exceptions import (
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.web_protocol import RequestPayloadError

from keysvc import metrics
from keysvc.app import error_body, error_response, http_exception_response

log = logging.getLogger("keysvc.connections")

RESERVED_FDS = 128
"""File descriptors kept free of client connections: listening sockets, backend connection
pools, key files, log and metrics files."""
_LOG_EVERY = 10.0
"""Seconds between two log lines about the connection cap."""

_PARSE_ERRORS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("host",), "missing_host", "an HTTP/1.1 request needs one Host header"),
    (("pri/upgrade",), "unsupported_protocol", "only HTTP/1.0 and HTTP/1.1 are served here"),
    (
        ("chunk", "content-length", "transfer-encoding", "body", "payload"),
        "malformed_body_framing",
        "the body's framing is invalid (Content-Length or chunked Transfer-Encoding)",
    ),
    (
        ("header", "whitespace", "token"),
        "malformed_header",
        "a header field is malformed (a control character such as CR or NUL in it, a folded"
        " line, or an invalid name)",
    ),
)
"""What a parser error is about, from the parser's fixed reason (the part of its message before
the quoted bytes), matched by keyword: (keywords, code, message). Only the fixed text chosen
here reaches the client."""


def describe_parse_error(exc: BaseException | None) -> tuple[str, str]:
    """The (code, message) for a request aiohttp's parser refused: never the request's bytes."""
    if isinstance(exc, LineTooLong):
        return "line_too_long", "the request line or a header field is longer than 8190 bytes"
    if isinstance(exc, (BadStatusLine, InvalidURLError)):
        return "malformed_request_line", "the request line is not 'METHOD /path HTTP/1.1'"
    if isinstance(exc, InvalidHeader):
        return _PARSE_ERRORS[-1][1:]
    if isinstance(exc, HttpProcessingError):
        reason = exc.message.split(":\n", 1)[0].lower()
        for keywords, code, message in _PARSE_ERRORS:
            if any(word in reason for word in keywords):
                return code, message
    return "malformed_request", "the request is not valid HTTP/1.1"


def _raw_reply(status: int, code: str, message: str, headers: str = "") -> bytes:
    """A complete HTTP/1.1 error reply that closes the connection, for the moments when no
    request object exists to answer through (a header that never ended, a refused connection)."""
    body = error_body(code, message)
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{headers}\r\n"
    ).encode() + body


def connection_budget(wanted: int) -> int:
    """The connection cap this process can honour: `wanted`, or fewer when the file-descriptor
    limit leaves less room. Raises the soft limit to the hard one first, as Go programs do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or wanted + RESERVED_FDS <= soft:
        return wanted
    usable = max(1, soft - RESERVED_FDS)
    log.warning(
        "server.max_connections = %d does not fit the file-descriptor limit (%d, of which %d are"
        " kept for other files): capping connections at %d per worker; raise the limit"
        " (ulimit -n) to allow more",
        wanted, soft, RESERVED_FDS, usable,
    )
    return usable


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int
    header_timeout: float
    keepalive_timeout: float


class Connections:
    """The open connections of one worker: admission at the cap and the deadline sweep."""

    def __init__(self, limits: Limits, loop: asyncio.AbstractEventLoop) -> None:
        self.limits = limits
        self.loop = loop
        self.open: set[Connection] = set()
        self._timeout_reply = _raw_reply(
            408,
            "request_timeout",
            f"the request header did not arrive within {limits.header_timeout:g}s",
        )
        self.refusal = _raw_reply(
            503, "too_many_connections", "the server is at its connection limit; retry",
            "Retry-After: 1\r\n",
        )
        self._interval = max(0.05, min(1.0, limits.header_timeout / 4, limits.keepalive_timeout / 4))
        self._sweeper: asyncio.TimerHandle | None = None
        self._next_log = 0.0
        self._at_cap = {"evicted": 0, "refused": 0}
        metrics.CONNECTIONS_LIMIT.set(limits.max_connections)

    def start(self) -> None:
        self._sweeper = self.loop.call_later(self._interval, self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        metrics.CONNECTIONS_OPEN.set(0)
        metrics.CONNECTIONS_LIMIT.set(0)

    def admit(self, connection: Connection) -> bool:
        """Take `connection` in, closing the longest-waiting idle one when at the cap; False
        when at the cap with every connection busy with a request."""
        if len(self.open) >= self.limits.max_connections:
            victim = self._longest_waiting()
            reason = "evicted" if victim is not None else "refused"
            metrics.CONNECTIONS_DROPPED.labels(reason).inc()
            self._note_cap(reason)
            if victim is None:
                return False
            self.discard(victim)
            victim.force_close()
        self.open.add(connection)
        return True

    def discard(self, connection: Connection) -> None:
        self.open.discard(connection)

    def _longest_waiting(self) -> Connection | None:
        """The connection to sacrifice: idle ones first (they lose nothing but a socket the
        client reopens), then the one whose header has been arriving longest."""
        idle: Connection | None = None
        partial: Connection | None = None
        for conn in self.open:
            if not conn.waiting:
                continue
            if conn.header_since is None:
                if idle is None or conn.waiting_since < idle.waiting_since:
                    idle = conn
            elif partial is None or conn.header_since < partial.header_since:  # type: ignore[operator]
                partial = conn
        return idle or partial

    def _note_cap(self, reason: str) -> None:
        self._at_cap[reason] += 1
        now = time.monotonic()
        if now < self._next_log:
            return
        self._next_log = now + _LOG_EVERY
        counts, self._at_cap = self._at_cap, {"evicted": 0, "refused": 0}
        log.warning(
            "connection limit reached (%d per worker): closed %d idle connection(s) to admit"
            " new ones and refused %d (the next line in %ds at the earliest; see metric"
            " keysvc_connections_dropped_total)",
            self.limits.max_connections, counts["evicted"], counts["refused"], int(_LOG_EVERY),
        )

    def _sweep(self) -> None:
        now = self.loop.time()
        limits = self.limits
        for conn in list(self.open):
            if not conn.waiting:
                continue  # a request in progress: its body has body_timeout
            if conn.header_since is not None:
                if now - conn.header_since >= limits.header_timeout:
                    metrics.CONNECTIONS_DROPPED.labels("header_timeout").inc()
                    conn.reply_and_close(self._timeout_reply)
            elif now - conn.waiting_since >= (
                limits.keepalive_timeout if conn.served else limits.header_timeout
            ):
                metrics.CONNECTIONS_DROPPED.labels(
                    "keepalive_timeout" if conn.served else "header_timeout"
                ).inc()
                self.discard(conn)
                conn.force_close()
        metrics.CONNECTIONS_OPEN.set(len(self.open))
        self._sweeper = self.loop.call_later(self._interval, self._sweep)


class Connection(web.RequestHandler):
    """One client connection. The deadlines need to know when aiohttp is waiting for the next
    request's header (`waiting`): that is its own test (`_waiter` pending), as in its keep-alive
    handling, read here because aiohttp offers it no other way."""

    __slots__ = ("_pool", "_latest_body", "waiting_since", "header_since", "served")

    def __init__(self, manager: web.Server, pool: Connections, **kwargs: Any) -> None:
        super().__init__(manager, loop=pool.loop, **kwargs)
        self._pool = pool
        self.waiting_since = pool.loop.time()
        """Since when the connection has waited for a request: opened, or last reply sent."""
        self.header_since: float | None = None
        """When the first byte of the next request arrived; None before it does."""
        self.served = 0
        self._latest_body: Any = None
        """The body stream of the latest request parsed (None before the first)."""

    @property
    def waiting(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._pool.admit(self):
            transport.write(self._pool.refusal)  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._pool.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.header_since is None and data and self.waiting:
            self.header_since = self._loop.time()
        super().data_received(data)
        if self.header_since is not None and not self.waiting:
            self.header_since = None  # the header is in: the request is aiohttp's now
        for message, payload in reversed(self._messages):
            if isinstance(message, RawRequestMessage):
                self._latest_body = payload
                break
        else:
            if self._messages:
                # The parser failed after a request's header (bad chunk framing in its body):
                # aiohttp queues a 400 for after that request, whose handler would wait for the
                # rest of a body that can no longer come. Fail the body now instead.
                self._end_body(RequestPayloadError("the body's framing is invalid"))

    def eof_received(self) -> bool:
        """The client shut down its sending side (a half-close). aiohttp would drop the
        connection unanswered; keysvc answers the request it has, then closes. A body still
        expected can no longer come: the handler reading it sees the connection reset (400)."""
        if self.waiting:  # between requests: nothing to answer
            self.force_close()
            return False
        self._end_body(ConnectionResetError("the client stopped sending"))
        self.close()  # no request after this one
        return True

    def _end_body(self, exc: Exception) -> None:
        """Make the body still expected, if any, fail with `exc`: only the latest request's can
        be. Its handler's read raises `exc`, and aiohttp's draining of the body after the reply
        stops at once."""
        payload = self._latest_body
        if payload is not None and not payload.is_eof():
            payload.set_exception(exc)
            payload.feed_eof()

    def reply_and_close(self, reply: bytes) -> None:
        self._pool.discard(self)
        if self.transport is not None:
            self.transport.write(reply)
        self.force_close()

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            # aiohttp's own replies: its router (a request target such as CONNECT's that no
            # route can match), its Expect handling (417), a handler's stray HTTPException.
            resp = http_exception_response(resp)
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self.served += 1
            self.header_since = None
            self.waiting_since = self._loop.time()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's reply to a request its parser refused (400), or to a handler that failed
        (500; keysvc's handlers catch their own errors, so this is a bug)."""
        if status >= 500:
            log.error("unhandled error in a request handler", exc_info=exc)
            code, text = "internal_error", "internal error"
        else:
            code, text = describe_parse_error(exc)
            log.info("refused a request that is not valid HTTP: %s", code)
        if request.writer.output_size > 0:  # a reply already started: nothing to add to it
            raise ConnectionError("a reply was already sent; closing the connection")
        response = error_response(status, code, text)
        response.force_close()
        return response


def handler_options(config: Any) -> dict[str, Any]:
    """aiohttp's RequestHandler options for keysvc: no access log, no automatic body
    decompression (keysvc.app decodes what it accepts itself), and aiohttp's own keep-alive
    timer only as a backstop behind the sweep's deadlines."""
    server = config.server
    return {
        "access_log": None,
        "auto_decompress": False,
        # After a reply sent before the body was read (a 401), aiohttp drains the rest of the
        # body before closing, so the client reads the reply rather than a reset: for as long
        # as a body may take to arrive at all.
        "lingering_time": server.body_timeout.total_seconds(),
        "keepalive_timeout": (
            server.keepalive_timeout + server.header_timeout
        ).total_seconds() + 60,
    }


@dataclass
class Listener:
    """A listening socket whose connections are `Connection`s. close() stops accepting; the
    runner's cleanup then drains what is open."""

    server: asyncio.AbstractServer
    connections: Connections

    def close(self) -> None:
        self.server.close()
        self.connections.stop()


async def listen(
    runner: web.AppRunner,
    config: Any,
    *,
    host: str | None = None,
    port: int | None = None,
    ssl_context: Any = None,
    reuse_port: bool = False,
) -> Listener:
    """Accept connections for `runner` (set up) on the config's address (or host/port)."""
    loop = asyncio.get_running_loop()
    server = config.server
    limits = Limits(
        max_connections=connection_budget(server.max_connections),
        header_timeout=server.header_timeout.total_seconds(),
        keepalive_timeout=server.keepalive_timeout.total_seconds(),
    )
    pool = Connections(limits, loop)
    manager = runner.server
    assert manager is not None, "runner.setup() first"
    options = handler_options(config)
    factory: Callable[[], Connection] = lambda: Connection(manager, pool, **options)  # noqa: E731
    listening = await loop.create_server(
        factory,
        server.host if host is None else host,
        server.port if port is None else port,
        ssl=ssl_context,
        # A TLS handshake never finished holds a socket the cap does not see yet (a
        # connection counts once it is made): give it the header's deadline, not asyncio's 60 s.
        ssl_handshake_timeout=limits.header_timeout if ssl_context is not None else None,
        reuse_port=reuse_port or None,
        backlog=1024,
    )
    pool.start()
    return Listener(listening, pool)
