"""File backend: private keys in PEM files, as otfd's `--private-key-path` uses them.

`path` is either one PEM file (one key version: otfd's set-up) or a directory holding one PEM file
per key version, to which rotation adds a new file. A version's creation time is read from its
file name (`key-20261127T145700Z.pem`), never from the file's modification time, because copying
the directory (a Kubernetes Secret mount, a restore) resets those times and replicas must agree.
A PEM file without a timestamp in its name counts as created at the Unix epoch: the oldest key.
A directory may hold one such file (otfd's key, moved in as is); two would tie at the epoch and
one of them would silently drop out of the JWKS, so the listing is refused until the extra ones
are brought in with `keysvc keys import`, which stamps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keysvc import jose, keygen
from keysvc.backends.base import BackendSettings, Capability, KeyBackend, KeyVersion, require
from keysvc.backends.base import (
    CreatesVersions,
    DestroysVersions,
    DisablesVersions,
    ListsDisabledVersions,
)
from keysvc.backends.stamps import EPOCH, STAMP, format_stamp, parse_stamp
from keysvc.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    InsecureKeyError,
    OperationNotSupported,
)
from keysvc.secrets import (
    AccessibleByOthersError,
    InsecureFileError,
    check_private,
    write_private_file,
)

_STAMP = re.compile(f"({STAMP})")
REVOKED_SUFFIX = ".revoked"
LOCK_NAME = ".keysvc-rotate.lock"
"""The lock file that serialises rotations of one key directory (hidden: never listed)."""
LOCK_TIMEOUT = 60.0
"""How long a rotation waits for another one holding the lock (generating RSA-4096 takes
seconds): past it, BackendUnavailable, and a schedule's next run tries again."""


class FileSettings(BackendSettings):
    path: Path
    public_key_path: Path | None = None
    """Optional PKIX public key (otfd's `--public-key-path`); it must match the private key."""
    key_type: keygen.KeyType | None = None
    """Type of keys created by rotation; by default the type of the newest existing key."""


def created_at_from_name(name: str) -> datetime:
    match = _STAMP.search(name)
    if not match:
        return EPOCH
    try:
        return parse_stamp(match.group(1))
    except ValueError as exc:
        raise ValueError(f"{exc} in its name (key-YYYYMMDDTHHMMSSZ.pem)") from None


def name_for(created_at: datetime) -> str:
    return f"key-{format_stamp(created_at)}.pem"


def load_private_key(path: Path, data: bytes, *, check: bool = True) -> jose.PrivateKey:
    """Parse PKCS#1, PKCS#8 or OpenSSH PEM; errors name the file, never its contents.

    `check=False` skips the consistency checks cryptography makes of an RSA key (0.5-0.9 s for
    RSA-4096; EC and Ed25519 keys cost nothing either way): for the public key alone, never for
    signing (see CheckedOnUse)."""
    skip = not check
    try:
        if b"BEGIN OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(
                data, password=None, unsafe_skip_rsa_key_validation=skip
            )
        else:
            key = serialization.load_pem_private_key(
                data, password=None, unsafe_skip_rsa_key_validation=skip
            )
    except TypeError:
        raise ConfigError(f"private key {path} is encrypted; keysvc needs it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{path} is not a PEM private key (PKCS#1, PKCS#8 or OpenSSH)") from None
    try:
        jose.check_supported(key.public_key())
    except (jose.UnsupportedKeyError, AttributeError) as exc:
        raise ConfigError(f"private key {path}: {exc}") from None
    return key  # type: ignore[return-value]


class CheckedOnUse:
    """An RSA private key read for its public key alone. cryptography's checks of the key
    (that its parts agree: signing with a broken one can leak it) run before its first
    signature, once (FileBackend checks the two newest keys ahead, in the background). A
    directory of many versions thus lists in milliseconds, and only the keys that may sign pay
    for the checks: never the retired ones a directory keeps for their JWKS entries."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        self._data: bytes | None = data
        self._key: rsa.RSAPrivateKey | None = None
        self._lock = threading.Lock()

    @property
    def checked(self) -> bool:
        return self._key is not None

    def check_quietly(self) -> None:
        """Check now, ahead of the first signature; a failure shows at that signature."""
        try:
            self.key()
        except BackendError:
            pass

    def key(self) -> rsa.RSAPrivateKey:
        """The key, checked (the first call checks it, in the caller's thread)."""
        if self._key is not None:  # every signature after the first: no lock
            return self._key
        with self._lock:
            if self._key is None:
                assert self._data is not None
                try:
                    self._key = load_private_key(self.path, self._data)  # type: ignore[assignment]
                except ConfigError:
                    raise BackendError(
                        f"private key {self.path} cannot sign: it fails the RSA consistency"
                        " checks (its parts disagree); replace it"
                    ) from None
                self._data = None
            return self._key  # type: ignore[return-value]


class FileBackend(
    KeyBackend, CreatesVersions, DisablesVersions, DestroysVersions, ListsDisabledVersions
):
    Settings = FileSettings
    settings: FileSettings

    def __init__(self, name: str, settings: FileSettings) -> None:
        super().__init__(name, settings)
        # With tokens.rsa_signing = "threads", RSA signing (milliseconds; cryptography releases
        # the GIL) runs here, off the event loop, on as many threads as there are cores. Key
        # loading and file operations run here too.
        self._executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="sign")
        self._cache: dict[Path, tuple[tuple[int, int, int], KeyVersion]] = {}

    # -- listing ----------------------------------------------------------------------------

    def _files(self) -> list[Path]:
        path = self.settings.path
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir() if p.suffix == ".pem" and not p.name.startswith(".")
            )
            self._check_unstamped(path, files)
            return files
        if path.exists():
            return [path]
        raise ConfigError(f"backends.{self.name}.path: {path} does not exist")

    def _check_unstamped(self, directory: Path, files: list[Path]) -> None:
        unstamped = [p.name for p in files if not _STAMP.search(p.name)]
        if len(unstamped) > 1:
            raise ConfigError(
                f"backends.{self.name}.path: {directory} holds {len(unstamped)} PEM files without"
                f" a creation time in their name ({', '.join(unstamped)}); each would count as"
                " created at the epoch and all but one would silently drop out of the JWKS. Keep"
                " at most one (otfd's key), move the others out and add each back with"
                f" `keysvc keys import FILE --backend {self.name}`, which names it"
                " key-<UTC now>.pem"
            )

    def _load(self, path: Path) -> KeyVersion:
        try:
            st = check_private(path, "private key")
        except AccessibleByOthersError as exc:
            raise InsecureKeyError(str(exc)) from None
        except InsecureFileError as exc:
            raise ConfigError(str(exc)) from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._cache.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        try:
            created_at = created_at_from_name(path.name)
        except ValueError as exc:  # one mistyped name is the operator's to fix, as a bad key is
            raise ConfigError(f"private key {path}: {exc}") from None
        data = path.read_bytes()
        key = load_private_key(path, data, check=False)
        version = KeyVersion(
            version_id=path.name,
            created_at=created_at,
            public_key=key.public_key(),
            handle=CheckedOnUse(path, data) if isinstance(key, rsa.RSAPrivateKey) else key,
        )
        self._cache[path] = (stamp, version)
        return version

    def _list(self) -> list[KeyVersion]:
        versions = [self._load(p) for p in self._files()]
        self._check_soon(versions)
        if self.settings.public_key_path is not None:
            self._check_public_key(versions)
        return versions

    def _check_soon(self, versions: list[KeyVersion]) -> None:
        """Check, in the background, the RSA keys of the two newest versions: the ones that may
        sign (the active key, the next one), so that their first signature, perhaps on the
        event loop (tokens.rsa_signing = "loop"), does not wait for the check. Any other key
        is checked only if it ever signs; a failed check shows at that signature."""
        newest = sorted(versions, key=lambda v: (v.created_at, v.version_id))[-2:]
        for version in newest:
            handle = version.handle
            if isinstance(handle, CheckedOnUse) and not handle.checked:
                self._executor.submit(handle.check_quietly)

    def _check_public_key(self, versions: list[KeyVersion]) -> None:
        path = self.settings.public_key_path
        assert path is not None
        try:
            public = serialization.load_pem_public_key(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"public key {path} cannot be read: {exc.strerror}") from None
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigError(f"{path} is not a PEM public key (BEGIN PUBLIC KEY)") from None
        wanted = keygen.public_pem(public)  # type: ignore[arg-type]
        if not any(keygen.public_pem(v.public_key) == wanted for v in versions):
            raise ConfigError(
                f"public key {path} does not match the private key in {self.settings.path}"
            )

    async def list_versions(self) -> list[KeyVersion]:
        # File I/O and parsing (RSA keys' checks wait for their first signature): off the loop.
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._list)

    # -- signing ----------------------------------------------------------------------------

    def signs_at_once(self, version: KeyVersion, alg: jose.Algorithm) -> bool:
        # Every key is loaded in this process: the ring schedules the signatures (EC batched on
        # the event loop; RSA queued on it, or through sign() below, per tokens.rsa_signing).
        # Except an RSA key not yet checked: its first signature pays for the check (up to a
        # second), so it goes through sign(), in the pool, never on the event loop.
        handle = version.handle
        return not isinstance(handle, CheckedOnUse) or handle.checked

    def sign_now(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        handle = version.handle
        key = handle.key() if isinstance(handle, CheckedOnUse) else handle
        return jose.sign_local(key, alg, message)

    async def sign(self, version: KeyVersion, alg: jose.Algorithm, message: bytes) -> bytes:
        if not isinstance(version.handle, CheckedOnUse):
            return self.sign_now(version, alg, message)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.sign_now, version, alg, message)

    # -- rotation, revocation, destruction ----------------------------------------------------

    def limitation(self, capability: Capability) -> str | None:
        if self.settings.path.is_dir():
            return None
        return (
            f"it uses the single key file {self.settings.path}; point path at a directory of"
            f" PEM files to {capability.verb} keys"
        )

    def _directory(self, capability: Capability) -> Path:
        require(self, capability)
        return self.settings.path

    def _create(self) -> KeyVersion:
        directory = self._directory(CreatesVersions)
        key_type = self.settings.key_type
        if key_type is None:
            existing = self._list()
            newest = max(existing, key=lambda v: v.created_at, default=None)
            key_type = keygen.key_type_of(newest.public_key) if newest else "rsa-4096"
        key = keygen.generate(key_type)
        created = datetime.now(UTC)
        path = directory / name_for(created)
        write_private_file(path, keygen.private_pem(key))
        return self._load(path)

    async def create_version(self) -> KeyVersion:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._create)

    @contextlib.asynccontextmanager
    async def rotation_lock(self) -> AsyncIterator[None]:
        """An exclusive flock(2) on `.keysvc-rotate.lock` in the key directory, for every process
        on this host (and on NFSv4 and other file systems that carry POSIX locks, every host
        mounting it). Polled without blocking, so a cancelled rotation never leaves a thread
        holding the lock; released when the file is closed, also when the process dies."""
        directory = self._directory(CreatesVersions)
        fd = _open_lock(directory / LOCK_NAME)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while not _try_lock(fd):
                if time.monotonic() > deadline:
                    raise BackendUnavailable(
                        f"another rotation of {directory} has held {LOCK_NAME} for more than"
                        f" {LOCK_TIMEOUT:g}s; try again later",
                        retry_after=LOCK_TIMEOUT,
                    )
                await asyncio.sleep(0.05)
            yield
        finally:
            os.close(fd)

    def _import(self, key: jose.PrivateKey) -> KeyVersion:
        directory = self.settings.path
        if not directory.is_dir():
            raise OperationNotSupported(
                f"backend {self.name!r} cannot import keys: it uses the single key file"
                f" {directory}; point path at a directory of PEM files to import keys"
            )
        kid = jose.thumbprint(key.public_key())
        for version in self._list():
            if jose.thumbprint(version.public_key) == kid:
                raise BackendError(f"key {kid} is already in {directory} as {version.version_id}")
        for revoked in sorted(directory.glob(f"*.pem{REVOKED_SUFFIX}")):
            if self._kid_of_file(revoked) == kid:
                raise BackendError(
                    f"key {kid} was revoked ({revoked}); a revoked key is never brought back"
                )
        path = directory / name_for(datetime.now(UTC))
        if path.exists() or path.is_symlink():
            raise BackendError(f"{path} exists; run the import again")
        write_private_file(path, keygen.private_pem(key))
        return self._load(path)

    @staticmethod
    def _kid_of_file(path: Path) -> str | None:
        """The kid of the key in `path`, None when it cannot be read as one."""
        try:
            key = load_private_key(path, path.read_bytes(), check=False)
            return jose.thumbprint(key.public_key())
        except (OSError, ConfigError):
            return None

    async def import_version(self, key: jose.PrivateKey) -> KeyVersion:
        """Add `key` to the key directory as a new version created now (`key-<now>.pem`, mode
        0600, written atomically): published at once, it signs after publish_lead, like a
        rotated key. A key already there, or revoked there, is refused (BackendError)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._import, key)

    def _disable(self, version: KeyVersion) -> None:
        path = self._directory(DisablesVersions) / version.version_id
        os.replace(path, path.with_name(path.name + REVOKED_SUFFIX))
        self._cache.pop(path, None)

    async def disable_version(self, version: KeyVersion) -> None:
        """Rename the file to `*.pem.revoked`: no replica lists it again, and it stays on disk
        for the incident record."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._disable, version)

    def _disabled(self) -> list[KeyVersion]:
        path = self.settings.path
        if not path.is_dir():
            return []
        found = []
        for file in sorted(path.glob(f"*.pem{REVOKED_SUFFIX}")):
            if file.name.startswith(".") or not file.is_file():
                continue
            pem = file.name.removesuffix(REVOKED_SUFFIX)
            try:
                created_at = created_at_from_name(pem)
            except ValueError as exc:
                raise ConfigError(f"revoked key {file}: {exc}") from None
            key = load_private_key(file, file.read_bytes(), check=False)
            found.append(KeyVersion(file.name, created_at, key.public_key()))
        return found

    async def list_disabled_versions(self) -> list[KeyVersion]:
        """The `*.pem.revoked` files of the key directory (their name is the version id)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._disabled)

    def _destroy(self, version: KeyVersion) -> None:
        path = self._directory(DestroysVersions) / version.version_id
        path.unlink()
        self._cache.pop(path, None)

    async def destroy_version(self, version: KeyVersion) -> None:
        """Delete the key file: the private key is gone for good."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._destroy, version)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _open_lock(path: Path) -> int:
    """The lock file, created 0600 if absent; never through a symlink."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise OperationNotSupported(
                f"cannot rotate: {path.parent} is on a read-only file system (a Kubernetes"
                " Secret mount?); rotate where the key files are written, see"
                " docs/runbooks/rotation.md"
            ) from None
        raise BackendError(f"cannot open the rotation lock {path}: {exc.strerror}") from None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
