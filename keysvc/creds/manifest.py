"""The record `apply` keeps inside the work directory of what it wrote, so `clean` removes
exactly that (and revokes the Vault tokens it obtained) and nothing else."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keysvc.creds.checks import text_problem
from keysvc.creds.errors import WorkdirError
from keysvc.secrets import write_private_file

MANIFEST_NAME = ".keysvc-creds.json"
FORMAT = 1
NOTHING_REMOVED = (
    "nothing was removed or replaced (remove the files keysvc wrote there, then this file,"
    " by hand)"
)


@dataclass
class Manifest:
    files: list[str] = field(default_factory=list)  # names inside the work directory
    vault: list[dict[str, Any]] = field(default_factory=list)  # see vault_login.to_record

    def to_bytes(self) -> bytes:
        data = {"keysvc_creds": FORMAT, "files": sorted(self.files), "vault": self.vault}
        return json.dumps(data, indent=2).encode()


def _plain_name(name: object) -> bool:
    """Only names directly inside the work directory: a manifest cannot make `clean` delete
    anything elsewhere."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..", MANIFEST_NAME)
        and "/" not in name
        and text_problem(name) is None  # apply writes no other names; messages quote them
    )


def _vault_record(record: object) -> bool:
    if not isinstance(record, dict) or not _plain_name(record.get("token_file")):
        return False
    ca_file = record.get("ca_cert_file")
    return ca_file is None or _plain_name(ca_file)


def read(workdir: Path) -> Manifest | None:
    """The manifest in `workdir`, None when there is none. One that cannot be read or is not
    what `apply` writes is a WorkdirError: `clean` then removes nothing, since it cannot know
    what `apply` wrote, and never guesses at names a user's own files may have."""
    path = workdir / MANIFEST_NAME
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not JSON"
        raise WorkdirError(f"{path} cannot be read ({reason}); {NOTHING_REMOVED}") from None
    if not isinstance(data, dict):
        raise WorkdirError(f"{path} is not a keysvc credentials manifest; {NOTHING_REMOVED}")
    files = data.get("files")
    vault = data.get("vault", [])
    if (
        data.get("keysvc_creds") != FORMAT
        or not isinstance(files, list)
        or not all(_plain_name(n) for n in files)
        or not isinstance(vault, list)
        or not all(_vault_record(v) for v in vault)
    ):
        raise WorkdirError(f"{path} is not a keysvc credentials manifest; {NOTHING_REMOVED}")
    return Manifest(files=list(files), vault=list(vault))


def write(workdir: Path, manifest: Manifest) -> None:
    write_private_file(workdir / MANIFEST_NAME, manifest.to_bytes())


def remove(workdir: Path) -> None:
    (workdir / MANIFEST_NAME).unlink(missing_ok=True)
