"""Revoking the Vault tokens a manifest records, before their files are removed or replaced."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from keysvc.creds import vault_login

Warn = Callable[[str], None]


def _endpoint(workdir: Path, record: dict[str, Any]) -> vault_login.VaultEndpoint:
    ca_file = record.get("ca_cert_file")
    ca_pem = (workdir / ca_file).read_text() if isinstance(ca_file, str) and ca_file else None
    return vault_login.VaultEndpoint(
        address=str(record["address"]),
        namespace=record.get("namespace") or None,
        ca_pem=ca_pem,
        timeout=float(record.get("timeout") or vault_login.REVOKE_TIMEOUT),
    )


def pending(
    workdir: Path, records: list[dict[str, Any]]
) -> list[tuple[vault_login.VaultEndpoint, str]]:
    """(endpoint, token) for each record whose token file is still there, read now so the
    files may be replaced before the tokens are revoked."""
    found = []
    for record in records:
        try:
            token = (workdir / record["token_file"]).read_text().strip()
            endpoint = _endpoint(workdir, record)
        except (OSError, KeyError, ValueError):
            continue
        if token:
            found.append((endpoint, token))
    return found


def revoke_all(tokens: list[tuple[vault_login.VaultEndpoint, str]], warn: Warn) -> None:
    for endpoint, token in tokens:
        warning = vault_login.revoke(endpoint, token)
        if warning:
            warn(warning)
