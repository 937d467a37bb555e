"""Where archived audit rows go: S3-compatible object storage, or a directory.

An archive object is one chain's oldest rows as gzip-compressed JSON lines, in the export's
format (control/audit/verification.py): a head line naming the last row's seq and hash and
where the archive starts, then each row's hashed values. Names sort in chain order:
`<chain>/<first seq>-<last seq>.jsonl.gz`, seqs zero-padded.

On S3, an object is written with Object Lock (compliance mode, until the end of the
retention it was archived under) when the bucket has Object Lock enabled; a bucket without
it takes the object plainly, and the docs say to enable it. A directory (the embedded
default, under the data directory) gets read-only files.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

import structlog

from core.settings import Settings

log = structlog.get_logger(__name__)


def object_name(chain: str, first_seq: int, last_seq: int) -> str:
    return f"{chain}/{first_seq:015d}-{last_seq:015d}.jsonl.gz"


class ArchiveStore(Protocol):
    async def put(self, name: str, data: bytes, *, retain_until: dt.datetime) -> None: ...

    async def names(self, chain: str) -> list[str]:
        """The chain's archive objects, in chain order."""
        ...

    async def get(self, name: str) -> bytes: ...


class DirectoryArchive:
    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"<DirectoryArchive {self.root}>"

    async def put(self, name: str, data: bytes, *, retain_until: dt.datetime) -> None:
        await asyncio.to_thread(self._put, name, data)

    def _put(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.exists():  # written by an earlier run that stopped before its delete
            if path.read_bytes() == data:
                return
            path.chmod(0o600)
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        os.chmod(partial, 0o400)
        partial.replace(path)

    async def names(self, chain: str) -> list[str]:
        folder = self.root / chain
        found = await asyncio.to_thread(
            lambda: sorted(p.name for p in folder.glob("*.jsonl.gz")) if folder.is_dir() else []
        )
        return [f"{chain}/{name}" for name in found]

    async def get(self, name: str) -> bytes:
        return await asyncio.to_thread((self.root / name).read_bytes)


class S3Archive:
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self._locking: bool | None = None

    def __repr__(self) -> str:
        return f"<S3Archive s3://{self.bucket}/{self.prefix}>"

    def _client(self) -> Any:
        import aioboto3  # the `aws` extra

        return aioboto3.Session().client("s3", endpoint_url=self.endpoint_url)

    async def _object_lock(self, s3: Any) -> bool:
        if self._locking is None:
            try:
                found = await s3.get_object_lock_configuration(Bucket=self.bucket)
                state = found.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
                self._locking = state == "Enabled"
            except Exception as exc:  # no configuration: a bucket without Object Lock
                log.warning(
                    "audit_archive_without_object_lock",
                    bucket=self.bucket,
                    error=type(exc).__name__,
                )
                self._locking = False
        return self._locking

    async def put(self, name: str, data: bytes, *, retain_until: dt.datetime) -> None:
        async with self._client() as s3:
            extra: dict[str, Any] = {}
            if await self._object_lock(s3):
                extra = {
                    "ObjectLockMode": "COMPLIANCE",
                    "ObjectLockRetainUntilDate": retain_until,
                    # S3 asks for an integrity header with Object Lock; not a security use.
                    "ContentMD5": base64.b64encode(
                        hashlib.md5(data, usedforsecurity=False).digest()
                    ).decode(),
                }
            await s3.put_object(
                Bucket=self.bucket,
                Key=self.prefix + name,
                Body=data,
                ContentType="application/x-ndjson",
                ContentEncoding="gzip",
                **extra,
            )

    async def names(self, chain: str) -> list[str]:
        found: list[str] = []
        async with self._client() as s3:
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}{chain}/"
            ):
                found += [
                    item["Key"].removeprefix(self.prefix) for item in page.get("Contents", [])
                ]
        return sorted(n for n in found if n.endswith(".jsonl.gz"))

    async def get(self, name: str) -> bytes:
        async with self._client() as s3:
            response = await s3.get_object(Bucket=self.bucket, Key=self.prefix + name)
            async with response["Body"] as body:
                return bytes(await body.read())


def archive_for(settings: Settings) -> ArchiveStore:
    url = settings.audit_archive_url
    if url is None:
        return DirectoryArchive(settings.data_dir / "audit-archive")
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return S3Archive(bucket, prefix, settings.audit_archive_endpoint_url)
    return DirectoryArchive(Path(url))
