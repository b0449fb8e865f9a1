"""schemathesis against a live `keysvc serve`, driven by docs/openapi.yaml (served at
/openapi.json): every check schemathesis has, twice: with a client token that has every scope
(and, for OTF's runner endpoint, a running job's token from the fake otfd), and with none (it
then sends bearer tokens of its own making).

Bounded and reproducible: MAX_EXAMPLES per operation and phase, deterministic generation (no
example database, the same cases every run), about half a minute per run. It must find no server
error and no reply the document does not allow, and keysvc's log must hold no traceback and no
error line. What schemathesis cannot send (bytes no HTTP client library writes, slow and
half-closed connections) is tests/test_http_corpus.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli import private, serving
from tests.fakes.otfd import FakeOtfd
from tests.service import free_port

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
MAX_EXAMPLES = 60
TOKEN = "fuzz-client-token"
OTF_PATH = "/otfapi/jobs/{job_id}/dynamic-credentials"


def keysvc_config(tmp_path: Path, keys: Path, port: int, otfd_url: str) -> Path:
    token_file = private(tmp_path / "client-token", TOKEN)
    path = tmp_path / "keysvc.toml"
    path.write_text(
        f'issuer = "http://127.0.0.1:{port}"\n'
        f"[server]\nport = {port}\n"
        # The document's ceiling for ttl_seconds (24h, max_ttl's own limit), so that a
        # schema-valid lifetime is one this service accepts.
        '[tokens]\nmax_ttl = "24h"\n'
        f'[otf]\nurl = "{otfd_url}"\ntimeout = "5s"\n'
        f'[[clients]]\nname = "fuzz"\ntoken_file = "{token_file}"\n'
        'scopes = ["tokens:issue", "sign", "keys:read", "keys:rotate"]\n'
        f'[[backends]]\nname = "local"\ntype = "file"\npath = "{keys}"\n'
    )
    return path


def schemathesis_config(path: Path, job: tuple[str, str] | None) -> Path:
    """Every check, with two exceptions for positive_data_acceptance: /v1/sign, whose free-form
    claims the document describes in prose where JSON Schema cannot (a number a double rounds,
    two names differing only in case): the service refuses such schema-valid claims by design;
    and /v1/keys/rotate, whose `backend` names a backend of the configuration, which a static
    document cannot list (any other name is 400 unknown_backend)."""
    text = (
        f"[generation]\nmax-examples = {MAX_EXAMPLES}\ndeterministic = true\n\n"
        "[checks]\nenabled = true\n\n"
        '[[operations]]\ninclude-path = "/v1/sign"\n'
        "checks.positive_data_acceptance.enabled = false\n\n"
        '[[operations]]\ninclude-path = "/v1/keys/rotate"\n'
        "checks.positive_data_acceptance.enabled = false\n"
    )
    if job is not None:
        job_id, job_token = job
        text += (
            f'\n[[operations]]\ninclude-path = "{OTF_PATH}"\n'
            f'parameters = {{ job_id = "{job_id}" }}\n'
            f'headers = {{ Authorization = "Bearer {job_token}" }}\n'
        )
    path.write_text(text)
    return path


async def fuzz(url: str, tmp_path: Path, name: str, job: tuple[str, str] | None) -> dict[str, Any]:
    """One schemathesis run; its JSON report."""
    report = tmp_path / f"{name}.json"
    command = [
        SCHEMATHESIS, "--config-file", str(schemathesis_config(tmp_path / f"{name}.toml", job)),
        "run", f"{url}/openapi.json", "--no-color", "--request-timeout", "30",
        "--report", "json", "--report-json-path", str(report),
    ]
    if job is not None:
        command += ["-H", f"Authorization: Bearer {TOKEN}"]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 300)
    text = output.decode(errors="replace")
    assert report.exists(), text
    result = json.loads(report.read_text())
    assert result["failures"] == [] and result["errors"] == [], text
    assert process.returncode == 0, text
    return result


@pytest.mark.timeout(600)
async def test_schemathesis_finds_no_server_error_and_no_reply_off_the_document(
    tmp_path: Path, key_dir: Path, otfd: FakeOtfd
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    job, job_token = otfd.running_job()
    config = keysvc_config(tmp_path, key_dir, port, otfd.url)
    figures = []
    log = tmp_path / "keysvc.log"
    with serving("--config", str(config), url=url, log=log) as process:
        for name, auth in (("authenticated", (job.id, job_token)), ("anonymous", None)):
            result = await fuzz(url, tmp_path, name, auth)
            operations, cases = result["operations"], result["test_cases"]
            assert operations["tested"] == operations["selected"] >= 9, operations
            assert cases["errored"] == 0 and cases["with_failures"] == 0, cases
            assert cases["generated"] >= 5 * operations["tested"], cases
            figures.append(f"{name}: {operations['tested']} operations, "
                           f"{cases['generated']} test cases, 0 failures")
        accepted = result["valid_rates"]
        process.terminate()
        process.wait(30)
    print("; ".join(figures))
    text = log.read_text()
    assert otfd.requests, "the runner endpoint was reached with the job's token"
    assert accepted, "the report lists the operations' outcomes"
    assert "Traceback" not in text, text[-3000:]
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines, "keysvc logged its requests"
    assert not [line for line in lines if line["level"] in ("error", "critical")], text[-3000:]
