"""The record `apply` keeps inside the work directory of what it wrote, so `clean` removes that
(and revokes the Vault tokens it obtained) and nothing else.

The run can rewrite this file. So it is read as the work directory module reads anything there
(no symlink, FIFO or device, one link, at most MAX_BYTES), and it can only name files `apply`
could have written (`<provider><_TAG>_<name>` with a provider's declared names, or a provider's
tfvars file): an edited manifest makes `clean` remove less, never something else. It holds no
address: `clean` takes Vault's from its own environment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from keysvc.creds.errors import WorkdirError
from keysvc.creds.plan import TFVARS_FILE
from keysvc.creds.providers import PROVIDERS
from keysvc.creds.providers.vault import VaultConfiguration
from keysvc.creds.workdir import Unreadable, WorkDir

MANIFEST_NAME = ".keysvc-creds.json"
FORMAT = 1
MAX_BYTES = 1 << 20
NOTHING_REMOVED = (
    "nothing was removed or replaced (remove the files keysvc wrote there, then this file,"
    " by hand)"
)
_TAG = r"(?:_[A-Za-z0-9_]+)?"


def _names(provider: str, files: tuple[str, ...]) -> str:
    return rf"{provider}{_TAG}_(?:{'|'.join(re.escape(f) for f in files)})"


VARIABLES_FILE = re.compile(r"keysvc(?:_[A-Za-z0-9_-]+)?\.(?:env|json)")
"""The names `apply --env-file` may give the file of variables: apply's own (keysvc.env,
keysvc_plan.json, ...), so that a manifest naming one cannot make `clean` remove a run's file."""
CREDENTIAL_NAME = re.compile(
    "|".join(
        [_names(p.provider, p.files) for p in PROVIDERS]
        + [re.escape(TFVARS_FILE.format(provider=p.provider)) for p in PROVIDERS]
        + [VARIABLES_FILE.pattern]
    )
)
"""Every name `apply` may write in the work directory."""
VAULT_TOKEN_NAME = re.compile(_names(VaultConfiguration.provider, ("token",)))


@dataclass
class Manifest:
    files: list[str] = field(default_factory=list)  # names inside the work directory
    vault: list[str] = field(default_factory=list)  # those holding a Vault token to revoke

    def to_bytes(self) -> bytes:
        data = {
            "keysvc_creds": FORMAT,
            "files": sorted(self.files),
            "vault": [{"token_file": name} for name in sorted(self.vault)],
        }
        return json.dumps(data, indent=2).encode()


def _vault_token_file(record: object) -> str | None:
    """The token file a record names (other fields, which older versions wrote, are ignored:
    an address in the work directory is the run's to choose)."""
    name = record.get("token_file") if isinstance(record, dict) else None
    return name if isinstance(name, str) and VAULT_TOKEN_NAME.fullmatch(name) else None


def read(workdir: WorkDir) -> Manifest | None:
    """The manifest in `workdir`, None when there is none. One that cannot be read safely or
    is not what `apply` writes is a WorkdirError: `clean` then removes nothing, since it cannot
    know what `apply` wrote, and never guesses at names a user's own files may have."""
    path = workdir.path / MANIFEST_NAME
    try:
        raw = workdir.read(MANIFEST_NAME, MAX_BYTES)
    except Unreadable as exc:
        raise WorkdirError(f"{path} {exc}; {NOTHING_REMOVED}") from None
    except OSError as exc:
        raise WorkdirError(f"{path} cannot be read ({exc.strerror}); {NOTHING_REMOVED}") from None
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise WorkdirError(f"{path} cannot be read (it is not JSON); {NOTHING_REMOVED}") from None
    files = data.get("files") if isinstance(data, dict) else None
    vault = data.get("vault", []) if isinstance(data, dict) else None
    tokens = [_vault_token_file(v) for v in vault] if isinstance(vault, list) else [None]
    if (
        not isinstance(data, dict)
        or data.get("keysvc_creds") != FORMAT
        or not isinstance(files, list)
        or not all(isinstance(n, str) and CREDENTIAL_NAME.fullmatch(n) for n in files)
        or None in tokens
    ):
        raise WorkdirError(f"{path} is not a keysvc credentials manifest; {NOTHING_REMOVED}")
    return Manifest(files=list(files), vault=[t for t in tokens if t is not None])


def write(workdir: WorkDir, manifest: Manifest) -> None:
    workdir.write_private(MANIFEST_NAME, manifest.to_bytes())


def remove(workdir: WorkDir) -> None:
    workdir.unlink(MANIFEST_NAME)
