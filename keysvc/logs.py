"""Structured logging: one JSON object per line on stderr.

Fields passed with `extra=` become top-level keys. Nothing here formats exception tracebacks
into client-visible output; secrets are kept out by never passing them to a logger.

Every line has the same head, `time, level, logger, message`, then the fields. `line()` builds
it for the formatter and for the audit trail (keysvc.audit), which writes its lines to the
handler directly (`JSONLineHandler.write_lines`), so both kinds of line are one format.
"""

from __future__ import annotations

import json
import logging
import select
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS
"""Datetimes and dataclasses through `default=str`, as the standard json module's encoder
with default=str would show them; keys that are not strings as their text."""
_FALLBACK = json.JSONEncoder(default=str)


def encode(data: Mapping[str, Any]) -> bytes:
    """A JSON object as compact UTF-8 bytes; what orjson cannot encode (an integer beyond 64
    bits) goes through the standard encoder instead, because a log line must never fail."""
    try:
        return orjson.dumps(data, default=str, option=_OPTIONS)
    except TypeError:
        return _FALLBACK.encode(data).encode()


_stamp: tuple[int, str] = (-1, "")


def timestamp(seconds: float) -> str:
    """UTC with milliseconds and a Z; the seconds part formatted once per second, not per line."""
    global _stamp
    whole = int(seconds)
    cached = _stamp
    if cached[0] != whole:
        cached = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
        _stamp = cached  # one assignment: safe from any thread
    return f"{cached[1]}.{int((seconds - whole) * 1000):03d}Z"


def line(created: float, level: str, logger: str, message: str, fields: Mapping[str, Any]) -> bytes:
    """One log line (without the newline)."""
    return encode(
        {"time": timestamp(created), "level": level, "logger": logger, "message": message, **fields}
    )


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the `extra=` fields in
    the order given, then the exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            key: value
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        }
        if record.exc_info and record.exc_info[0] is not None:
            fields["error"] = record.exc_info[0].__name__
            fields["traceback"] = self.formatException(record.exc_info)
        text = line(
            record.created, record.levelname.lower(), record.name, record.getMessage(), fields
        )
        return text.decode()


class JSONLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler with JSONFormatter that also takes lines already built by `line()`."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self.setFormatter(JSONFormatter())

    def write_lines(self, lines: Sequence[bytes]) -> None:
        """Write several lines in as few writes as keep them whole: under the handler's lock, so
        they never interleave with records logged from other threads, and at most PIPE_BUF
        bytes per write, so that on a pipe (a container runtime, journald) each write is atomic
        and lines from several worker processes never interleave either."""
        self.acquire()
        try:
            for chunk in _chunks(lines, select.PIPE_BUF):
                self.stream.write(chunk.decode())
                self.flush()
        except Exception:
            # As logging.Handler.handleError would: a log line must not fail the request.
            sys.stderr.write("keysvc: could not write log lines\n")
        finally:
            self.release()


def _chunks(lines: Sequence[bytes], limit: int) -> Iterator[bytes]:
    """Newline-terminated lines joined into chunks of at most `limit` bytes (a longer line
    alone)."""
    chunk: list[bytes] = []
    size = 0
    for item in lines:
        if chunk and size + len(item) + 1 > limit:
            yield b"".join(chunk)
            chunk, size = [], 0
        chunk.append(item + b"\n")
        size += len(item) + 1
    if chunk:
        yield b"".join(chunk)


def direct_handler(logger: logging.Logger) -> JSONLineHandler | None:
    """The JSONLineHandler that `logger`'s records end up in, when that is all they end up in:
    no handler or filter on the way up but keysvc's own handler on the root logger. None
    otherwise, and then records must go through `logger` as usual."""
    node: logging.Logger | None = logger
    while node is not None and node.parent is not None:
        if node.handlers or node.filters or not node.propagate:
            return None
        node = node.parent
    root = logging.getLogger()
    if len(root.handlers) != 1 or root.filters:
        return None
    handler = root.handlers[0]
    return handler if isinstance(handler, JSONLineHandler) and not handler.filters else None


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    handler = JSONLineHandler(stream or sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The JSON lines never show where a call came from, nor thread or process names, so do not
    # collect them for every record (the logging HOWTO's "Optimization" switches; findCaller
    # walks the stack on every call otherwise).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
