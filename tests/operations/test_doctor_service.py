"""`keysvc doctor` (a real process) against the real keysvc service over HTTPS."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import trustme

from keysvc.run_identity import Run, RunIdentity
from tests.conftest import file_config, write_key
from tests.service import RUN, RunningService, start_service


def tls_config(ca: trustme.CA, directory: Path) -> dict[str, str]:
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "tls.pem"))
    cert.private_key_pem.write_to_path(str(directory / "tls.key"))
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    return {"tls_cert": str(directory / "tls.pem"), "tls_key": str(directory / "tls.key")}


async def run_doctor(*args: str) -> tuple[int, dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keysvc",
        "doctor",
        "--json",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    assert err == b"", err
    return process.returncode, json.loads(out)


def statuses(report: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for finding in report["findings"]:
        out.setdefault(finding["check"], []).append(finding["status"])
    return out


async def test_doctor_passes_a_real_keysvc_and_follows_a_rotation(
    ca: trustme.CA, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    write_key(keys, "rsa-2048", datetime.now(UTC) - timedelta(days=3))
    config = {
        **file_config(keys),
        "server": tls_config(ca, tmp_path),
        "rotation": {"publish_lead": "1h", "jwks_max_age": "5m", "refresh_interval": "1s"},
        "tokens": {"default_ttl": "1h", "max_ttl": "2h"},
    }
    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with start_service(config, client_ssl=client) as svc:
        token_file = tmp_path / "client-token"
        token_file.write_text(svc.client_token)
        token_file.chmod(0o600)
        args = (
            "--issuer",
            svc.url,
            "--ca-file",
            str(tmp_path / "ca.pem"),
            "--cloud",
            "gcp",
            "--cloud",
            "azure",
            "--client-token-file",
            str(token_file),
            "--max-ttl",
            "2h",
        )
        code, report = await run_doctor(*args)
        assert code == 0, report
        found = statuses(report)
        assert found["publish_lead"] == ["ok"]  # 5m max-age < 1h lead, read from /v1/keys
        assert "1h" in next(
            f["message"] for f in report["findings"] if f["check"] == "publish_lead"
        )
        assert found["keys_published"] == ["ok"] and found["algorithms.azure"] == ["ok"]
        assert all(s in ("ok", "warn") for v in found.values() for s in v), found

        # a new EC key: published at once (pending), which doctor confirms, but Azure would
        # refuse what it signs once active
        write_key(keys, "ec-p256")
        await svc.ring.refresh(raise_errors=True)
        states = {k["state"] for k in svc.ring.view().listing()}
        assert states == {"active", "pending"}
        code, report = await run_doctor(*args)
        found = statuses(report)
        assert code == 1
        assert found["keys_published"] == ["ok"] and found["algorithms.azure"] == ["fail"]
        assert found["algorithms.gcp"] == ["ok"]


async def test_doctor_claims_match_the_tokens_keysvc_issues(
    ca: trustme.CA, key_dir: Path, tmp_path: Path
) -> None:
    """The run doctor evaluates trust for carries exactly the claims of a real token."""
    client = ssl.create_default_context()
    ca.configure_trust(client)
    config = {**file_config(key_dir), "server": tls_config(ca, tmp_path)}
    async with start_service(config, client_ssl=client) as svc:
        await check_claims(svc)


async def check_claims(svc: RunningService) -> None:
    issued = await svc.issue()
    jwks = jwt.PyJWKSet.from_dict(await svc.jwks())
    header = jwt.get_unverified_header(issued["token"])
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = jwt.decode(issued["token"], key, algorithms=[header["alg"]], audience=RUN["audience"])
    run = Run(
        RUN["organization"], RUN["workspace"], RUN["workspace_id"], RUN["run_id"], RUN["run_phase"]
    )
    expected = RunIdentity(svc.url, RUN["audience"], run).claims()
    assert {k: v for k, v in claims.items() if k not in ("iat", "nbf", "exp", "jti")} == expected
