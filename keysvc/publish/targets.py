"""Where `keysvc publish` writes the public documents: a directory, an S3 or a GCS bucket.

A target stores one document at a path relative to its root (`.well-known/jwks`), replacing the
previous one atomically, so a web server or a bucket never serves a half-written JWKS. The
document's cache metadata travels with it: as object metadata in a bucket, and in a manifest
(`.keysvc-publish.json`) next to a directory's documents for the web server configuration.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from keysvc.atomic_write import write_atomically
from keysvc.documents import Document

MANIFEST = ".keysvc-publish.json"


class PublishError(Exception):
    """Writing failed; the message is safe to print (no credentials, no response bodies)."""


class Target(Protocol):
    def describe(self) -> str: ...

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
    root: Path

    def describe(self) -> str:
        return str(self.root)

    def _write(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            write_atomically(path, data, 0o644)
        except OSError as exc:
            raise PublishError(f"cannot write {path}: {exc.strerror}") from None

    async def write(self, path: str, document: Document) -> None:
        await asyncio.to_thread(self._write, path, document.body)

    async def write_manifest(self, documents: dict[str, Document]) -> None:
        await asyncio.to_thread(self._write, MANIFEST, manifest(documents))


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
