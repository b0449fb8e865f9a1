"""The run side's HTTP client against bad input and broken servers: a bad --url, a token file
that is not one bearer token, an answer that is not HTTP or is cut short. Always a one-line
error (exit 2), never a traceback, never the client token or a URL password in it."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from keysvc.creds import CredsError, TokenClient, TokenRequestError
from keysvc.creds.http import RetryPolicy, Unreachable, post_json
from tests.creds.conftest import CONTEXT, invoke_cli, snapshot
from tests.creds.test_errors import AWS_OK, cli_apply_args_for, closed_port

SECRET = "s3cretToken"
QUICK = RetryPolicy(attempts=3, backoff=0.01)


def token_file(directory: Path, content: bytes) -> Path:
    path = directory / "client-token"
    path.write_bytes(content)
    path.chmod(0o600)
    return path


def cli_apply(
    url: str,
    token: Path,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, str]:
    (workdir / "main.tf").write_text("# the user's configuration\n")
    before = snapshot(workdir)
    code, out, err = invoke_cli(cli_apply_args_for(url, token, workdir), AWS_OK, monkeypatch, capsys)
    assert snapshot(workdir) == before  # nothing written, whatever failed
    assert out == "" and "Traceback" not in err and err.count("\n") == 1, err
    return code, out, err


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (f"{SECRET}\nsecond-line".encode(), "embedded newline"),
        (f"{SECRET} other".encode(), "space"),
        (f"{SECRET}\0".encode(), "NUL"),
        (b"\xff\xfe" + SECRET.encode(), "not UTF-8"),
        (f"{SECRET}\u00e9".encode(), "not ASCII"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_token_file_that_is_not_one_bearer_token(
    content: bytes,
    why: str,
    workdir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Was a ValueError (http.client: invalid header value, quoting the token) or a
    UnicodeDecodeError traceback."""
    token = token_file(tmp_path, content)
    code, _, err = cli_apply(
        f"http://127.0.0.1:{closed_port()}", token, workdir, monkeypatch, capsys
    )
    assert code == 2
    assert err.startswith(f"keysvc: error: the client token file {token} does not hold a valid")
    assert SECRET not in err and "second-line" not in err


def test_token_with_surrounding_whitespace_still_works(tmp_path: Path) -> None:
    body = b'{"token": "aaa.bbb.ccc"}'
    with raw_server([json_answer(body)]) as (url, requests):
        client = TokenClient.from_token_file(
            url, token_file(tmp_path, b"  abc-DEF_1.2~3+4/5==\n"), retry=QUICK
        )
        assert client.issue(CONTEXT, "aws.workload.identity") == "aaa.bbb.ccc"
    assert b"\r\nAuthorization: Bearer abc-DEF_1.2~3+4/5==\r\n" in requests[0]
    with pytest.raises(CredsError, match="client token file .* is empty"):
        TokenClient.from_token_file("http://127.0.0.1:1", token_file(tmp_path, b" \n"))


def test_library_client_refuses_a_bad_token_without_showing_it() -> None:
    with pytest.raises(CredsError) as caught:
        TokenClient("http://127.0.0.1:1", f"{SECRET}\r\nX-Injected: 1")
    assert SECRET not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:abc", "the keysvc URL ('http://127.0.0.1:abc') has a bad port"),
        ("http://127.0.0.1:99999", "the keysvc URL ('http://127.0.0.1:99999') has a bad port"),
        ("http://127.0.0.1:18182/a b", "the keysvc URL must be an http:// or https:// URL of"),
        ("http://127.0.0.1:18182/a\tb", "the keysvc URL must be an http:// or https:// URL of"),
        ("ftp://127.0.0.1", "the keysvc URL ('ftp://127.0.0.1') must be an http:// or https://"),
        ("http://[::1", "the keysvc URL ('http://[::1') is not a valid URL"),
        ("http://h/x?y=1", "the keysvc URL ('http://h/x?y=1') must not have a query"),
        (
            f"http://user:{SECRET}@127.0.0.1:18182",
            "the keysvc URL must not contain a user name or password",
        ),
        (f"http://user:{SECRET}@127.0.0.1:abc", "the keysvc URL must not contain a user name"),
        (f"http://{SECRET}@127.0.0.1:18182", "the keysvc URL must not contain a user name"),
    ],
)
def test_bad_url_is_refused_before_any_request(
    url: str,
    message: str,
    workdir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Were InvalidURL tracebacks (rc 1); a URL password was shown in the error."""
    code, _, err = cli_apply(url, token_file(tmp_path, b"tok"), workdir, monkeypatch, capsys)
    assert code == 2
    assert err.startswith(f"keysvc: error: {message}"), err
    assert SECRET not in err


@contextlib.contextmanager
def raw_server(answers: list[bytes]) -> Iterator[tuple[str, list[bytes]]]:
    """A loopback TCP server that reads each request whole, then sends the next of `answers`
    byte for byte and closes the connection. Yields its URL and the requests it read."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(10)
    requests: list[bytes] = []

    def read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += conn.recv(65536)
        return data

    def run() -> None:
        for answer in answers:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                requests.append(read_request(conn))
                conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", requests
    finally:
        listener.close()
        thread.join(5)


def json_answer(body: bytes, length: int | None = None) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body) if length is None else length}\r\n".encode()
        + b"Connection: close\r\n\r\n"
        + body
    )


def test_answer_that_is_not_http_is_one_line_and_not_retried(
    workdir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Was an http.client.BadStatusLine traceback."""
    with raw_server([b"garbage\r\n\r\n"] * 4) as (url, requests):
        code, _, err = cli_apply(
            url, token_file(tmp_path, SECRET.encode()), workdir, monkeypatch, capsys
        )
    assert code == 2
    assert err == (
        f"keysvc: error: keysvc at {url} did not issue a token: the answer is not valid HTTP"
        " (BadStatusLine)\n"
    )
    assert len(requests) == 1  # a server speaking something else will not start speaking HTTP
    assert f"Bearer {SECRET}".encode() in requests[0]


def test_answer_cut_short_is_retried() -> None:
    """Was an http.client.IncompleteRead traceback; it is as transient as a reset connection."""
    body = b'{"token": "aaa.bbb.ccc", "kid": "k", "alg": "RS256", "expires_at": 1}'
    answers = [json_answer(body[:10], length=len(body)), json_answer(body)]
    with raw_server(answers) as (url, requests):
        token = TokenClient(url, SECRET, retry=QUICK).issue(CONTEXT, "aws.workload.identity")
    assert token == "aaa.bbb.ccc"
    assert len(requests) == 2


def test_answer_cut_short_every_time_is_reported() -> None:
    answers = [json_answer(b'{"tok', length=100)] * QUICK.attempts
    with raw_server(answers) as (url, requests), pytest.raises(TokenRequestError) as caught:
        TokenClient(url, SECRET, retry=QUICK).issue(CONTEXT, "aws.workload.identity")
    assert str(caught.value) == (
        f"keysvc at {url} did not issue a token: the answer was cut short (after 3 attempts)"
    )
    assert len(requests) == QUICK.attempts


def test_malformed_token_in_the_answer_is_refused() -> None:
    """It would be written to files and printed as a variable as it is."""
    with raw_server([json_answer(b'{"token": "aaa.bbb\\nccc"}')]) as (url, _):
        with pytest.raises(TokenRequestError, match="answered with a malformed token") as caught:
            TokenClient(url, SECRET, retry=QUICK).issue(CONTEXT, "aws.workload.identity")
    assert "aaa" not in str(caught.value)


def test_a_header_http_refuses_never_shows_its_value() -> None:
    """post_json is also what revokes Vault tokens (X-Vault-Token): http.client's own message
    would quote the header, token and all."""
    with pytest.raises(Unreachable) as caught:
        post_json(
            f"http://127.0.0.1:{closed_port()}/v1/x",
            {},
            {"X-Vault-Token": f"{SECRET}\nX-Injected: 1"},
            timeout=1,
            retry=QUICK,
        )
    assert "holds a character HTTP does not allow" in str(caught.value)
    assert SECRET not in str(caught.value)
    with pytest.raises(Unreachable, match="the URL is not valid for HTTP"):
        post_json("http://127.0.0.1:abc/v1/x", {}, {}, timeout=1, retry=QUICK)
