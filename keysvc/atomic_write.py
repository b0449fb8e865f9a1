"""Replacing a file so that readers see the old content or the new, never a part.

Used for secrets (private keys, tokens: mode 0600) and for published documents (mode 0644).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write a temp file next to `path` (a random name, created exclusively, so neither a stale
    file left by a crash nor a planted symlink is ever followed), set `mode` regardless of the
    umask, fsync, rename it over `path` and fsync the directory."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
