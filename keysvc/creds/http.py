"""A small JSON-over-HTTP POST with brief retries, on the standard library only: the run side
runs inside a Terraform run and must not pull in the service's dependencies.

Retried: connection failures, timeouts, and 502/503/504 (honouring a short `Retry-After`).
Every other answer is returned to the caller, which knows what it means.
"""

from __future__ import annotations

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
        request = urllib.request.Request(
            url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json", **headers},
        )
        retry_after: str | None = None
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=ssl_context) as response:
                return Reply(response.status, _parse(response.read()))
        except urllib.error.HTTPError as exc:
            with exc:
                reply = Reply(exc.code, _parse(exc.read()))
                if exc.code not in RETRY_STATUSES:
                    return reply
                retry_after = exc.headers.get("Retry-After")
            last = f"HTTP {exc.code}" + _error_detail(reply.body)
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLError):
                raise Unreachable(f"TLS error: {exc.reason}") from None
            last = str(exc.reason)
        except TimeoutError:
            last = f"no answer within {timeout:g}s"
        except OSError as exc:
            last = exc.strerror or type(exc).__name__
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
