"""Structured logging: one JSON object per line on stderr.

Fields passed with `extra=` become top-level keys. Nothing here formats exception tracebacks
into client-visible output; secrets are kept out by never passing them to a logger.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


_ENCODER = json.JSONEncoder(default=str)
"""One encoder for every line (json.dumps with `default=` builds a new one per call)."""


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the `extra=` fields in
    the order given, then the exception when there is one.

    It runs once per issued token (the audit line), so it keeps to plain dict and string work:
    the seconds part of the timestamp is formatted once per second, not once per line."""

    def __init__(self) -> None:
        super().__init__()
        self._stamp: tuple[int, str] = (-1, "")

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        cached = self._stamp
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._stamp = cached  # one assignment: safe if handlers share the formatter
        return f"{cached[1]}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            data["error"] = record.exc_info[0].__name__
            data["traceback"] = self.formatException(record.exc_info)
        return _ENCODER.encode(data)


def configure(level: str = "info", stream=None) -> None:  # type: ignore[no-untyped-def]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter())
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
