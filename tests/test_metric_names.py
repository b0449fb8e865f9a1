"""Every metric name the docs, README and deployment files (the Prometheus alert rules and
the Grafana dashboard among them) mention is one a running keysvc exports, spelled as Prometheus stores it (a counter with `_total`, a histogram by its family
name or its `_bucket`/`_sum`/`_count` series): an alert or dashboard built from the docs must
find its series."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.cli import config_file, serving
from tests.conftest import write_key
from tests.service import RUN, free_port

ROOT = Path(__file__).resolve().parent.parent
METRIC = re.compile(r"\bkeysvc_[a-z0-9_]*[a-z0-9]")
FENCE = re.compile(r"^```(\w*)")
NOT_METRICS = {"hcl", "terraform", "tf", "python", "py", "toml"}
"""Fenced blocks in these languages hold code (Terraform's `local.keysvc_…`, a plugin package
`keysvc_acme`), not metric names."""
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("", "_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def documents() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    files += sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file())
    return files


def mentioned_metrics() -> dict[str, list[str]]:
    """Each `keysvc_*` name in the documents, with where it appears."""
    found: dict[str, list[str]] = {}
    for path in documents():
        language = None
        for number, line in enumerate(path.read_text().splitlines(), 1):
            fence = FENCE.match(line.strip()) if path.suffix == ".md" else None
            if fence:
                language = None if language is not None else fence[1].lower()
                continue
            if language in NOT_METRICS:
                continue
            for name in METRIC.findall(line):
                found.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{number}")
    return found


def exported_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ("",)))
    return names


def test_the_documents_mention_metrics() -> None:
    """The check below has something to check (the docs do name metrics), and it reads the
    alert rules and the dashboard: every metric their expressions use is among the names."""
    mentioned = mentioned_metrics()
    assert {"keysvc_tokens_issued_total", "keysvc_ring_keys"} <= set(mentioned)
    for shipped in ("deploy/prometheus/keysvc-alerts.yaml", "deploy/grafana/keysvc-dashboard.json"):
        used = {name for name, where in mentioned.items()
                if any(w.startswith(shipped + ":") for w in where)}
        assert {"keysvc_ready", "keysvc_signing_key_age_seconds",
                "keysvc_backend_newest_version_timestamp_seconds",
                "keysvc_backend_errors_total", "keysvc_pending_key_wait_seconds"} <= used, shipped


def test_every_metric_named_in_the_docs_is_exported(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    write_key(keys)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving("--config", str(config_file(tmp_path, keys, port=port)), url=url):
        request = urllib.request.Request(
            url + "/v1/tokens", data=json.dumps(RUN).encode(), method="POST",
            headers={"Authorization": "Bearer cli-test-token", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as response:
            assert response.status == 200
        with urllib.request.urlopen(url + "/metrics") as response:
            exported = exported_names(response.read().decode())
    assert "keysvc_tokens_issued_total" in exported and "keysvc_tokens_issued" not in exported
    missing = {name: where for name, where in mentioned_metrics().items() if name not in exported}
    assert not missing, f"named in the docs but not exported: {missing}"
