"""All-or-nothing replacement of the credential files in a work directory.

The manifest is written first, naming every file that may appear, so even a process killed
half-way leaves nothing `clean` would miss. A failure while writing removes every file of the
old and the new set: a run never starts with a mix of two applies' credentials.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from keysvc.creds import manifest, revocation
from keysvc.creds.checks import text_problem
from keysvc.creds.errors import WorkdirError
from keysvc.creds.manifest import Manifest
from keysvc.secrets import write_private_file


def _checked_path(workdir: Path) -> Path:
    """The absolute work directory, refused when it is not one line of printable characters:
    its path goes into the files (AWS's config.ini is line-based), the printed variables and
    one-line errors."""
    workdir = Path(workdir).absolute()
    problem = text_problem(str(workdir))
    if problem is not None:
        raise WorkdirError(f"the work directory path {problem}")
    return workdir


def check_workdir(workdir: Path) -> Path:
    workdir = _checked_path(workdir)
    if not workdir.is_dir():
        raise WorkdirError(f"work directory {workdir} does not exist or is not a directory")
    return workdir


def check_free(workdir: Path, names: list[str], previous: Manifest) -> None:
    """Refuse to overwrite a file that keysvc did not write: `clean` would delete it later."""
    for name in names:
        path = workdir / name
        if (path.exists() or path.is_symlink()) and name not in previous.files:
            raise WorkdirError(
                f"{path} exists and was not written by keysvc; move it away or use another"
                " work directory"
            )


def _remove(workdir: Path, names: list[str]) -> list[str]:
    """Unlink each file (never a directory: keysvc writes none); returns the names that could
    not be removed, after trying them all."""
    failed = []
    for name in names:
        path = workdir / name
        try:
            if path.is_symlink() or not path.is_dir():
                path.unlink(missing_ok=True)
        except OSError:
            failed.append(name)
    return failed


def replace(
    workdir: Path,
    files: dict[str, bytes],
    vault: list[dict[str, Any]],
    warn: revocation.Warn,
) -> None:
    """Make `files` the credential files of `workdir`, replacing what an earlier apply wrote
    there (its Vault tokens are revoked)."""
    previous = manifest.read(workdir) or Manifest()
    names = sorted(files)
    check_free(workdir, names, previous)
    old_tokens = revocation.pending(workdir, previous.vault, warn)
    everything = sorted(set(previous.files) | set(names))
    where = workdir
    try:
        if names or previous.files:
            manifest.write(workdir, Manifest(files=everything, vault=vault))
        for name in names:
            where = workdir / name
            write_private_file(where, files[name])
        where = workdir
        _remove(workdir, [n for n in previous.files if n not in files])
        if names:
            manifest.write(workdir, Manifest(files=names, vault=vault))
        else:
            manifest.remove(workdir)
    except BaseException as exc:
        _remove(workdir, everything)
        manifest.remove(workdir)
        revocation.revoke_all(old_tokens, warn)
        if isinstance(exc, OSError):
            raise WorkdirError(f"writing credentials to {where} failed: {exc.strerror}") from None
        raise
    revocation.revoke_all(old_tokens, warn)


def clean(workdir: Path, warn: revocation.Warn) -> list[Path]:
    """Revoke and remove what `apply` wrote in `workdir`; returns the files removed."""
    workdir = _checked_path(workdir)
    if not workdir.is_dir():
        return []
    recorded = manifest.read(workdir)
    if recorded is None:
        return []
    revocation.revoke_all(revocation.pending(workdir, recorded.vault, warn), warn)
    present = [n for n in recorded.files if os.path.lexists(workdir / n)]
    failed = _remove(workdir, recorded.files)
    if failed:
        raise WorkdirError(f"could not remove {', '.join(failed)} from {workdir}")
    manifest.remove(workdir)
    return [workdir / n for n in present]
