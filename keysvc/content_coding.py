"""Request bodies sent with a `Content-Encoding`: decoded by keysvc, not by aiohttp.

aiohttp's automatic decompression turns a corrupt body into an exception raised from the middle
of reading it (a 500 with a traceback, and another traceback when aiohttp drains the body of a
request it already answered). Here a body is decoded once it is read, bounded by the body limit
(a few KiB of deflate can expand to gigabytes), and every failure is one clear 4xx.
"""

from __future__ import annotations

import zlib

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""The codings RFC 9110 8.4.1 names that zlib decodes (deflate is the zlib format)."""
SUPPORTED = ("gzip", "deflate")


class CodingError(ValueError):
    """A body keysvc will not decode: `status` 400 (corrupt), 413 (too large decoded) or 415
    (a coding it does not support)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def decode(body: bytes, coding: str | None, limit: int) -> bytes:
    """`body` decoded from `coding` (the Content-Encoding header; None or `identity` for none),
    at most `limit` bytes of it."""
    name = (coding or "identity").strip().lower()
    if name == "identity":
        return body
    wbits = _WBITS.get(name)
    if wbits is None:
        raise CodingError(
            415,
            "unsupported_content_encoding",
            f"send the body uncompressed, or with Content-Encoding {' or '.join(SUPPORTED)}",
        )
    decoder = zlib.decompressobj(wbits)
    try:
        decoded = decoder.decompress(body, limit + 1)
        if len(decoded) <= limit:
            decoded += decoder.flush()
    except zlib.error:
        raise CodingError(400, "malformed_body", f"the body is not valid {name} data") from None
    if len(decoded) > limit:
        raise CodingError(413, "body_too_large", f"the decoded body exceeds {limit} bytes")
    if not decoder.eof or decoder.unused_data:
        raise CodingError(400, "malformed_body", f"the body is not one complete {name} stream")
    return decoded
