"""The `[[backends]]` table of type aws_kms: what is accepted, and how mistakes are named."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from keysvc import jose
from keysvc.backends.aws_kms import AwsKmsBackend, AwsKmsSettings
from keysvc.config import parse_config
from keysvc.service import build_backends
from keysvc.errors import ConfigError

from .conftest import create_key


def config_with(**backend: Any) -> dict[str, Any]:
    return {"issuer": "http://127.0.0.1:8080", "backends": [{"type": "aws_kms", **backend}]}


def test_full_table_parses() -> None:
    config = parse_config(
        config_with(
            name="kms",
            key_ids=["alias/keysvc", "arn:aws:kms:eu-west-1:111122223333:key/abc"],
            tag={"key": "keysvc", "value": "prod"},
            region="eu-west-1",
            endpoint_url="https://vpce-1.kms.eu-west-1.vpce.amazonaws.com",
            key_spec="ECC_NIST_P256",
            max_attempts=5,
            connect_timeout="1s",
            read_timeout="3s",
        )
    )
    settings = build_backends(config)[0].settings
    assert isinstance(settings, AwsKmsSettings)
    assert settings.tag is not None and str(settings.tag) == "keysvc=prod"
    assert settings.timeout == timedelta(seconds=3)  # read_timeout, its former name
    assert settings.endpoint == "https://vpce-1.kms.eu-west-1.vpce.amazonaws.com"
    assert settings.aliases == ["alias/keysvc"]


def test_tag_as_text() -> None:
    settings = build_backends(parse_config(config_with(tag="team = platform")))[0].settings
    assert isinstance(settings, AwsKmsSettings) and settings.tag is not None
    assert (settings.tag.key, settings.tag.value) == ("team", "platform")


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({}, "set key_ids, tag (discovery) or both"),
        ({"tag": "no-equals-sign"}, 'must be "key=value"'),
        ({"tag": {"key": "k"}}, "tag.value"),
        ({"key_ids": ["alias/a", "alias/a"]}, "unique"),
        ({"key_ids": [" "]}, "must not be empty"),
        ({"key_ids": ["k"], "key_spec": "RSA_1024"}, "key_spec"),
        ({"key_ids": ["k"], "max_attempts": 0}, "max_attempts"),
        ({"key_ids": ["k"], "endpoint_url": "127.0.0.1:4566"}, "http(s) URL"),
        ({"key_ids": ["k"], "key_id": "typo"}, "key_id"),
        ({"key_ids": ["k"], "read_timeout": "soon"}, "invalid duration"),
    ],
)
def test_bad_tables_name_the_key(table: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_backends(parse_config(config_with(**table)))
    assert str(caught.value).startswith("backends[0]")
    assert fragment in str(caught.value)


async def test_region_from_the_environment_or_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = AwsKmsSettings(key_ids=["alias/a"])
    backend = AwsKmsBackend("kms", settings)
    await backend.open()  # AWS_DEFAULT_REGION from the fixture environment
    await backend.close()
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    backend = AwsKmsBackend("kms", settings)
    with pytest.raises(ConfigError, match=r"^backends\.kms\.region: not set"):
        await backend.open()
    backend = AwsKmsBackend("kms", AwsKmsSettings(key_ids=["alias/a"], profile="nope"))
    with pytest.raises(ConfigError, match=r"^backends\.kms\.profile: no profile 'nope'"):
        await backend.open()


async def test_credentials_from_a_web_identity_token(
    kms: Any, make_backend: Any, aws_server: Any, faults: Any,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """The standard chain's web-identity step (EKS IRSA, OTF-style federation): no static keys,
    botocore exchanges the token file with STS, and the backend signs with what it gets."""
    meta = create_key(kms, alias="alias/irsa")
    token_file = tmp_path / "token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/keysvc")
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "keysvc")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", aws_server.url)
    faults.clear()
    backend = await make_backend(key_ids=["alias/irsa"])
    (version,) = await backend.list_versions()
    assert version.version_id == meta["Arn"]
    assert await backend.sign(version, jose.Algorithm.ES256, b"a.b")
    assert faults.count("AssumeRoleWithWebIdentity") == 1  # once, then cached by botocore
