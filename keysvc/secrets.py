"""Reading secret files safely: private keys, tokens, PINs.

Like ssh, keysvc refuses a secret that group or others may read: a key that leaked to another
local user must not silently sign tokens.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from keysvc.atomic_write import write_atomically
from keysvc.errors import ConfigError


class InsecureFileError(PermissionError):
    pass


class AccessibleByOthersError(InsecureFileError):
    """The file is a regular file, but group or others may access it."""


def check_private(path: Path, what: str) -> os.stat_result:
    """Stat `path` (following links, as Kubernetes Secret mounts use them) and refuse a file
    that group or others can access."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise InsecureFileError(f"{what} {path} is not a regular file")
    if st.st_mode & 0o077:
        raise AccessibleByOthersError(
            f"{what} {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o});"
            f" run: chmod 600 {path}"
        )
    return st


def read_secret_file(path: Path, what: str) -> bytes:
    """Read a secret file after checking its mode. Errors never include the contents."""
    try:
        check_private(path, what)
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except InsecureFileError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None


def write_private_file(path: Path, data: bytes) -> None:
    """Write a secret atomically: temp file (0600) in the same directory, fsync, rename, fsync
    the directory. Nothing half-written is ever visible under `path`."""
    write_atomically(path, data, 0o600)
