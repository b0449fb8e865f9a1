"""deploy/prometheus and deploy/grafana, run: the alert rules pass `promtool check rules` and
their unit tests (`promtool test rules`); the dashboard's queries are PromQL promtool accepts;
and a real Prometheus scraping a real `keysvc serve` evaluates every rule without error, finds
a series for every metric the rules and the dashboard name, answers every dashboard query, and
raises KeysvcNoSigningKey (pending) when the replica loses its signing key."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service import RUN, free_port

from .deployment import TOKEN, Deployment

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "keysvc-alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "keysvc-alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "keysvc-dashboard.json"
METRIC = re.compile(r"\bkeysvc_[a-z0-9_]*[a-z0-9]")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def dashboard_queries() -> list[str]:
    """Every panel's PromQL, with Grafana's $__rate_interval as Prometheus would get it."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"].replace("$__rate_interval", "1m") for p in panels for t in p["targets"]]


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0 and "SUCCESS: 6 rules found" in checked.stdout, checked
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_promtool_would_catch_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "rules.yaml"
    broken.write_text(RULES.read_text().replace("min by (instance) (keysvc_ready) == 0",
                                                "min by (instance) (keysvc_ready == 0"))
    assert promtool("check", "rules", str(broken)).returncode != 0
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(RULES.read_text().replace("33 * 86400", "34 * 86400"))
    tests = tmp_path / "tests.yaml"
    tests.write_text(RULE_TESTS.read_text().replace("keysvc-alerts.yaml", str(wrong)))
    assert promtool("test", "rules", str(tests)).returncode != 0


def test_every_dashboard_query_is_promql(tmp_path: Path) -> None:
    """promtool parses each query as the expression of a recording rule."""
    queries = dashboard_queries()
    assert len(queries) >= 8
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"keysvc:dashboard_{i}", "expr": q} for i, q in enumerate(queries)]}]}
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- a real Prometheus on a real keysvc --------------------------------------------------------


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]  # type: ignore[no-any-return]

    def wait_for(self, what: str, check: Any, timeout: float = 45) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            assert time.monotonic() < deadline, f"Prometheus never saw {what}"
            time.sleep(0.5)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Prometheus, Deployment]]:
    (tmp_path / "keysvc").mkdir()
    deployment = Deployment.create(tmp_path / "keysvc")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    target = deployment.issuer.removeprefix("http://")
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "keysvc", "static_configs": [{"targets": [target]}]}],
    }))
    with deployment.serve():
        process = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            server = Prometheus(f"http://127.0.0.1:{port}")

            def ready() -> bool:
                assert process.poll() is None, process.communicate()[1]
                try:
                    with urllib.request.urlopen(server.url + "/-/ready", timeout=2):
                        return True
                except OSError:
                    return False

            server.wait_for("itself ready", ready)
            yield server, deployment
        finally:
            process.terminate()
            process.wait(30)


def issue_token(deployment: Deployment) -> None:
    request = urllib.request.Request(
        deployment.issuer + "/v1/tokens", data=json.dumps(RUN).encode(), method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_prometheus_evaluates_the_rules_and_the_dashboard_on_a_running_keysvc(
    prometheus: tuple[Prometheus, Deployment],
) -> None:
    server, deployment = prometheus
    issue_token(deployment)
    server.wait_for("keysvc up", lambda: server.query('up{job="keysvc"} == 1'))
    named = sorted({m for text in (RULES.read_text(), DASHBOARD.read_text())
                    for m in METRIC.findall(text)})
    assert len(named) >= 8
    for name in named:
        server.wait_for(f"a series of {name}", lambda n=name: server.query(f"count({n})"))

    def evaluated() -> list[dict[str, Any]]:
        groups = server.get("/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("2") and
                                      not r["lastEvaluation"].startswith("0001")
                                      for r in rules) else []

    rules = server.wait_for("the rules evaluated", evaluated)
    assert len(rules) == 6
    assert all(r["health"] == "ok" and not r.get("lastError") for r in rules), rules
    assert all(r["state"] == "inactive" for r in rules), rules  # a healthy replica
    for query in dashboard_queries():
        server.get("/api/v1/query", query=query)  # accepted (status success)
    for query in ("max by (instance) (keysvc_signing_key_age_seconds)",
                  "time() - max by (backend) (keysvc_backend_newest_version_timestamp_seconds)"):
        (sample,) = server.query(query)
        assert 0 < float(sample["value"][1]) < 3 * 3600  # the key was made an hour ago

    # The replica loses its signing key (its only key file becomes readable by others): the
    # NoSigningKey alert goes pending at Prometheus' next evaluation.
    (key_file,) = deployment.keys.glob("*.pem")
    key_file.chmod(0o644)

    def pending() -> list[dict[str, Any]]:
        alerts = server.get("/api/v1/alerts")["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "KeysvcNoSigningKey"]

    (alert,) = server.wait_for("KeysvcNoSigningKey pending", pending)
    assert alert["state"] == "pending" and alert["labels"]["severity"] == "critical"
    assert alert["labels"]["instance"] == deployment.issuer.removeprefix("http://")
