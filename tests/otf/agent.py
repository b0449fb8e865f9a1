"""OTF's runner side of `POST /otfapi/jobs/{job_id}/dynamic-credentials`, byte for byte.

otf-agent and otf-job call it through internal/runner/api/client.go: `newRequest("POST",
"jobs/<id>/dynamic-credentials", &{Audience})` on internal/http/client.go's Client, whose
NewRequest sets `Authorization: Bearer <job token>`, `Accept` and `Content-Type`
`application/vnd.api+json`, the default header `User-Agent: otf-agent`, and a body of
`json.Marshal` (the struct has no jsonapi tags). Go's net/http writes the request line, `Host`,
`User-Agent`, `Content-Length`, the other headers sorted by name, then the transport's
`Accept-Encoding: gzip`. The reply's body is read raw (`c.Do(ctx, req, &buf)` with a
bytes.Buffer): on 200 it is the token.
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from email.message import Message


def go_json_string(value: str) -> str:
    """A string as Go's json.Marshal writes it: UTF-8, with <, >, &, U+2028 and U+2029 escaped."""
    text = json.dumps(value, ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def request_bytes(host: str, job_id: str, job_token: str, audience: str) -> bytes:
    """The bytes otf-agent writes for one token request to `host` (host:port, as in its URL)."""
    body = ('{"audience":' + go_json_string(audience) + "}").encode()
    head = (
        f"POST /otfapi/jobs/{job_id}/dynamic-credentials HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "User-Agent: otf-agent\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Accept: application/vnd.api+json\r\n"
        f"Authorization: Bearer {job_token}\r\n"
        "Content-Type: application/vnd.api+json\r\n"
        "Accept-Encoding: gzip\r\n"
        "\r\n"
    )
    return head.encode() + body


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def exchange(address: tuple[str, int], raw: bytes) -> Reply:
    """Send `raw` on a new connection and read one HTTP reply (blocking)."""
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        return Reply(response.status, response.headers, response.read())


def ask(url: str, job_id: str, job_token: str, audience: str) -> Reply:
    """otf-agent asking the server at `url` (http://127.0.0.1:PORT) for a token."""
    host = url.removeprefix("http://")
    address, port = host.rsplit(":", 1)
    return exchange((address, int(port)), request_bytes(host, job_id, job_token, audience))
