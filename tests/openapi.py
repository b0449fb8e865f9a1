"""Replies checked against docs/openapi.yaml: status, required headers, media type and body.

tests/service.py hands every reply of the in-process service to `CONFORMANCE` (through aiohttp's
on_response_prepare), and an autouse fixture (tests/conftest.py) fails the test during which a
reply broke the document: every request the suite makes is a conformance check. Replies made
before routing (parser errors, the header deadline, a refused connection) never reach that
signal: tests/test_http_corpus.py checks their shape.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT_PATH = ROOT / "docs" / "openapi.yaml"
_BASE = "urn:keysvc:openapi"
_JSON_TYPES = ("application/json", "application/vnd.api+json")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def load_document() -> dict[str, Any]:
    return yaml.safe_load(DOCUMENT_PATH.read_text())


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


@dataclass
class OpenAPI:
    document: dict[str, Any]
    _validators: dict[str, Draft202012Validator] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._registry = Registry().with_resource(
            _BASE, Resource.from_contents(self.document, default_specification=DRAFT202012)
        )
        self._paths = [
            (template, re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"))
            for template in self.document["paths"]
        ]

    def operations(self) -> set[tuple[str, str]]:
        """Every documented (METHOD, path template)."""
        return {
            (method.upper(), template)
            for template, item in self.document["paths"].items()
            for method in item
            if method in METHODS
        }

    def _resolve(self, node: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
        while "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = self.document
            for part in pointer.strip("/").split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node, pointer

    def _validator(self, pointer: str) -> Draft202012Validator:
        if pointer not in self._validators:
            self._validators[pointer] = Draft202012Validator(
                {"$ref": f"{_BASE}#{pointer}"},
                registry=self._registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
        return self._validators[pointer]

    def _schema_problems(self, pointer: str, value: Any) -> list[str]:
        return [
            f"{'/'.join(map(str, e.absolute_path)) or 'body'}: {e.message[:200]}"
            for e in self._validator(pointer).iter_errors(value)
        ]

    def _response_object(self, method: str, path: str, status: int) -> tuple[dict[str, Any], str]:
        """The documented response for this reply, and its JSON pointer; ValueError if none."""
        for template, pattern in self._paths:
            if pattern.match(path):
                item = self.document["paths"][template]
                operation = item.get("get" if method == "HEAD" else method.lower())
                if operation is None:
                    if status != 405:
                        raise ValueError(f"{method} is not documented on {template}: expected 405")
                    return self._resolve(
                        {"$ref": "#/components/responses/MethodNotAllowed"}, ""
                    )
                pointer = f"/paths/{_escape(template)}/{'get' if method == 'HEAD' else method.lower()}"
                responses = operation["responses"]
                key = str(status) if str(status) in responses else "default"
                if key not in responses:
                    raise ValueError(f"status {status} is not documented for {method} {template}")
                return self._resolve(responses[key], f"{pointer}/responses/{key}")
        if status != 404:
            raise ValueError(f"{path} is not documented: expected 404")
        return {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}, ""

    def problems(
        self, method: str, path: str, status: int, headers: dict[str, str], body: bytes | None
    ) -> list[str]:
        """What in this reply breaks the document (empty when nothing does)."""
        try:
            response, pointer = self._response_object(method, path, status)
        except ValueError as exc:
            return [str(exc)]
        found: list[str] = []
        lowered = {k.lower(): v for k, v in headers.items()}
        for name, header in response.get("headers", {}).items():
            header, header_pointer = self._resolve(header, f"{pointer}/headers/{_escape(name)}")
            value = lowered.get(name.lower())
            if value is None:
                if header.get("required"):
                    found.append(f"header {name} is missing")
                continue
            found += [f"header {name}: {p}" for p in
                      self._schema_problems(f"{header_pointer}/schema", value)]
        content = response.get("content")
        if not content or method == "HEAD":
            if content is None and body:
                found.append("a body where the document has none")
            return found
        media_type = lowered.get("content-type", "").split(";")[0].strip()
        if media_type not in content:
            return [*found, f"Content-Type {media_type!r} is not one of {sorted(content)}"]
        schema_pointer = f"{pointer}/content/{_escape(media_type)}/schema"
        if not pointer:  # the general 404
            schema_pointer = "/components/schemas/Error"
        text = (body or b"").decode("utf-8", "replace")
        try:
            value = json.loads(text) if media_type in _JSON_TYPES else text
        except ValueError:
            return [*found, f"the {media_type} body is not JSON"]
        return found + self._schema_problems(schema_pointer, value)


@dataclass
class Conformance:
    """Replies seen and the problems found in them since the last reset()."""

    openapi: OpenAPI
    checked: int = 0
    found: list[str] = field(default_factory=list)

    async def record(self, request: Any, response: Any) -> None:
        """aiohttp on_response_prepare signal handler."""
        body = getattr(response, "body", None)
        self.check(
            request.method,
            request.rel_url.path,
            response.status,
            dict(response.headers),
            body if isinstance(body, bytes) else None,
        )

    def check(
        self, method: str, path: str, status: int, headers: dict[str, str], body: bytes | None
    ) -> None:
        self.checked += 1
        for problem in self.openapi.problems(method, path, status, headers, body):
            self.found.append(f"{method} {path} → {status}: {problem}")

    def reset(self) -> None:
        self.found.clear()


CONFORMANCE = Conformance(OpenAPI(load_document()))
