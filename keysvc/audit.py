"""The audit trail: one JSON log line per issued token (client, jti, sub, aud, kid, exp).

The line has the shape of every other log line (keysvc.logs) and comes from the
`keysvc.audit` logger at INFO, so `log_level = "warning"` turns it off as before. When keysvc
set up logging itself (`keysvc serve`) and nothing else listens, the lines skip the logging
machinery: built directly and written to keysvc's handler once per event-loop iteration, one
write for every token that iteration issued. A LogRecord, a formatter pass and a write per
token cost about 20 µs, a fifth of everything keysvc does for an ES256 token. Anywhere else
(an application embedding keysvc, a test capturing records) each line is an ordinary record.

A batch is written before the loop next waits for I/O, so a line is out at most one loop
iteration after its token's reply was handed to the socket.
"""

from __future__ import annotations

import asyncio
import logging
import time

from keysvc import logs

LOGGER = logging.getLogger("keysvc.audit")
MESSAGE = "token issued"


class AuditTrail:
    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._handler: logs.JSONLineHandler | None = None

    def token_issued(
        self, *, endpoint: str, client: str, jti: str, sub: object, aud: object, kid: str, exp: int
    ) -> None:
        if not LOGGER.isEnabledFor(logging.INFO):
            return
        fields = {
            "event": "token_issued",
            "endpoint": endpoint,
            "client": client,
            "jti": jti,
            "sub": sub,
            "aud": aud,
            "kid": kid,
            "exp": exp,
        }
        handler = logs.direct_handler(LOGGER)
        if handler is None:
            LOGGER.info(MESSAGE, extra=fields)
            return
        line = logs.line(time.time(), "info", LOGGER.name, MESSAGE, fields)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop: nothing to batch with
            handler.write_lines([line])
            return
        if not self._pending:
            self._handler = handler
            loop.call_soon(self.flush)
        self._pending.append(line)

    def flush(self) -> None:
        """Write the lines waiting for the end of this loop iteration."""
        lines, self._pending = self._pending, []
        if lines and self._handler is not None:
            self._handler.write_lines(lines)
