"""Where `keysvc publish` writes the public documents: a directory, an S3 or a GCS bucket.

A target stores one document at a path relative to its root (`.well-known/jwks`), replacing the
previous one atomically, so a web server or a bucket never serves a half-written JWKS. The
document's cache metadata travels with it: as object metadata in a bucket, and in a manifest
(`.keysvc-publish.json`) next to a directory's documents for the web server configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from keysvc.atomic_write import write_atomically_at
from keysvc.documents import Document, etag_of

MANIFEST = ".keysvc-publish.json"
STORED_LIMIT = 1 << 20
"""More than any document publish writes: a larger file there is not one of them."""


class PublishError(Exception):
    """Writing failed; the message is safe to print (no credentials, no response bodies)."""


@dataclass(frozen=True)
class Stored:
    """What a target holds at a path: the ETag (unquoted) and Cache-Control it was written with."""

    etag: str
    cache_control: str | None

    def matches(self, document: Document) -> bool:
        return (self.etag, self.cache_control) == (document.etag.strip('"'), document.cache_control)


class Target(Protocol):
    def describe(self) -> str: ...

    async def stored(self, path: str) -> Stored | None:
        """What is at `path` now (None: nothing, or nothing readable), so that a publish that
        would write the same document again writes nothing and says so."""
        ...

    async def write(self, path: str, document: Document) -> None: ...

    async def write_manifest(self, documents: dict[str, Document]) -> None: ...


def manifest(documents: dict[str, Document]) -> bytes:
    """What a web server in front of a directory must send with each document."""
    data = {
        path: {
            "content_type": doc.content_type,
            "cache_control": doc.cache_control,
            "etag": doc.etag,
            "bytes": len(doc.body),
        }
        for path, doc in documents.items()
    }
    return json.dumps(data, indent=2).encode() + b"\n"


@dataclass
class DirectoryTarget:
    """A directory a web server serves. Everything below `root` is written through directory
    descriptors and never through a symlink: a `.well-known` or a document that is a symlink
    (planted, or left by another tool) is refused, not followed to a file elsewhere. `root`
    itself is the operator's own path and may be one."""

    root: Path

    def describe(self) -> str:
        return str(self.root)

    def _write(self, relative: str, data: bytes) -> None:
        *parents, name = relative.split("/")
        path = self.root / relative
        try:
            dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            self.root.mkdir(parents=True, mode=0o755, exist_ok=True)
            dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise PublishError(f"cannot write {path}: {exc.strerror}") from None
        try:
            where = self.root
            for parent in parents:
                where = where / parent
                inner = _enter(dir_fd, parent, where)
                os.close(dir_fd)
                dir_fd = inner
            if stat.S_ISLNK(_lstat(dir_fd, name)):
                raise PublishError(f"{path} is a symbolic link; refusing to write through it")
            write_atomically_at(dir_fd, name, data, 0o644)
        except OSError as exc:
            raise PublishError(f"cannot write {path}: {exc.strerror}") from None
        finally:
            os.close(dir_fd)

    def _read(self, relative: str) -> bytes | None:
        """A regular file's bytes (at most STORED_LIMIT), read as `_write` writes: no symlink
        followed on the way, no FIFO or device opened in earnest. None for anything else."""
        *parents, name = relative.split("/")
        where = self.root
        for parent in parents:
            where = where / parent
            if where.is_symlink():
                return None
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(where / name, flags)
        except OSError:  # missing, a symlink
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a directory, a FIFO: not a document
            os.close(fd)
            return None
        with os.fdopen(fd, "rb") as fh:
            body = fh.read(STORED_LIMIT + 1)
        return body if len(body) <= STORED_LIMIT else None

    def _stored(self, relative: str) -> Stored | None:
        body, manifest_bytes = self._read(relative), self._read(MANIFEST)
        if body is None or manifest_bytes is None:
            return None
        try:
            cache = json.loads(manifest_bytes).get(relative, {})
        except (ValueError, AttributeError):  # not the manifest publish writes
            return None
        control = cache.get("cache_control") if isinstance(cache, dict) else None
        return Stored(etag_of(body).strip('"'), control if isinstance(control, str) else None)

    async def stored(self, path: str) -> Stored | None:
        return await asyncio.to_thread(self._stored, path)

    async def write(self, path: str, document: Document) -> None:
        await asyncio.to_thread(self._write, path, document.body)

    async def write_manifest(self, documents: dict[str, Document]) -> None:
        await asyncio.to_thread(self._write, MANIFEST, manifest(documents))


def _lstat(dir_fd: int, name: str) -> int:
    """The mode of `name` in `dir_fd` without following a symlink; 0 when there is none."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return 0


def _enter(dir_fd: int, name: str, path: Path) -> int:
    """A descriptor of the subdirectory `name` of `dir_fd` (created 0755 when missing), never
    reached through a symlink (O_NOFOLLOW: also when one appears after the check)."""
    if stat.S_ISLNK(_lstat(dir_fd, name)):
        raise PublishError(f"{path} is a symbolic link; refusing to write through it")
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=dir_fd)
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


class S3Target:
    """A bucket (and key prefix), written with aiobotocore (the AWS backend's client library).
    Credentials come from the usual AWS chain (environment, profile, instance or pod role);
    PutObject replaces an object atomically."""

    def __init__(
        self, bucket: str, prefix: str, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        try:
            from aiobotocore.session import get_session  # only publishing to S3 needs it
        except ImportError:
            raise PublishError(
                "publishing to S3 needs aiobotocore: pip install 'keysvc[aws]'"
            ) from None
        self.bucket = bucket
        self.prefix = prefix
        self._session = get_session()
        self._client_args = {"endpoint_url": endpoint_url, "region_name": region}

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    async def stored(self, path: str) -> Stored | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            async with self._session.create_client("s3", **self._client_args) as client:
                head = await client.head_object(Bucket=self.bucket, Key=self.prefix + path)
        except (ClientError, BotoCoreError):  # none yet, or no access: write says which
            return None
        etag = head.get("Metadata", {}).get("keysvc-etag")
        return Stored(etag, head.get("CacheControl")) if etag else None

    async def write(self, path: str, document: Document) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.prefix + path
        try:
            async with self._session.create_client("s3", **self._client_args) as client:
                await client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=document.body,
                    ContentType=document.content_type,
                    CacheControl=document.cache_control,
                    Metadata={"keysvc-etag": document.etag.strip('"')},
                )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise PublishError(f"cannot write s3://{self.bucket}/{key}: {code}") from None
        except BotoCoreError as exc:
            name = type(exc).__name__
            raise PublishError(f"cannot write s3://{self.bucket}/{key}: {name}") from None

    async def write_manifest(self, documents: dict[str, Document]) -> None:
        """Nothing to do: the metadata is on the objects themselves."""


class GCSTarget:
    """A Cloud Storage bucket (and object prefix), written with google-cloud-storage.
    Credentials are Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud,
    the GKE or GCE service account); STORAGE_EMULATOR_HOST points the library at an emulator.
    An upload replaces an object atomically. The library is synchronous: it runs in a thread."""

    def __init__(self, bucket: str, prefix: str) -> None:
        try:
            from google.cloud import storage  # only publishing to GCS needs it
        except ImportError:
            raise PublishError(
                "publishing to GCS needs google-cloud-storage: pip install 'keysvc[gcs]'"
            ) from None
        self.bucket = bucket
        self.prefix = prefix
        self._storage = storage
        self._client: Any = None

    def describe(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"

    def _bucket(self) -> Any:
        if self._client is None:
            from google.auth.exceptions import DefaultCredentialsError

            try:
                self._client = self._storage.Client()
            except DefaultCredentialsError:
                raise PublishError(
                    "no Google credentials for GCS: set GOOGLE_APPLICATION_CREDENTIALS or run "
                    "where Application Default Credentials exist"
                ) from None
        return self._client.bucket(self.bucket)

    def _write(self, key: str, document: Document) -> None:
        from google.api_core.exceptions import GoogleAPICallError
        from google.auth.exceptions import GoogleAuthError

        blob = self._bucket().blob(key)
        blob.cache_control = document.cache_control
        blob.metadata = {"keysvc-etag": document.etag.strip('"')}
        try:
            blob.upload_from_string(
                document.body, content_type=document.content_type, timeout=GCS_TIMEOUT
            )
        except GoogleAPICallError as exc:
            reason = getattr(exc.code, "name", None) or type(exc).__name__
            raise PublishError(f"cannot write gs://{self.bucket}/{key}: {reason}") from None
        except (GoogleAuthError, OSError) as exc:
            raise PublishError(f"cannot write gs://{self.bucket}/{key}: {type(exc).__name__}") from None

    def _stored(self, key: str) -> Stored | None:
        from google.api_core.exceptions import GoogleAPICallError
        from google.auth.exceptions import GoogleAuthError

        try:
            blob = self._bucket().get_blob(key, timeout=GCS_TIMEOUT)
        except (GoogleAPICallError, GoogleAuthError, PublishError, OSError):
            return None  # none yet, or no access: write says which
        etag = (blob.metadata or {}).get("keysvc-etag") if blob is not None else None
        return Stored(etag, blob.cache_control) if etag else None

    async def stored(self, path: str) -> Stored | None:
        return await asyncio.to_thread(self._stored, self.prefix + path)

    async def write(self, path: str, document: Document) -> None:
        await asyncio.to_thread(self._write, self.prefix + path, document)

    async def write_manifest(self, documents: dict[str, Document]) -> None:
        """Nothing to do: the metadata is on the objects themselves."""


GCS_TIMEOUT = 30.0
"""Seconds for one upload: a hung connection must not stall `--watch` forever."""
BUCKET_SCHEMES = {"s3": "s3://BUCKET[/PREFIX]", "gs": "gs://BUCKET[/PREFIX]"}


def parse_target(
    spec: str, *, endpoint_url: str | None = None, region: str | None = None
) -> Target:
    """`s3://bucket[/prefix]`, `gs://bucket[/prefix]` or a directory path."""
    parts = urlsplit(spec)
    if parts.scheme in BUCKET_SCHEMES and "://" in spec:
        if not parts.netloc:
            raise PublishError(f"--to {spec}: name the bucket ({BUCKET_SCHEMES[parts.scheme]})")
        prefix = parts.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if parts.scheme == "gs":
            return GCSTarget(parts.netloc, prefix)
        return S3Target(parts.netloc, prefix, endpoint_url, region)
    if "://" in spec:
        raise PublishError(
            f"--to {spec}: give a directory, s3://BUCKET[/PREFIX] or gs://BUCKET[/PREFIX]"
        )
    root = Path(spec)
    if root.exists() and not root.is_dir():
        raise PublishError(f"--to {spec} is not a directory")
    return DirectoryTarget(root)
