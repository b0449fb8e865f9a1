"""Reading generated Terraform back with python-hcl2, as an independent parser."""

from __future__ import annotations

from typing import Any

import hcl2
from hcl2.utils import SerializationOptions

_OPTIONS = SerializationOptions(
    strip_string_quotes=True, explicit_blocks=False, with_comments=False
)


def _unescape(value: str) -> str:
    # python-hcl2 decodes backslash escapes but keeps the template escapes of a literal ${ and %{.
    return value.replace("$${", "${").replace("%%{", "%{")


def _clean(node: Any) -> Any:
    if isinstance(node, str):
        return _unescape(node)
    if isinstance(node, list):
        return [_clean(n) for n in node]
    if isinstance(node, dict):
        return {_clean(k): _clean(v) for k, v in node.items()}
    return node


def parse(text: str) -> dict[str, Any]:
    return _clean(hcl2.loads(text, serialization_options=_OPTIONS))


def blocks(document: dict[str, Any], kind: str, type_: str) -> dict[str, dict[str, Any]]:
    """Every `kind "type_" "name" {}` block (kind = resource/data) as name -> body."""
    found: dict[str, dict[str, Any]] = {}
    for entry in document.get(kind, []):
        for name, body in entry.get(type_, {}).items():
            found[name] = body
    return found


def outputs(document: dict[str, Any]) -> dict[str, Any]:
    return {
        name: body["value"] for entry in document.get("output", []) for name, body in entry.items()
    }
