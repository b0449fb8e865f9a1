"""The run's work directory, as an attacker controls it between `apply` and `clean`.

The Terraform code of a run may replace anything inside the directory: a credential file by a
symlink to a secret elsewhere, by a FIFO (whose open() blocks forever), by a device or a hard
link, or the manifest by a huge file. So the directory is opened once, and every later access
goes through that descriptor by plain name: nothing is opened through a symlink (O_NOFOLLOW),
nothing but a regular file with one link is read (checked before the open, which is also
O_NONBLOCK so a FIFO swapped in meanwhile cannot block, and again on the open file), nothing is
read beyond a small limit, and a removal takes away the name in this directory only.

The directory itself must not be a symlink; a symlink among its parents is followed only when
root owns it (`/var/run` → `/run`), since a run cannot make one of those.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath
from types import TracebackType

from keysvc.atomic_write import write_atomically_at
from keysvc.creds.errors import WorkdirError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_MAX_LINKS = 40  # as the kernel's own limit on symlinks in one path


class Unreadable(Exception):
    """A file that is there but is not one keysvc could have written; the message says why,
    in words that fit after its name ("vault_token is a symbolic link")."""


class WorkDir:
    """An open work directory; use as a context manager."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: Path) -> WorkDir:
        """Open `path` (absolute). FileNotFoundError or NotADirectoryError when it is not an
        existing directory; WorkdirError when a symlink is in the way."""
        return cls(path, _open_directory(path))

    def __enter__(self) -> WorkDir:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        os.close(self.fd)

    def lstat(self, name: str) -> os.stat_result | None:
        """`name`'s own status (a symlink is not followed); None when there is no such name."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def exists(self, name: str) -> bool:
        return self.lstat(name) is not None

    def read(self, name: str, limit: int) -> bytes | None:
        """The content of the regular file `name`, None when there is no such name; Unreadable
        when it is anything else (symlink, FIFO, device, directory, several hard links, more
        than `limit` bytes). Never blocks, never leaves the directory."""
        before = self.lstat(name)
        if before is None:
            return None
        _check_regular(before, limit)
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Unreadable("is a symbolic link") from None
            raise
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
                raise Unreadable("was replaced while being read")
            _check_regular(now, limit)
            chunks, size = [], 0
            while size <= limit:
                chunk = os.read(fd, limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > limit:
                raise Unreadable(f"is larger than {limit} bytes")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def unlink(self, name: str) -> bool:
        """Remove the name `name` (a symlink itself, never what it points at); False when
        there was none. A directory is not removed (keysvc writes none): IsADirectoryError."""
        found = self.lstat(name)
        if found is None:
            return False
        if stat.S_ISDIR(found.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def write_private(self, name: str, data: bytes) -> None:
        """Replace `name` atomically with `data`, mode 0600 (a symlink there is replaced,
        never followed)."""
        write_atomically_at(self.fd, name, data, 0o600)


def _check_regular(st: os.stat_result, limit: int) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise Unreadable("is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise Unreadable("is not a regular file")
    if st.st_nlink != 1:
        raise Unreadable("has other hard links")
    if st.st_size > limit:
        raise Unreadable(f"is larger than {limit} bytes")


def _open_directory(path: Path) -> int:
    """A descriptor of the directory `path`, reached component by component without following
    a symlink, except one among the parents that root owns."""
    parts = list(PurePosixPath(path).parts)
    if not parts or parts[0] != "/":
        raise ValueError(f"{path} is not absolute")
    fd = os.open("/", _DIR_FLAGS)
    pending, hops = parts[1:], 0
    try:
        while pending:
            name = pending.pop(0)
            try:
                inner = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                found = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(found.st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), name)
                if not pending:
                    raise WorkdirError(
                        f"work directory {path} is a symbolic link; give the directory itself"
                    ) from None
                hops += 1
                if found.st_uid != 0 or hops > _MAX_LINKS:
                    raise WorkdirError(
                        f"work directory {path}: {name} is a symbolic link not owned by root;"
                        " give the directory's real path"
                    ) from None
                target = PurePosixPath(os.readlink(name, dir_fd=fd))
                if target.is_absolute():
                    os.close(fd)
                    fd = os.open("/", _DIR_FLAGS)
                    pending = list(target.parts[1:]) + pending
                else:
                    pending = list(target.parts) + pending
                continue
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd
