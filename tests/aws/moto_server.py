"""A real moto server on 127.0.0.1 (a free port), with a fault injector in front of it.

The backend under test talks HTTP to this server exactly as it would to AWS. Faults are
injected at the HTTP layer, in the server, never in the backend: a fault answers a matching
request with the status and JSON error body AWS would send (`ThrottlingException` with 400,
`KMSInternalException` with 500, ...), so botocore's own retry logic and keysvc's error
translation are what is tested. Every request's operation is recorded, to count retries.
"""

from __future__ import annotations

import io
import logging
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

_REASONS = {400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class Fault:
    operation: str
    """The operation (e.g. "Sign", "GetResources") or "*" for every JSON-protocol request
    (KMS and the tagging API; STS's query protocol is never faulted)."""
    code: str
    status: int
    message: str
    remaining: int | None
    """How many more requests fail; None: until cleared."""


class FaultInjector:
    """WSGI middleware answering chosen AWS JSON-protocol requests with errors."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.operations: list[str] = []
        self._bodies: list[tuple[str, dict[str, Any]]] = []

    def inject(
        self,
        operation: str,
        code: str = "ThrottlingException",
        status: int = 400,
        times: int | None = None,
        message: str = "Rate exceeded",
    ) -> None:
        with self._lock:
            self._faults.append(Fault(operation, code, status, message, times))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.operations.clear()
            self._bodies.clear()

    def count(self, operation: str) -> int:
        with self._lock:
            return self.operations.count(operation)

    def requests(self, operation: str) -> list[dict[str, Any]]:
        """The JSON bodies of the requests for `operation` seen so far."""
        with self._lock:
            return [body for op, body in self._bodies if op == operation]

    def _take(self, operation: str) -> Fault | None:
        for fault in self._faults:
            if fault.operation in ("*", operation) and fault.remaining != 0:
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(raw)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target:
            # Query-protocol calls (STS) are recorded by their Action and passed through, as
            # are moto's own API calls (reset).
            action = urllib.parse.parse_qs(raw.decode("latin-1")).get("Action", [""])[0]
            if action:
                with self._lock:
                    self.operations.append(action)
            return self.app(environ, start_response)
        operation = target.rsplit(".", 1)[-1]
        with self._lock:
            self.operations.append(operation)
            self._bodies.append((operation, json.loads(raw or b"{}")))
            fault = self._take(operation)
        if fault is None:
            return self.app(environ, start_response)
        body = json.dumps({"__type": fault.code, "message": fault.message}).encode()
        start_response(
            f"{fault.status} {_REASONS.get(fault.status, 'Error')}",
            [
                ("Content-Type", "application/x-amz-json-1.1"),
                ("Content-Length", str(len(body))),
                ("x-amzn-ErrorType", fault.code),
            ],
        )
        return [body]


class MotoServer:
    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self.faults = FaultInjector(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            "127.0.0.1", 0, self.faults, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def start(self) -> MotoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def reset(self) -> None:
        """Forget every key, alias and tag (moto's reset API), and every fault."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        self.faults.clear()
