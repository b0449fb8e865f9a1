"""A small Terraform document model, rendered as HCL (`.tf`) or Terraform JSON (`.tf.json`).

The setup generators build blocks, attributes and references; rendering owns every detail of
quoting. Literal strings are escaped so that nothing an operator types (an organization name, a
CEL expression, a JWKS) can turn into a Terraform interpolation: `${` and `%{` in a literal are
written `$${` and `%%{`. Interpolations only come from `Ref` values the generators create.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Union

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_INLINE_LIMIT = 80


@dataclass(frozen=True)
class Ref:
    """A Terraform expression such as `aws_iam_role.keysvc.arn`, written without quotes."""

    expr: str


@dataclass(frozen=True)
class Template:
    """A string with interpolations: literal parts are escaped, `Ref` parts become `${...}`."""

    parts: tuple[Union[str, Ref], ...]

    @classmethod
    def of(cls, *parts: Union[str, Ref]) -> Template:
        return cls(tuple(parts))


Value = Union[str, int, bool, Ref, Template, list["Value"], dict[str, "Value"]]


@dataclass
class Block:
    type: str
    labels: tuple[str, ...] = ()
    body: list[Union[Attribute, Block]] = field(default_factory=list)
    comment: str | None = None
    """Printed above the block in HCL (lines prefixed with `# `); not part of the JSON form."""

    def attr(self, name: str, value: Value) -> Block:
        self.body.append(Attribute(name, value))
        return self

    def block(self, child: Block) -> Block:
        self.body.append(child)
        return self


@dataclass(frozen=True)
class Attribute:
    name: str
    value: Value


@dataclass
class Document:
    blocks: list[Block] = field(default_factory=list)
    header: str | None = None

    def add(self, block: Block) -> Block:
        self.blocks.append(block)
        return block

    def to_hcl(self) -> str:
        out: list[str] = []
        if self.header:
            out.extend(_comment_lines(self.header, ""))
            out.append("")
        for i, block in enumerate(self.blocks):
            if i:
                out.append("")
            out.extend(_render_block(block, ""))
        return "\n".join(out) + "\n"

    def to_json(self) -> str:
        root: dict[str, object] = {}
        for block in self.blocks:
            target: dict[str, object] = root
            keys = (block.type, *block.labels)
            for key in keys[:-1]:
                target = target.setdefault(key, {})  # type: ignore[assignment]
            target[keys[-1]] = _json_body(block.body)
        return json.dumps(root, indent=2) + "\n"


# --- HCL --------------------------------------------------------------------------------------


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out).replace("${", "$${").replace("%{", "%%{")


def _string(value: str) -> str:
    return f'"{_escape(value)}"'


def _template(value: Template) -> str:
    parts = [("${" + p.expr + "}") if isinstance(p, Ref) else _escape(p) for p in value.parts]
    return '"' + "".join(parts) + '"'


def _key(name: str) -> str:
    return name if _IDENTIFIER.fullmatch(name) else _string(name)


def _render_value(value: Value, indent: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Ref):
        return value.expr
    if isinstance(value, Template):
        return _template(value)
    inner = indent + "  "
    if isinstance(value, list):
        items = [_render_value(v, inner) for v in value]
        inline = "[" + ", ".join(items) + "]"
        if len(inline) + len(indent) <= _INLINE_LIMIT and "\n" not in inline:
            return inline
        return "[\n" + "".join(f"{inner}{item},\n" for item in items) + indent + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [(_key(k), _render_value(v, inner)) for k, v in value.items()]
        return "{\n" + "\n".join(_assignments(items, inner)) + "\n" + indent + "}"
    raise TypeError(f"cannot render {type(value).__name__} as HCL")


def _assignments(items: list[tuple[str, str]], indent: str) -> list[str]:
    """`name = value` lines as `terraform fmt` (hclwrite) lays them out: the `=` of consecutive
    one-line assignments aligned one space after the longest name among them; an assignment whose
    value spans several lines stands alone (one space before its `=`) and ends the run, as its
    closing bracket line has no `=` to align with."""
    lines: list[str] = []
    run: list[tuple[str, str]] = []

    def flush() -> None:
        width = max((len(name) for name, _ in run), default=0)
        lines.extend(f"{indent}{name.ljust(width)} = {value}" for name, value in run)
        run.clear()

    for name, value in items:
        if "\n" in value:
            flush()
            lines.append(f"{indent}{name} = {value}")
        else:
            run.append((name, value))
    flush()
    return lines


def _comment_lines(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in text.splitlines()]


def _render_block(block: Block, indent: str) -> list[str]:
    out: list[str] = []
    if block.comment:
        out.extend(_comment_lines(block.comment, indent))
    labels = "".join(f" {_string(label)}" for label in block.labels)
    out.append(f"{indent}{block.type}{labels} {{")
    inner = indent + "  "
    run: list[Attribute] = []

    def flush() -> None:
        out.extend(_assignments([(a.name, _render_value(a.value, inner)) for a in run], inner))
        run.clear()

    previous: str | None = None
    for item in block.body:
        if isinstance(item, Attribute):
            if previous == "block":
                out.append("")
            run.append(item)
            previous = "attr"
        else:
            flush()
            if previous is not None:
                out.append("")
            out.extend(_render_block(item, inner))
            previous = "block"
    flush()
    out.append(f"{indent}}}")
    return out


# --- Terraform JSON ---------------------------------------------------------------------------


def _json_string(value: str) -> str:
    return value.replace("${", "$${").replace("%{", "%%{")


def _json_value(value: Value) -> object:
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, Ref):
        return "${" + value.expr + "}"
    if isinstance(value, Template):
        return "".join(
            ("${" + p.expr + "}") if isinstance(p, Ref) else _json_string(p) for p in value.parts
        )
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    raise TypeError(f"cannot render {type(value).__name__} as Terraform JSON")


def _json_body(body: list[Union[Attribute, Block]]) -> dict[str, object]:
    out: dict[str, object] = {}
    nested: dict[str, list[object]] = {}
    for item in body:
        if isinstance(item, Attribute):
            out[item.name] = _json_value(item.value)
        elif item.labels:
            target = out.setdefault(item.type, {})
            for label in item.labels[:-1]:
                target = target.setdefault(label, {})  # type: ignore[union-attr]
            target[item.labels[-1]] = _json_body(item.body)  # type: ignore[index]
        else:
            nested.setdefault(item.type, []).append(_json_body(item.body))
    for name, blocks in nested.items():
        out[name] = blocks[0] if len(blocks) == 1 else blocks
    return out
