"""Revoking the Vault tokens a manifest records, before their files are removed or replaced.

Only the token comes from the work directory. Where it goes comes from the environment of
`apply` or `clean` (`TFC_VAULT_ADDR[_TAG]`, `TFC_VAULT_NAMESPACE`, `TFC_VAULT_ENCODED_CACERT`,
`TFC_VAULT_CLIENT_TIMEOUT`, as `apply` used them), never from the directory: a run that rewrites
the manifest or a token file can at worst keep a token from being revoked (a warning says so),
never have it, or anything read on its behalf, sent to an address of its choosing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from keysvc.creds import vault_login
from keysvc.creds.checks import is_token68
from keysvc.creds.errors import VariableError
from keysvc.creds.providers.base import FileNames
from keysvc.creds.providers.vault import VaultConfiguration, endpoint
from keysvc.creds.variables import Settings, enabled_tags
from keysvc.creds.workdir import Unreadable, WorkDir

Warn = Callable[[str], None]
Endpoints = dict[str, vault_login.VaultEndpoint | str]
"""Token file name → the Vault to revoke it at, or why the environment names none."""
MAX_TOKEN_BYTES = 16384


def endpoints(env: Mapping[str, str]) -> Endpoints:
    """The Vault of every Vault configuration enabled in `env`, by its token file's name."""
    try:
        tags = enabled_tags(env, "VAULT")
    except VariableError as exc:
        return {"": str(exc)}
    found: Endpoints = {}
    for tag in tags:
        name = FileNames(Path(), "vault", tag, VaultConfiguration.files).name("token")
        try:
            found[name] = endpoint(Settings(env, "VAULT", tag, "apply"))
        except VariableError as exc:
            found[name] = str(exc)
    return found


def _no_endpoint(name: str, found: Endpoints) -> str:
    why = found.get(name) or found.get("")
    if isinstance(why, str) and why:
        return f"its Vault configuration is invalid ({why})"
    tag = name.removeprefix("vault").removesuffix("_token")
    return (
        f"TFC_VAULT_PROVIDER_AUTH{tag} and TFC_VAULT_ADDR{tag} are not set where keysvc runs"
        " (the Vault address is never taken from the work directory)"
    )


def pending(
    workdir: WorkDir, names: list[str], found: Endpoints, warn: Warn
) -> list[tuple[vault_login.VaultEndpoint, str]]:
    """(endpoint, token) for each token file still there, read now so the files may be
    replaced before the tokens are revoked. A token whose file `apply` could not have written,
    or for which the environment names no Vault, is sent nowhere: a warning says it was not
    revoked."""
    tokens = []
    for name in names:
        not_revoked = f"the Vault token in {name} was not revoked"
        try:
            raw = workdir.read(name, MAX_TOKEN_BYTES)
        except Unreadable as exc:
            warn(f"{not_revoked}: {name} {exc}, not the file keysvc wrote")
            continue
        except OSError as exc:
            warn(f"{not_revoked}: it cannot be read ({exc.strerror})")
            continue
        if raw is None:
            continue  # gone (or never written): nothing to revoke
        token = raw.decode("ascii", errors="replace").strip()
        if not token:
            continue
        if not is_token68(token):
            warn(f"{not_revoked}: the file was not written by keysvc")
            continue
        where = found.get(name)
        if not isinstance(where, vault_login.VaultEndpoint):
            warn(f"{not_revoked}: {_no_endpoint(name, found)}")
            continue
        tokens.append((where, token))
    return tokens


def revoke_all(tokens: list[tuple[vault_login.VaultEndpoint, str]], warn: Warn) -> None:
    for where, token in tokens:
        warning = vault_login.revoke(where, token)
        if warning:
            warn(warning)
