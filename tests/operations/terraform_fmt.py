"""`terraform fmt -check` without terraform: no terraform binary can be installed here.

`terraform fmt` is hclwrite.Format (spacing, indentation, `=` alignment) followed by two
rewrites of its own (terraform's internal/command/fmt.go): an attribute whose value is a quoted
string holding a single interpolation and nothing else (`"${var.x}"`) is unwrapped to the bare
expression, and a variable's legacy quoted or element-less type (`"string"`, `list`) becomes
`string` / `list(any)`. The first half runs HashiCorp's own hclwrite.Format, compiled to
WebAssembly in the npm package @cdktf/hcl-tools (installed by scripts/install-test-deps into
tests/tools/hclfmt); the second is checked here, line by line.
"""

from __future__ import annotations

import difflib
import json
import re
import subprocess
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "hclfmt"
_INTERPOLATION_ONLY = re.compile(r'^\s*[\w".-]+\s*=\s*"\$\{[^"]*\}"\s*$')
"""`name = "${expr}"` with nothing else in the string (expr holding no quote)."""
_LEGACY_TYPE = re.compile(r'^\s*type\s*=\s*("[a-z]+"|list|map|set)\s*$')


def hclwrite_format(documents: list[str]) -> list[str]:
    """Each document as hclwrite.Format lays it out."""
    result = subprocess.run(
        ["node", str(TOOL / "hclfmt.js")],
        input=json.dumps(documents),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    formatted = json.loads(result.stdout)
    assert isinstance(formatted, list) and len(formatted) == len(documents)
    return formatted


def terraform_fmt_problems(documents: dict[str, str]) -> dict[str, str]:
    """What `terraform fmt -check` would reject in each named document: a diff against the
    formatted text, or the line terraform would rewrite. Empty when every one is canonical."""
    problems: dict[str, str] = {}
    names = list(documents)
    for name, formatted in zip(names, hclwrite_format(list(documents.values())), strict=True):
        text = documents[name]
        if formatted != text:
            diff = difflib.unified_diff(
                text.splitlines(), formatted.splitlines(), "printed", "terraform fmt", lineterm=""
            )
            problems[name] = "\n".join(diff)
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if _INTERPOLATION_ONLY.match(line) or _LEGACY_TYPE.match(line):
                problems[name] = f"line {number}, terraform fmt rewrites it: {line.strip()}"
                break
    return problems
