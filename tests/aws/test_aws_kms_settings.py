"""The `[[backends]]` table of type aws_kms: what is accepted, and how mistakes are named."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from keysvc.backends.aws_kms import AwsKmsBackend, AwsKmsSettings
from keysvc.config import parse_config
from keysvc.errors import ConfigError


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
    settings = config.backends[0].settings
    assert isinstance(settings, AwsKmsSettings)
    assert settings.tag is not None and str(settings.tag) == "keysvc=prod"
    assert settings.read_timeout == timedelta(seconds=3)
    assert settings.aliases == ["alias/keysvc"]


def test_tag_as_text() -> None:
    settings = parse_config(config_with(tag="team = platform")).backends[0].settings
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
        parse_config(config_with(**table))
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
