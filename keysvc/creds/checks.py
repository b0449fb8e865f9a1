"""The input checks every part of the run side shares, written once: a value that ends up in a
file, a header, a URL or printed output is one line of printable characters; a bearer token is
RFC 6750's token68; a URL is http(s)://HOST[:PORT][/PATH] without credentials in it.

Every problem is described without repeating the value: it may be a secret (a token) or hold
one (a password in a URL), and a control character would break the one-line error."""

from __future__ import annotations

import re
import urllib.parse

# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
# Printable ASCII without space: what a header value or URL keysvc builds may hold.
VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


def is_token68(value: str) -> bool:
    return TOKEN68.fullmatch(value) is not None


def text_problem(value: str) -> str | None:
    """Why `value` is not one line of printable text, or None. Refused: control characters
    (newline, carriage return, NUL, ...), line and paragraph separators, invisible format
    characters, and the lone surrogates a non-UTF-8 environment value decodes to."""
    if value.isprintable():
        return None
    for position, char in enumerate(value, 1):
        if not char.isprintable():
            what = (  # how os.environ decodes a byte that is not UTF-8
                "a byte that is not UTF-8"
                if 0xDC80 <= ord(char) <= 0xDCFF
                else f"U+{ord(char):04X}"
            )
            return f"must be a single line of printable characters ({what} at character {position})"
    return None  # pragma: no cover - isprintable() was False, so a character was found


def url_problem(url: str) -> str | None:
    """Why `url` is not an http(s)://HOST[:PORT][/PATH] URL keysvc can send requests to, or
    None. The answer never repeats the URL (it may carry a password)."""
    if not VISIBLE_ASCII.fullmatch(url):
        return (
            "must be an http:// or https:// URL of printable ASCII characters without spaces"
            " (percent-encode the path, punycode the host name)"
        )
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # an unclosed [IPv6] bracket
        return "is not a valid URL: http(s)://HOST[:PORT][/PATH]"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if "@" in parts.netloc:
        return (
            "must not contain a user name or password (user:password@); nothing would send"
            " them, and they would show in logs"
        )
    if not parts.hostname:
        return "must name a host: http(s)://HOST[:PORT][/PATH]"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return "has a bad port: it must be a number from 1 to 65535"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "must not have a query (?) or fragment (#): http(s)://HOST[:PORT][/PATH]"
    return None


def shown_url(url: str) -> str:
    """`url` for an error message, or nothing when it may hold credentials or break the line."""
    if "@" in url or not VISIBLE_ASCII.fullmatch(url):
        return ""
    return f" ({url!r})"
