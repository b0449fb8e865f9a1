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


CLOUD_LIBRARIES = ["hvac", "google.cloud.kms", "azure.keyvault.keys", "azure.identity",
                   "aiobotocore", "aiobotocore.session", "pkcs11"]


def test_reading_a_config_loads_no_backend(tmp_path: Path) -> None:
    """A config naming every backend type reads without any cloud library: their settings are
    checked when the backends are built, by each backend's own model."""
    code = f"""
import sys
for name in {CLOUD_LIBRARIES!r}:
    sys.modules[name] = None
from keysvc.config import parse_config
tables = [{{"name": t, "type": t, "setting": "unchecked"}} for t in
          ["file", "memory", "vault", "gcp_kms", "azure_kv", "aws_kms", "pkcs11"]]
config = parse_config({{"issuer": "https://keys.example.com", "backends": tables}})
print(" ".join(b.type for b in config.backends))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "file memory vault gcp_kms azure_kv aws_kms pkcs11\n"


def test_a_backend_without_its_library_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "keysvc.toml"
    config.write_text('issuer = "https://keys.example.com"\n[[backends]]\ntype = "memory"\n'
                      '[[backends]]\ntype = "vault"\nendpoint = "https://vault.example.com"\n'
                      'key = "k"\n')
    result = keysvc_without(["hvac"], "keys", "list", "--config", str(config))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("keysvc: error: backends[1]: backend type 'vault' cannot be")
    assert result.stderr.endswith("install its extra: pip install 'keysvc[vault]'\n")
    assert result.stderr.count("\n") == 1
