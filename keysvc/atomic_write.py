"""Replacing a file so that readers see the old content or the new, never a part.

Used for secrets (private keys, tokens: mode 0600) and for published documents (mode 0644).
`write_atomically_at` works inside an already open directory, for writers that must stay in a
directory whatever a symlink elsewhere in its path says (`publish --to`, the run side).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` through a temp file in its directory (see write_atomically_at)."""
    path = Path(path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_atomically_at(dir_fd, path.name, data, mode)
    finally:
        os.close(dir_fd)


def write_atomically_at(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """Write a temp file in the directory `dir_fd` (a random name, created exclusively, so
    neither a stale file left by a crash nor a planted symlink is ever followed), set `mode`
    regardless of the umask, fsync, rename it over `name` and fsync the directory. The rename
    replaces `name` itself, never what a symlink there points at."""
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)
