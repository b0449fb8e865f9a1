"""All-or-nothing replacement of the credential files in a work directory.

The manifest is written first, naming every file that may appear, so even a process killed
half-way leaves nothing `clean` would miss. A failure while writing removes every file of the
old and the new set: a run never starts with a mix of two applies' credentials.

Everything goes through one open WorkDir: the run controls the directory's content between
`apply`, a second `apply` and `clean` (see keysvc.creds.workdir).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from keysvc.creds import manifest, revocation
from keysvc.creds.checks import text_problem
from keysvc.creds.errors import WorkdirError
from keysvc.creds.manifest import Manifest
from keysvc.creds.workdir import WorkDir


def _checked_path(workdir: Path) -> Path:
    """The absolute work directory, refused when it is not one line of printable characters:
    its path goes into the files (AWS's config.ini is line-based), the printed variables and
    one-line errors."""
    workdir = Path(workdir).absolute()
    problem = text_problem(str(workdir))
    if problem is not None:
        raise WorkdirError(f"the work directory path {problem}")
    return workdir


def open_workdir(workdir: Path) -> WorkDir:
    """The work directory `apply` writes into, opened."""
    path = _checked_path(workdir)
    try:
        return WorkDir.open(path)
    except (FileNotFoundError, NotADirectoryError):
        raise WorkdirError(f"work directory {path} does not exist or is not a directory") from None
    except OSError as exc:
        raise WorkdirError(f"work directory {path} cannot be opened: {exc.strerror}") from None


def check_free(workdir: WorkDir, names: list[str], previous: Manifest) -> None:
    """Refuse to overwrite a file that keysvc did not write: `clean` would delete it later."""
    for name in names:
        if workdir.exists(name) and name not in previous.files:
            raise WorkdirError(
                f"{workdir.path / name} exists and was not written by keysvc; move it away or"
                " use another work directory"
            )


def _remove(workdir: WorkDir, names: list[str], warn: revocation.Warn) -> tuple[list[str], list[str]]:
    """Unlink each name (a file, link, FIFO or device: the name only; never a directory, which
    keysvc does not write). Returns (removed, could not be removed), after trying them all."""
    removed, failed = [], []
    for name in names:
        try:
            if workdir.unlink(name):
                removed.append(name)
        except IsADirectoryError:
            warn(f"{workdir.path / name} is a directory, not a file keysvc wrote: left in place")
        except OSError:
            failed.append(name)
    return removed, failed


def replace(
    workdir: WorkDir,
    files: dict[str, bytes],
    vault: list[str],
    env: Mapping[str, str],
    warn: revocation.Warn,
) -> None:
    """Make `files` the credential files of `workdir`, replacing what an earlier apply wrote
    there (its Vault tokens are revoked at the Vault `env` names); `vault` names the files that
    hold Vault tokens."""
    previous = manifest.read(workdir) or Manifest()
    names = sorted(files)
    check_free(workdir, names, previous)
    old_tokens = revocation.pending(workdir, previous.vault, revocation.endpoints(env), warn)
    everything = sorted(set(previous.files) | set(names))
    where = workdir.path
    try:
        if names or previous.files:
            manifest.write(workdir, Manifest(files=everything, vault=vault))
        for name in names:
            where = workdir.path / name
            workdir.write_private(name, files[name])
        where = workdir.path
        _remove(workdir, [n for n in previous.files if n not in files], warn)
        if names:
            manifest.write(workdir, Manifest(files=names, vault=vault))
        else:
            manifest.remove(workdir)
    except BaseException as exc:
        _remove(workdir, everything, warn)
        manifest.remove(workdir)
        revocation.revoke_all(old_tokens, warn)
        if isinstance(exc, OSError):
            raise WorkdirError(f"writing credentials to {where} failed: {exc.strerror}") from None
        raise
    revocation.revoke_all(old_tokens, warn)


def clean(workdir: Path, env: Mapping[str, str], warn: revocation.Warn) -> list[Path]:
    """Revoke and remove what `apply` wrote in `workdir`; returns the files removed."""
    path = _checked_path(workdir)
    try:
        opened = WorkDir.open(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise WorkdirError(f"work directory {path} cannot be opened: {exc.strerror}") from None
    with opened:
        recorded = manifest.read(opened)
        if recorded is None:
            return []
        tokens = revocation.pending(opened, recorded.vault, revocation.endpoints(env), warn)
        revocation.revoke_all(tokens, warn)
        removed, failed = _remove(opened, recorded.files, warn)
        if failed:
            raise WorkdirError(f"could not remove {', '.join(failed)} from {path}")
        manifest.remove(opened)
    return [path / name for name in removed]
