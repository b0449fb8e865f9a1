"""The raw-socket corpus: what an HTTP client library (and so schemathesis) cannot send.

Each case writes bytes to a socket of the real service and reads what comes back: requests
aiohttp's parser refuses, bodies that do not decode, clients that are slow, that stop half-way
or that half-close. Every reply must be keysvc's JSON error shape and quote nothing the client
sent; the log must hold no traceback and no secret.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client import REGISTRY

from tests.conftest import file_config
from tests.service import RunningService, start_service

SECRET = "s3cr3t-bearer-value"
"""Sent inside every malformed request: it must never come back, nor reach the log."""

FAST = {"server": {"header_timeout": "1s", "body_timeout": "1s", "keepalive_timeout": "1s"}}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_reply(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(body)))
    return Reply(status, headers, body[:length], raw)


async def connect(svc: RunningService) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(svc.url)
    return await asyncio.open_connection(parts.hostname, parts.port)


async def read_all(reader: asyncio.StreamReader, timeout: float = 15) -> bytes:
    """Everything until the server closes (a reset counts as a close)."""
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
    except ConnectionResetError:
        pass
    return data


async def exchange(svc: RunningService, raw: bytes, *, half_close: bool = False) -> Reply:
    """Send `raw` (TOKEN replaced by the client's bearer token) on a new connection; the reply
    to it, read until the server closes."""
    reader, writer = await connect(svc)
    writer.write(raw.replace(b"TOKEN", svc.client_token.encode()))
    if half_close:
        writer.write_eof()
    data = await read_all(reader)
    writer.close()
    assert data, "the connection closed without a reply"
    return parse_reply(data)


def assert_json_error(reply: Reply, status: int, code: str) -> dict[str, str]:
    assert reply.status == status, reply.raw
    assert reply.headers["content-type"].startswith("application/json"), reply.raw
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body
    assert SECRET.encode() not in reply.raw, reply.raw
    return body["error"]


def assert_clean_log(caplog: pytest.LogCaptureFixture, token: str = SECRET) -> None:
    for record in caplog.records:
        assert not record.exc_info, record.getMessage()
        assert record.levelno < logging.ERROR, record.getMessage()
    assert SECRET not in caplog.text and token not in caplog.text
    assert "Traceback" not in caplog.text


@pytest.fixture
async def svc(key_dir: Path) -> AsyncIterator[RunningService]:
    async with start_service({**file_config(key_dir), **FAST}) as running:
        yield running


def rejected(code: str) -> float:
    return REGISTRY.get_sample_value("keysvc_requests_rejected_total", {"code": code}) or 0.0


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("keysvc_connections_dropped_total", {"reason": reason}) or 0.0


GET = b"GET /v1/keys HTTP/1.1\r\nHost: x\r\n"
POST = b"POST /v1/sign HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOKEN\r\n"
S = SECRET.encode()

PARSER_CASES = [
    ("stray CR in a header value", GET + b"Authorization: Bearer " + S + b"\rx\r\n\r\n",
     "malformed_header"),
    ("NUL in a header value", GET + b"Authorization: Bearer " + S + b"\x00\r\n\r\n",
     "malformed_header"),
    ("DEL in a header value", GET + b"Authorization: Bearer " + S + b"\x7f\r\n\r\n",
     "malformed_header"),
    ("folded header", GET + b"Authorization: Bearer\r\n " + S + b"\r\n\r\n", "malformed_header"),
    ("space before the colon", GET + b"Authorization : Bearer " + S + b"\r\n\r\n",
     "malformed_header"),
    ("header name with a NUL", GET + b"X-" + S + b"\x00: 1\r\n\r\n", "malformed_header"),
    ("over-long header line", GET + b"X-Pad: " + S + b"a" * 9000 + b"\r\n\r\n", "line_too_long"),
    ("over-long request target", b"GET /" + S + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     "line_too_long"),
    ("not a request line", S + b"\r\n\r\n", "malformed_request_line"),
    ("bad method", b"G@T /" + S + b" HTTP/1.1\r\nHost: x\r\n\r\n", "malformed_request_line"),
    ("bad version", b"GET /" + S + b" HTTP/9.9\r\nHost: x\r\n\r\n", "malformed_request_line"),
    ("bare LF line ends", b"GET /" + S + b" HTTP/1.1\nHost: x\n\n", "malformed_request_line"),
    ("TLS handshake on the HTTP port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + S,
     "malformed_request_line"),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "unsupported_protocol"),
    ("no Host in HTTP/1.1", b"GET /healthz HTTP/1.1\r\nX-A: " + S + b"\r\n\r\n", "missing_host"),
    ("bad chunk size", POST + b"Content-Type: application/json\r\nTransfer-Encoding: chunked"
     b"\r\n\r\nzz" + S + b"\r\n{}\r\n0\r\n\r\n", "malformed_body_framing"),
    ("bad chunk extension", POST + b"Content-Type: application/json\r\nTransfer-Encoding: chunked"
     b'\r\n\r\n2;x="' + S + b"\r\n{}\r\n0\r\n\r\n", "malformed_body_framing"),
    ("Content-Length and chunked", POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n0\r\n\r\n", "malformed_body_framing"),
    ("two Content-Lengths", POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
     "malformed_body_framing"),
    ("Content-Length not a number", POST + b"Content-Length: " + S + b"\r\n\r\n",
     "malformed_body_framing"),
    ("bad trailer", POST + b"Content-Type: application/json\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n2\r\n{}\r\n0\r\n" + S + b"\x00: x\r\n\r\n", "malformed_header"),
]


@pytest.mark.parametrize(("raw", "code"), [c[1:] for c in PARSER_CASES],
                         ids=[c[0] for c in PARSER_CASES])
async def test_what_the_parser_refuses_is_a_json_400_quoting_nothing(
    svc: RunningService, caplog: pytest.LogCaptureFixture, raw: bytes, code: str
) -> None:
    caplog.set_level(logging.DEBUG)
    before = rejected(code)
    reply = await exchange(svc, raw)
    assert_json_error(reply, 400, code)
    assert rejected(code) == before + 1
    lines = [r for r in caplog.records if r.name == "keysvc.connections"]
    assert [r.getMessage() for r in lines] == [f"refused a request that is not valid HTTP: {code}"]
    assert_clean_log(caplog, svc.client_token)


async def test_aiohttp_made_replies_are_json_too(svc: RunningService) -> None:
    """Replies aiohttp makes before keysvc's handlers run: its router's, its Expect handling."""
    reply = await exchange(svc, b"CONNECT " + S + b":443 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert_json_error(reply, 404, "not_found")
    reply = await exchange(
        svc, POST + b"Expect: " + S + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    assert_json_error(reply, 417, "expectation_failed")
    reply = await exchange(svc, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert_json_error(reply, 404, "not_found")


def post_sign(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return (
        POST + b"Content-Type: application/json\r\nConnection: close\r\n" + extra
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


CLAIMS = b'{"claims": {"sub": "corpus", "aud": "a"}}'


@pytest.mark.parametrize(
    ("coding", "body"),
    [("deflate", b"not deflate " + S),
     ("gzip", b"\x1f\x8b\x08\x00" + S), ("deflate", zlib.compress(CLAIMS)[:-6]),
     ("gzip", gzip.compress(CLAIMS) + b"trailing")],
    ids=["deflate garbage", "gzip garbage", "deflate cut short", "gzip with trailing bytes"],
)
async def test_a_corrupt_compressed_body_is_400_with_one_log_line(
    svc: RunningService, caplog: pytest.LogCaptureFixture, coding: str, body: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    header = b"Content-Encoding: " + coding.encode()
    assert_json_error(await exchange(svc, post_sign(body, header)), 400, "malformed_body")
    # Without a valid token the body is never read: 401, and aiohttp's draining of it after
    # the reply must not log a traceback either.
    unauthorized = post_sign(body, header).replace(b"Bearer TOKEN", b"Bearer wrong")
    assert_json_error(await exchange(svc, unauthorized), 401, "unauthorized")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 1 and lines[0].startswith("refused a request body: the body is not")
    assert_clean_log(caplog, svc.client_token)


async def test_compressed_bodies_that_decode_are_served(svc: RunningService) -> None:
    for coding, data in (("gzip", gzip.compress(CLAIMS)), ("deflate", zlib.compress(CLAIMS)),
                         ("identity", CLAIMS)):
        reply = await exchange(svc, post_sign(data, b"Content-Encoding: " + coding.encode()))
        assert reply.status == 200, reply.raw
        assert set(reply.json()) == {"token", "kid", "alg", "expires_at"}


async def test_compression_bombs_and_unknown_codings_are_refused(svc: RunningService) -> None:
    bomb = zlib.compress(b'{"claims": {"x": "' + b"a" * (10 * 1024 * 1024) + b'"}}', 9)
    assert len(bomb) < svc.config.server.max_body_bytes
    reply = await exchange(svc, post_sign(bomb, b"Content-Encoding: deflate"))
    assert_json_error(reply, 413, "body_too_large")
    for coding in (b"br", b"gzip, gzip", S):
        reply = await exchange(svc, post_sign(CLAIMS, b"Content-Encoding: " + coding))
        assert_json_error(reply, 415, "unsupported_content_encoding")
    reply = await exchange(
        svc, post_sign(gzip.compress(CLAIMS), b"Content-Encoding: gzip", b"Content-Encoding: gzip")
    )
    assert_json_error(reply, 415, "unsupported_content_encoding")


async def test_two_authorization_headers_are_refused(svc: RunningService) -> None:
    reply = await exchange(
        svc, GET + b"Authorization: Bearer TOKEN\r\nAuthorization: Bearer " + S
        + b"\r\nConnection: close\r\n\r\n"
    )
    assert_json_error(reply, 400, "duplicate_header")
    reply = await exchange(svc, GET + b"Authorization: Bearer TOKEN\r\nConnection: close\r\n\r\n")
    assert reply.status == 200


# -- slow clients ---------------------------------------------------------------------------


async def test_a_header_that_never_ends_gets_408_and_the_connection_closes(
    svc: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    before = dropped("header_timeout")
    reply = await exchange(svc, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Token: " + S)
    assert_json_error(reply, 408, "request_timeout")
    assert reply.headers["connection"] == "close"
    assert dropped("header_timeout") == before + 1
    assert_clean_log(caplog)


async def test_a_trickled_header_is_cut_off(svc: RunningService) -> None:
    """A slowloris client: a header line every 200 ms, well past header_timeout (1 s). The
    deadline counts from the first byte, so the trickle does not extend it."""
    reader, writer = await connect(svc)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:
        for _ in range(100):  # 20 s: far past the deadline
            await asyncio.sleep(0.2)
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()

    trickling = asyncio.create_task(trickle())
    data = await read_all(reader, timeout=15)
    closed_before_the_end = not trickling.done() or trickling.exception() is not None
    trickling.cancel()
    writer.close()
    assert closed_before_the_end
    if data:  # a client still writing may see a reset before the 408 it was sent
        assert_json_error(parse_reply(data), 408, "request_timeout")


async def test_a_connection_that_sends_nothing_is_closed(svc: RunningService) -> None:
    before = dropped("header_timeout")
    reader, writer = await connect(svc)
    assert await read_all(reader) == b""  # closed silently: there was no request to answer
    writer.close()
    assert dropped("header_timeout") == before + 1


async def test_an_idle_kept_alive_connection_is_closed(svc: RunningService) -> None:
    before = dropped("keepalive_timeout")
    reader, writer = await connect(svc)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = parse_reply(await read_all(reader))  # the reply, then the close after 1 s idle
    writer.close()
    assert reply.status == 200 and reply.json() == {"status": "ok"}
    assert "connection" not in reply.headers  # it was kept alive until the idle deadline
    assert dropped("keepalive_timeout") == before + 1


async def test_a_body_that_never_ends_gets_408(
    svc: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await connect(svc)
    writer.write(POST.replace(b"TOKEN", svc.client_token.encode())
                 + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"claims")
    reply = parse_reply(await read_all(reader))
    writer.close()
    assert_json_error(reply, 408, "request_timeout")
    assert_clean_log(caplog, svc.client_token)


async def test_bad_chunk_framing_after_the_header_is_answered_at_once(
    svc: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    """The header arrives first and the handler starts reading the body; the framing error
    in a later segment must end that read (not leave it waiting for body_timeout)."""
    reader, writer = await connect(svc)
    writer.write(POST.replace(b"TOKEN", svc.client_token.encode())
                 + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.write(b"zz" + S + b"\r\n")
    reply = parse_reply(await read_all(reader, timeout=0.9))  # before body_timeout (1 s)
    writer.close()
    assert_json_error(reply, 400, "malformed_body_framing")
    assert_clean_log(caplog, svc.client_token)


# -- half-closed connections ------------------------------------------------------------------


async def test_a_half_closed_client_still_gets_its_reply(svc: RunningService) -> None:
    reply = await exchange(svc, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", half_close=True)
    assert reply.status == 200 and reply.json() == {"status": "ok"}
    reply = await exchange(svc, post_sign(CLAIMS), half_close=True)
    assert reply.status == 200 and "token" in reply.json()
    reply = await exchange(svc, GET + b"Authorization: Bearer " + S + b"\rx\r\n\r\n",
                           half_close=True)
    assert_json_error(reply, 400, "malformed_header")


async def test_half_closing_in_the_middle_of_a_body_is_a_400_at_once(
    svc: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    raw = post_sign(CLAIMS)[:-10]  # the body announced, part of it sent, then the client's FIN
    reader, writer = await connect(svc)
    writer.write(raw.replace(b"TOKEN", svc.client_token.encode()))
    writer.write_eof()
    reply = parse_reply(await read_all(reader, timeout=0.9))  # before body_timeout (1 s)
    writer.close()
    assert_json_error(reply, 400, "incomplete_body")
    assert_clean_log(caplog, svc.client_token)


async def test_half_closing_between_requests_or_mid_header_just_closes(
    svc: RunningService,
) -> None:
    for raw in (b"", b"GET /healthz HTTP/1.1\r\nHo"):
        reader, writer = await connect(svc)
        writer.write(raw)
        writer.write_eof()
        assert await read_all(reader, timeout=0.9) == b""
        writer.close()


# -- the connection cap ---------------------------------------------------------------------


async def test_at_the_cap_the_longest_idle_connection_makes_room(
    key_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = {**file_config(key_dir), "server": {"max_connections": 5}}
    async with start_service(config) as svc:
        before = dropped("evicted")
        idle = [await connect(svc) for _ in range(5)]
        partial = []
        for _ in range(5):  # half-sent headers: evicted after the idle ones
            reader, writer = await connect(svc)
            writer.write(b"GET /healthz HTTP/1.1\r\nHo")
            partial.append((reader, writer))
        for _ in range(3):  # the first evicts the oldest half-sent one; then there is room
            reply = await exchange(svc, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert reply.status == 200
        assert dropped("evicted") == before + 6
        for reader, writer in idle:  # idle ones went first, every one of them
            assert await read_all(reader, timeout=5) == b""
            writer.close()
        await asyncio.sleep(0.2)
        assert [reader.at_eof() for reader, _ in partial] == [True, False, False, False, False]
        for _, writer in partial:
            writer.close()
        warnings = [r for r in caplog.records if "connection limit reached" in r.getMessage()]
        assert len(warnings) == 1  # rate-limited: one line for the burst, not one per connection
        assert "(5 per worker)" in warnings[0].getMessage()


async def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503(key_dir: Path) -> None:
    config = {**file_config(key_dir), "server": {"max_connections": 2, "body_timeout": "5s"}}
    async with start_service(config) as svc:
        before = dropped("refused")
        busy = []
        for _ in range(2):  # each handler waits for a body still arriving: busy, not idle
            reader, writer = await connect(svc)
            writer.write(post_sign(CLAIMS)[:-5].replace(b"TOKEN", svc.client_token.encode()))
            await writer.drain()
            busy.append((reader, writer))
        await asyncio.sleep(0.3)
        reader, writer = await connect(svc)
        reply = parse_reply(await read_all(reader, timeout=5))
        writer.close()
        assert_json_error(reply, 503, "too_many_connections")
        assert reply.headers["retry-after"] == "1"
        assert dropped("refused") == before + 1
        for _, writer in busy:  # their bodies complete: they are served
            writer.write(CLAIMS[-5:])
        for reader, writer in busy:
            assert parse_reply(await read_all(reader)).status == 200
            writer.close()
