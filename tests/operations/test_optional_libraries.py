"""Commands whose optional library is not installed fail with one line naming the extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLOCKED_RUN = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # as if the package were not installed: importing it fails
from keysvc.cli import main
sys.argv = ["keysvc", *{args!r}]
main()
"""


def keysvc_without(blocked: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    code = BLOCKED_RUN.format(blocked=blocked, args=list(args))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_doctor_without_cel_python() -> None:
    result = keysvc_without(
        ["celpy"],
        "doctor",
        "--issuer",
        "https://keys.example.com",
        "--no-fetch",
        "--organization",
        "acme",
        "--workspace",
        "web",
        "--phase",
        "plan",
        "--gcp-condition",
        "true",
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "keysvc: error: evaluating a GCP condition needs cel-python: pip install 'keysvc[doctor]'\n"
    )


def test_publish_to_s3_without_aiobotocore(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("unused")
    result = keysvc_without(
        ["aiobotocore", "aiobotocore.session"],
        "publish",
        "--issuer",
        "https://keys.example.com",
        "--private-key-path",
        str(key),
        "--to",
        "s3://bucket",
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "keysvc: error: publishing to S3 needs aiobotocore: pip install 'keysvc[aws]'\n"
    )
