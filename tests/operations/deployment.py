"""A keysvc deployment on disk for subprocess tests: key directory, config file, client token."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from keysvc import jose
from keysvc.backends.file import created_at_from_name, load_private_key
from tests.cli import serving
from tests.conftest import write_key
from tests.service import free_port

FAST = {"publish_lead": "6s", "jwks_max_age": "1s", "refresh_interval": "250ms"}
FAST_LEAD = 6.0
FAST_TTL = {"default_ttl": "1s", "max_ttl": "1s"}
TOKEN = "operations-test-token"


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # strings, ints and booleans are spelled alike in TOML and JSON


@dataclass
class Deployment:
    root: Path
    issuer: str
    keys: Path
    config: Path

    def rotate(self) -> tuple[str, float]:
        """Add a key version as `keys rotate` does (in-process, so slow process start-up on a
        loaded machine cannot eat into the publish lead); returns (kid, created_at)."""
        path = write_key(self.keys, "ec-p256")
        key = load_private_key(path, path.read_bytes())
        return jose.thumbprint(key.public_key()), created_at_from_name(path.name).timestamp()

    def serve(self, url: str | None = None) -> Any:
        """`keysvc serve` on this deployment's config, listening at `url` (default: the issuer's
        address), until the context exits."""
        url = url or self.issuer
        return serving(
            "--config", str(self.config), "--listen", url.removeprefix("http://"), url=url
        )

    @classmethod
    def create(
        cls,
        root: Path,
        rotation: dict[str, str] | None = None,
        tokens: dict[str, str] | None = None,
        key_type: str = "ec-p256",
    ) -> Deployment:
        keys = root / "keys"
        keys.mkdir(mode=0o700)
        write_key(keys, key_type, datetime.now(UTC) - timedelta(hours=1))
        issuer = f"http://127.0.0.1:{free_port()}"
        lines = [f"issuer = {_toml_value(issuer)}"]
        for table, values in (("rotation", rotation or FAST), ("tokens", tokens or FAST_TTL)):
            lines.append(f"[{table}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines += [
            "[[clients]]",
            'name = "ops"',
            f"token_sha256 = {_toml_value(hashlib.sha256(TOKEN.encode()).hexdigest())}",
            'scopes = ["keys:read", "tokens:issue"]',
            "[[backends]]",
            'name = "local"',
            'type = "file"',
            f"path = {_toml_value(str(keys))}",
        ]
        config = root / "keysvc.toml"
        config.write_text("\n".join(lines) + "\n")
        return cls(root, issuer, keys, config)


def get(url: str, token: str | None = None) -> tuple[bytes, dict[str, str]]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read(), dict(response.headers)
