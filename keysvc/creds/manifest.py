"""The record `apply` keeps inside the work directory of what it wrote, so `clean` removes
exactly that (and revokes the Vault tokens it obtained) and nothing else."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keysvc.creds.errors import WorkdirError
from keysvc.secrets import write_private_file

MANIFEST_NAME = ".keysvc-creds.json"
FORMAT = 1


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
        and "\0" not in name
    )


def read(workdir: Path) -> Manifest | None:
    path = workdir / MANIFEST_NAME
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise WorkdirError(f"{path} cannot be read: {exc}") from None
    files = data.get("files") if isinstance(data, dict) else None
    vault = data.get("vault", []) if isinstance(data, dict) else None
    if (
        data.get("keysvc_creds") != FORMAT
        or not isinstance(files, list)
        or not all(_plain_name(n) for n in files)
        or not isinstance(vault, list)
        or not all(isinstance(v, dict) and _plain_name(v.get("token_file")) for v in vault)
    ):
        raise WorkdirError(f"{path} is not a keysvc credentials manifest")
    return Manifest(files=list(files), vault=list(vault))


def write(workdir: Path, manifest: Manifest) -> None:
    write_private_file(workdir / MANIFEST_NAME, manifest.to_bytes())


def remove(workdir: Path) -> None:
    (workdir / MANIFEST_NAME).unlink(missing_ok=True)
