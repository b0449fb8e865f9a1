"""What the token hot path must keep doing while it is made fast (see docs/performance.md):
the audit line's exact shape, the per-token metrics, the sign timeout, the reply's expiry
format and the audience check."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import select
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from keysvc import jose, logs
from keysvc.backends.base import BackendUnavailable, KeyVersion
from keysvc.backends.file import FileBackend, FileSettings
from keysvc.keyring import KeyRing, Lifecycle
from keysvc.tokens import IssuedToken, new_jti
from tests.conftest import file_config, write_key
from tests.service import RUN, start_service
from tests.verification import verify_once

AUDIT_FIELDS = [
    "time",
    "level",
    "logger",
    "message",
    "event",
    "endpoint",
    "client",
    "jti",
    "sub",
    "aud",
    "kid",
    "exp",
]
LIFE = Lifecycle(
    publish_lead=timedelta(hours=24), jwks_max_age=timedelta(minutes=15), max_ttl=timedelta(hours=2)
)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """keysvc's own logging set-up writing to a buffer; the root logger restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    logs.configure("info", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


async def test_audit_line_has_exactly_the_token_fields(
    key_dir: Path, log_stream: io.StringIO
) -> None:
    async with start_service(file_config(key_dir)) as svc:
        reply = await svc.issue()
        claims = await verify_once(svc.url, reply["token"], RUN["audience"])
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    (audit,) = [line for line in lines if line["logger"] == "keysvc.audit"]
    assert list(audit) == AUDIT_FIELDS
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", audit["time"])
    logged = datetime.strptime(audit["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(logged.timestamp() - claims["iat"]) < 5
    assert audit["level"] == "info" and audit["message"] == "token issued"
    assert audit["event"] == "token_issued" and audit["endpoint"] == "tokens"
    assert audit["client"] == "test" and audit["kid"] == reply["kid"]
    assert {k: audit[k] for k in ("jti", "sub", "aud", "exp")} == {
        k: claims[k] for k in ("jti", "sub", "aud", "exp")
    }


async def test_audit_lines_of_concurrent_tokens_are_whole_and_one_each(
    key_dir: Path, log_stream: io.StringIO
) -> None:
    """Lines written in a batch per loop iteration: every token still gets exactly its line."""
    async with start_service(file_config(key_dir)) as svc:
        replies = await asyncio.gather(*(svc.issue() for _ in range(40)))
        jtis = {(await verify_once(svc.url, r["token"], RUN["audience"]))["jti"] for r in replies}
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    audit = [line for line in lines if line["logger"] == "keysvc.audit"]
    assert all(list(line) == AUDIT_FIELDS for line in audit)
    assert len(jtis) == 40 and sorted(line["jti"] for line in audit) == sorted(jtis)


async def test_audit_goes_through_logging_when_something_else_listens(
    key_dir: Path, log_stream: io.StringIO
) -> None:
    """Another handler on the root logger (an embedding app's, a test's) gets ordinary records,
    and keysvc's own handler still writes the same line."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    extra = Collect()
    logging.getLogger().addHandler(extra)
    try:
        async with start_service(file_config(key_dir)) as svc:
            reply = await svc.issue()
    finally:
        logging.getLogger().removeHandler(extra)
    (record,) = [r for r in records if r.name == "keysvc.audit"]
    assert record.getMessage() == "token issued" and record.__dict__["kid"] == reply["kid"]
    (line,) = [
        json.loads(x) for x in log_stream.getvalue().splitlines() if '"keysvc.audit"' in x
    ]
    assert list(line) == AUDIT_FIELDS and line["jti"] == record.__dict__["jti"]


async def test_no_audit_line_below_info(key_dir: Path, log_stream: io.StringIO) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    async with start_service(file_config(key_dir)) as svc:
        await svc.issue()
    assert '"keysvc.audit"' not in log_stream.getvalue()


def test_log_line_with_exception_and_odd_values(log_stream: io.StringIO) -> None:
    log = logging.getLogger("keysvc.test")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed %s", "here", extra={"when": datetime(2026, 1, 2, tzinfo=UTC)})
    log.debug("not shown at info")
    (line,) = [json.loads(x) for x in log_stream.getvalue().splitlines()]
    assert list(line) == ["time", "level", "logger", "message", "when", "error", "traceback"]
    assert line["message"] == "failed here" and line["level"] == "error"
    assert line["when"] == "2026-01-02 00:00:00+00:00"  # default=str for what JSON lacks
    assert line["error"] == "ValueError" and "raise ValueError" in line["traceback"]
    log.info("huge", extra={"n": 2**70, "k": {1: "x"}})  # beyond orjson: still one line
    last = json.loads(log_stream.getvalue().splitlines()[-1])
    assert last["n"] == 2**70 and last["k"] == {"1": "x"}


def test_batched_lines_are_written_whole_and_at_most_pipe_buf_per_write() -> None:
    """On a pipe, writes up to PIPE_BUF are atomic: so lines from two workers never mix."""
    writes: list[str] = []

    class Recording(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    handler = logs.JSONLineHandler(Recording())
    lines = [b"x" * n for n in (100, 3000, 995, 1, 4095, 5000, 10, 20)]
    handler.write_lines(lines)
    assert "".join(writes) == "".join(line.decode() + "\n" for line in lines)
    assert all(w.endswith("\n") for w in writes)
    # 101+3001 | 996+2 | 4096 exactly | 5001 (one line, longer than PIPE_BUF, alone) | 11+21
    assert [len(w) for w in writes] == [3102, 998, 4096, 5001, 32]
    assert all(len(w) <= select.PIPE_BUF for w in writes if w.count("\n") > 1)


def test_jti_is_a_canonical_random_uuid() -> None:
    seen = {new_jti() for _ in range(2000)}
    assert len(seen) == 2000
    for jti in seen:
        parsed = uuid.UUID(jti)
        assert str(parsed) == jti
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_every_token_per_key(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    write_key(directory, "ec-p256", datetime.now(UTC) - timedelta(days=3))
    async with start_service(file_config(directory)) as svc:
        kid = (await svc.issue())["kid"]
        issued = {"endpoint": "tokens", "kid": kid, "backend": "local", "outcome": "issued"}
        before = _sample("keysvc_tokens_issued_total", issued)
        signed = _sample("keysvc_sign_seconds_count", {"backend": "local"})
        for _ in range(3):
            await svc.issue()
        assert _sample("keysvc_tokens_issued_total", issued) == before + 3
        assert _sample("keysvc_sign_seconds_count", {"backend": "local"}) == signed + 3
        # A rotation: the new key counts under its own kid from its first token.
        write_key(directory, "ec-p256", datetime.now(UTC) - timedelta(days=2))
        await svc.ring.refresh()
        new_kid = (await svc.issue())["kid"]
        assert new_kid != kid
        assert _sample("keysvc_tokens_issued_total", {**issued, "kid": new_kid}) == 1
        assert _sample("keysvc_tokens_issued_total", issued) == before + 3


class SlowBackend(FileBackend):
    """A file backend that takes `delay` seconds to answer, like a remote KMS on a bad day."""

    delay = 1.0

    def signs_at_once(self, version: KeyVersion, alg: jose.Algorithm) -> bool:
        return False  # remote: never at once

    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        await asyncio.sleep(self.delay)
        return await super().sign(version, alg, message)


async def test_sign_timeout_becomes_backend_unavailable(tmp_path: Path) -> None:
    write_key(tmp_path, "ec-p256")
    backend = SlowBackend("slow", FileSettings(path=tmp_path))
    backend.delay = 60.0  # only the timeout ends the call (and cancels the wait)
    ring = KeyRing([backend], LIFE, sign_timeout=0.2)
    await ring.refresh(raise_errors=True)
    key = ring.view().signer
    assert key is not None
    errors = {"backend": "slow", "operation": "sign"}
    before = _sample("keysvc_backend_errors_total", errors)
    started = asyncio.get_running_loop().time()
    with pytest.raises(BackendUnavailable, match=r"backend 'slow' did not sign within 0.2s"):
        await ring.sign(key, b"header.payload")
    assert asyncio.get_running_loop().time() - started < 10  # the 0.2 s timeout, not 60 s
    assert _sample("keysvc_backend_errors_total", errors) == before + 1
    backend.delay = 0.01  # within the timeout: a valid signature
    signature = await ring.sign(key, b"header.payload")
    jose.verify_local(key.version.public_key, key.alg, b"header.payload", signature)
    await ring.close()


class ThreadRecordingBackend(FileBackend):
    """A file backend that records the thread each signature is made on."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.threads: list[str] = []

    def sign_now(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        self.threads.append(threading.current_thread().name)
        return super().sign_now(version, alg, message)


@pytest.mark.parametrize("rsa_signing", ["loop", "threads"])
@pytest.mark.parametrize(
    "key_type, on_loop", [("ec-p256", True), ("ed25519", True), ("rsa-2048", None)]
)
async def test_file_backend_keys_sign_on_the_loop_or_rsa_per_rsa_signing(
    tmp_path: Path, key_type: str, on_loop: bool | None, rsa_signing: str
) -> None:
    """Every file key signs in-process; EC and Ed25519 on the event loop's thread whatever the
    setting, RSA on it with "loop" and in the backend's pool with "threads"."""
    write_key(tmp_path, key_type)
    backend = ThreadRecordingBackend("f", FileSettings(path=tmp_path))
    ring = KeyRing([backend], LIFE, rsa_signing=rsa_signing)  # type: ignore[arg-type]
    await ring.refresh(raise_errors=True)
    key = ring.view().signer
    assert key is not None
    await ring.sign(key, b"h.p")  # an RSA key's first signature waits for its check (below)
    backend.threads.clear()
    assert backend.signs_at_once(key.version, key.alg)
    signature = await ring.sign(key, b"h.p")
    jose.verify_local(key.version.public_key, key.alg, b"h.p", signature)
    expected = on_loop if on_loop is not None else rsa_signing == "loop"
    loop_thread = threading.current_thread().name
    assert (backend.threads == [loop_thread]) is expected, backend.threads
    if not expected:
        assert backend.threads[0].startswith("sign")
    await ring.close()


async def test_an_rsa_key_signs_on_the_loop_only_once_it_is_checked(tmp_path: Path) -> None:
    """A file backend's RSA key is checked before its first signature (up to a second for
    RSA-4096; the two newest keys ahead, in the background). Until then its signatures go
    through the backend's pool even with "loop", so the check never holds the event loop."""
    now = datetime.now(UTC)
    active = write_key(tmp_path, "rsa-2048", now - timedelta(days=2))
    write_key(tmp_path, "rsa-2048", now - timedelta(hours=1))  # the two newest: pending,
    write_key(tmp_path, "rsa-2048", now)  # and checked ahead
    backend = ThreadRecordingBackend("f", FileSettings(path=tmp_path))
    ring = KeyRing([backend], LIFE, rsa_signing="loop")
    await ring.refresh(raise_errors=True)
    key = ring.view().signer
    assert key is not None and key.version.version_id == active.name
    assert not backend.signs_at_once(key.version, key.alg)
    for _ in range(2):
        signature = await ring.sign(key, b"h.p")
        jose.verify_local(key.version.public_key, key.alg, b"h.p", signature)
    assert backend.signs_at_once(key.version, key.alg)
    assert backend.threads[0].startswith("sign")
    assert backend.threads[1] == threading.current_thread().name
    await ring.close()


class CountingBackend(FileBackend):
    """A file backend that records how its at-once signatures arrive, and can fail one."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.calls: list[bytes] = []
        self.fail_on = b""

    def sign_now(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        self.calls.append(message)
        if message == self.fail_on:
            raise RuntimeError("token removed")
        return super().sign_now(version, alg, message)


async def test_signatures_of_one_loop_iteration_are_made_together(tmp_path: Path) -> None:
    """Concurrent requests are signed in one batch, each with its own message; one that fails
    fails alone, and one whose caller gave up is not signed at all."""
    write_key(tmp_path, "ec-p256")
    backend = CountingBackend("batch", FileSettings(path=tmp_path))
    ring = KeyRing([backend], LIFE)
    await ring.refresh(raise_errors=True)
    key = ring.view().signer
    assert key is not None
    messages = [f"h.p{i}".encode() for i in range(20)]
    backend.fail_on = messages[7]
    tasks = [asyncio.ensure_future(ring.sign(key, m)) for m in messages]
    given_up = asyncio.ensure_future(ring.sign(key, b"h.gone"))
    await asyncio.sleep(0)  # every request reaches the batch...
    given_up.cancel()  # ...and this caller leaves before it is made
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert backend.calls == messages  # in order, all in one batch, the cancelled one skipped
    for message, result in zip(messages, results, strict=True):
        if message == backend.fail_on:
            assert isinstance(result, BackendUnavailable)
            assert "failed to sign" in str(result) and "token removed" not in str(result)
        else:
            assert isinstance(result, bytes)
            jose.verify_local(key.version.public_key, key.alg, message, result)
    with pytest.raises(asyncio.CancelledError):
        await given_up
    await ring.close()


@pytest.mark.parametrize("expires_at", [0, 1795797550, 2**31 + 7, 4102444800])
def test_reply_expiry_is_iso_utc(expires_at: int) -> None:
    issued = IssuedToken("t", "k", "ES256", expires_at, "j", {}, "b")
    expected = datetime.fromtimestamp(expires_at, UTC).isoformat().replace("+00:00", "Z")
    assert issued.reply()["expires_at"] == expected
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", expected)


@pytest.mark.parametrize(
    "audience, ok",
    [
        ("aws.workload.identity", True),
        ("api://example/audience", True),
        ("ü-ünïcode", True),
        ("tab\there", False),
        ("line\nbreak", False),
        ("\x1f", False),
        ("del\x7f", True),
        ("   ", False),
        ("", False),
    ],
)
async def test_audience_check(key_dir: Path, audience: str, ok: bool) -> None:
    async with start_service(file_config(key_dir)) as svc:
        status, _, body = await svc.request(
            "POST", "/v1/tokens", json={**RUN, "audience": audience}
        )
    assert (status == 200) is ok, body
    if not ok:
        assert body["error"]["code"] == "invalid_request" and "audience" in body["error"]["message"]


def test_signing_input_layout() -> None:
    """Compact, key order kept, non-ASCII as UTF-8 (not \\u escapes)."""
    claims: dict[str, Any] = {"iss": "https://x", "aud": "ü", "n": 1, "l": [1, "a"]}
    message = jose.signing_input(b"HDR", claims)
    header, payload = message.split(b".")
    assert header == b"HDR"
    assert jose.b64url_decode(payload) == '{"iss":"https://x","aud":"ü","n":1,"l":[1,"a"]}'.encode()


ERROR_CASES = [
    ("GET", "/v1/tokens", 405, "POST"),
    ("PUT", "/v1/sign", 405, "POST"),
    ("HEAD", "/v1/sign", 405, "POST"),
    ("POST", "/.well-known/jwks", 405, "GET,HEAD"),
    ("POST", "/.well-known/openid-configuration", 405, "GET,HEAD"),
    ("DELETE", "/metrics", 405, "GET,HEAD"),
    ("OPTIONS", "/v1/keys", 405, "GET,HEAD"),
    ("POST", "/healthz", 405, "GET,HEAD"),
    ("PATCH", "/readyz", 405, "GET,HEAD"),
    ("GET", "/nope", 404, None),
    ("GET", "/v1/tokens/", 404, None),
    ("POST", "/v1/tokens/", 404, None),
    ("GET", "/.well-known/jwks/x", 404, None),
    ("GET", "/v1//tokens", 404, None),
    ("DELETE", "/", 404, None),
]


async def test_unknown_paths_and_methods_answer_json(key_dir: Path) -> None:
    async with start_service(file_config(key_dir)) as svc:
        for method, path, status, allow in ERROR_CASES:
            code = "not_found" if status == 404 else "method_not_allowed"
            before = _sample("keysvc_requests_rejected_total", {"code": code})
            async with svc.session.request(method, svc.url + path) as reply:
                assert (reply.status, reply.headers.get("Allow")) == (status, allow), (method, path)
                assert reply.headers["Content-Type"] == "application/json"
                if method != "HEAD":
                    assert (await reply.json())["error"]["code"] == code
            assert _sample("keysvc_requests_rejected_total", {"code": code}) == before + 1
        for path in ("/.well-known/jwks", "/.well-known/openid-configuration", "/healthz"):
            async with svc.session.head(svc.url + path) as reply:
                assert reply.status == 200 and await reply.read() == b""


async def test_unexpected_handler_error_is_a_json_500(caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from keysvc.app import add_routes

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail")

    app = web.Application()
    add_routes(app.router, {"/boom": {"GET": boom}})
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        reply = await client.get("/boom")
        assert reply.status == 500
        assert await reply.json() == {
            "error": {"code": "internal_error", "message": "internal error"}
        }
    assert any("unhandled error on GET /boom" in r.getMessage() for r in caplog.records)
