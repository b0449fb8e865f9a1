"""Revoking the Vault tokens a manifest records, before their files are removed or replaced."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from keysvc.creds import vault_login
from keysvc.creds.checks import VISIBLE_ASCII, is_token68, url_problem

Warn = Callable[[str], None]


def _endpoint(workdir: Path, record: dict[str, Any]) -> vault_login.VaultEndpoint:
    """The endpoint a manifest record names; ValueError when the record is not one apply
    could have written (the manifest was edited): such a token is not sent anywhere."""
    ca_file = record.get("ca_cert_file")
    ca_pem = (workdir / ca_file).read_text() if isinstance(ca_file, str) and ca_file else None
    address, namespace = record["address"], record.get("namespace") or None
    timeout = record.get("timeout") or vault_login.REVOKE_TIMEOUT
    if not isinstance(address, str) or url_problem(address) is not None:
        raise ValueError("bad address")
    if namespace is not None and not (
        isinstance(namespace, str) and VISIBLE_ASCII.fullmatch(namespace)
    ):
        raise ValueError("bad namespace")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError("bad timeout")
    endpoint = vault_login.VaultEndpoint(
        address=address, namespace=namespace, ca_pem=ca_pem, timeout=float(timeout)
    )
    endpoint.ssl_context()  # a CA certificate that does not load: ssl.SSLError, an OSError
    return endpoint


def pending(
    workdir: Path, records: list[dict[str, Any]], warn: Warn
) -> list[tuple[vault_login.VaultEndpoint, str]]:
    """(endpoint, token) for each record whose token file is still there, read now so the
    files may be replaced before the tokens are revoked. A token whose record or file `apply`
    could not have written (the manifest or file was edited) is sent nowhere: a warning says
    it was not revoked."""
    found = []
    for record in records:
        try:
            token = (workdir / record["token_file"]).read_text().strip()
        except (OSError, KeyError, ValueError):
            continue  # gone (or never written): nothing to revoke
        if not token:
            continue
        try:
            endpoint = _endpoint(workdir, record)
        except (OSError, KeyError, ValueError):
            endpoint = None
        if endpoint is None or not is_token68(token):
            what = "its record in the manifest" if endpoint is None else "the file"
            warn(
                f"the Vault token in {record['token_file']} was not revoked: {what} was not"
                " written by keysvc"
            )
            continue
        found.append((endpoint, token))
    return found


def revoke_all(tokens: list[tuple[vault_login.VaultEndpoint, str]], warn: Warn) -> None:
    for endpoint, token in tokens:
        warning = vault_login.revoke(endpoint, token)
        if warning:
            warn(warning)
