"""OTF's JSON:API documents, as otfd writes them (github.com/DataDog/jsonapi under
internal/tfeapi): a resource read out of `{"data": {"type", "id", "attributes"}}`, and an error
written as `tfeapi.Error` writes it, `{"errors": [{"status", "title", "detail"}]}` labelled
`application/vnd.api+json`, which OTF's client (internal/http/client.go) turns into
"<title>: <detail>" for the runner's log.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

MEDIA_TYPE = "application/vnd.api+json"


class NotAResource(ValueError):
    """A document that is not the one resource expected."""


def resource(document: bytes, type_: str, id_: str) -> dict[str, Any]:
    """The attributes of the resource `type_`/`id_` that `document` holds as its primary data."""
    try:
        data = orjson.loads(document)["data"]
        attributes = data["attributes"]
        found = (data["type"], data["id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise NotAResource(f"not a JSON:API {type_} document") from None
    if found != (type_, id_) or not isinstance(attributes, dict):
        raise NotAResource(f"not the JSON:API document of {type_} {id_}")
    return attributes


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An error reply in tfeapi.Error's shape. `code` (a JSON:API error member tfeapi leaves
    out) carries keysvc's snake_case error code, as `error.code` does on keysvc's own API."""
    error = {"status": str(status), "code": code, "title": HTTPStatus(status).phrase, "detail": detail}
    return web.Response(
        status=status,
        body=orjson.dumps({"errors": [error]}),
        content_type=MEDIA_TYPE,
        headers=headers,
    )
