"""A small JSON-over-HTTP POST with brief retries, on the standard library only: the run side
runs inside a Terraform run and must not pull in the service's dependencies.

Retried: connection failures, timeouts, answers cut short, and 502/503/504 (honouring a short
`Retry-After`). Every other answer is returned to the caller, which knows what it means. A
request that cannot be sent (a bad URL or header value) or an answer that is not HTTP is
`Unreachable` at once, with a message that quotes neither (they may hold a token).
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RETRY_STATUSES = frozenset({502, 503, 504})
MAX_RETRY_AFTER = 5.0


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # parsed JSON, or None when the body was not JSON


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff: float = 0.5  # seconds before the 2nd attempt, doubling after

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), MAX_RETRY_AFTER)
            except ValueError:
                pass
        return self.backoff * (2 ** (attempt - 1))


DEFAULT_RETRY = RetryPolicy()


class Unreachable(Exception):
    """Every attempt failed without an answer that is not retried; the message says why
    (no URL credentials, no body)."""


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _send(
    request: urllib.request.Request, timeout: float, ssl_context: ssl.SSLContext | None
) -> tuple[Reply, str | None]:
    """One attempt: the answer and its Retry-After (for an HTTP error status)."""
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=ssl_context) as response:
            return Reply(response.status, _parse(response.read())), None
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, _parse(exc.read())), exc.headers.get("Retry-After")


def post_json(
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    timeout: float,
    retry: RetryPolicy = DEFAULT_RETRY,
    ssl_context: ssl.SSLContext | None = None,
) -> Reply:
    data = json.dumps(body).encode()
    last = "no attempt made"
    for attempt in range(1, retry.attempts + 1):
        retry_after: str | None = None
        try:
            request = urllib.request.Request(
                url,
                data=data,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    **headers,
                },
            )
            reply, retry_after = _send(request, timeout, ssl_context)
            if reply.status not in RETRY_STATUSES:
                return reply
            last = f"HTTP {reply.status}" + _error_detail(reply.body)
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLError):
                raise Unreachable(f"TLS error: {exc.reason}") from None
            last = str(exc.reason)
        except http.client.IncompleteRead:
            last = "the answer was cut short"
        except TimeoutError:
            last = f"no answer within {timeout:g}s"
        except OSError as exc:  # also RemoteDisconnected: closed without an answer
            last = exc.strerror or type(exc).__name__
        except http.client.InvalidURL:
            # its message, like ValueError's below, quotes the URL or a header value, which
            # may be a token: only the kind of failure is told
            raise Unreachable("the URL is not valid for HTTP") from None
        except http.client.HTTPException as exc:  # BadStatusLine, LineTooLong, ...
            raise Unreachable(f"the answer is not valid HTTP ({type(exc).__name__})") from None
        except ValueError:  # a control character in a header, an unknown URL scheme, ...
            raise Unreachable(
                "the request could not be sent: the URL or a header holds a character HTTP"
                " does not allow"
            ) from None
        if attempt < retry.attempts:
            time.sleep(retry.delay(attempt, retry_after))
    raise Unreachable(f"{last} (after {retry.attempts} attempts)")


def _error_detail(body: Any) -> str:
    """keysvc's `{"error": {"code", "message"}}` or Vault's `{"errors": [...]}`, as text."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return f" {error.get('code', '')}: {error.get('message', '')}".rstrip(": ")
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            return ": " + "; ".join(" ".join(str(e).split()) for e in errors)
    return ""


def error_detail(reply: Reply) -> str:
    return f"HTTP {reply.status}{_error_detail(reply.body)}"
