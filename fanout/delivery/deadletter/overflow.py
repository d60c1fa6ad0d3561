"""Where an SQS dead-letter queue keeps entries too large for a message: files or S3 objects.

An overflow is content-addressed: its name is the SHA-256 of the entry's JSON
(``<sink>-<sha256>.json`` in a directory, ``<prefix><sink>/<sha256>.json`` in a bucket). A
write retried during an SQS outage (the same entry, byte for byte) therefore finds its
overflow already stored and writes nothing; ``remove`` deletes one the queue will never point
at. The pointer a message carries names the overflow (``path``, or ``bucket``/``key`` and
``uri`` ``s3://bucket/key``), its size and its checksum.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio.to_thread

from fanout.aws.sqs import TRANSPORT_ERRORS
from fanout.delivery.deadletter.base import safe_name
from fanout.errors import DeadLetterError

if TYPE_CHECKING:
    from fanout.aws.clients import AwsClients
    from fanout.config.sinks import OverflowConfig
    from fanout.delivery.deadletter.s3 import S3Bucket

Pointer = dict[str, Any]

OVERFLOW_MODE = 0o600  # an overflow holds a whole record: only the worker's user reads it


class Overflow(Protocol):
    """Stores and reads back whole entries too large for a message."""

    async def put(self, sink: str, data: bytes) -> Pointer:
        """Store ``data`` (once: an identical one stored before is kept); its pointer.

        Raises:
            DeadLetterError: it could not be stored.
        """
        ...

    async def remove(self, pointer: Pointer) -> None:
        """Delete what ``pointer`` names (nothing if it is gone already); never raises."""
        ...


def _describe(data: bytes) -> tuple[str, Pointer]:
    digest = hashlib.sha256(data).hexdigest()
    return digest, {"bytes": len(data), "sha256": digest}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _store_file(path: Path, data: bytes) -> None:
    if path.exists():  # content-addressed: the same bytes are there already
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OVERFLOW_MODE)
    try:
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
            fh.flush()
        os.fchmod(fd, OVERFLOW_MODE)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.rename(path)
    _fsync_dir(path.parent)


class FileOverflow:
    """Overflow files in a directory of the worker's disk (mode 0600)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path_of(self, sink: str, digest: str) -> Path:
        return (self.directory / f"{safe_name(sink)}-{digest}.json").resolve()

    async def put(self, sink: str, data: bytes) -> Pointer:
        digest, pointer = _describe(data)
        path = self.path_of(sink, digest)
        try:
            await anyio.to_thread.run_sync(_store_file, path, data)
        except OSError as exc:
            raise DeadLetterError(f"dead-letter overflow file {path}: {exc}") from exc
        return {"path": str(path), **pointer}

    async def remove(self, pointer: Pointer) -> None:
        path = pointer.get("path")
        if isinstance(path, str):
            try:
                await anyio.to_thread.run_sync(Path(path).unlink, True)
            except OSError:
                pass

    def stored(self) -> Iterator[Path]:
        """The overflow files there are (for tests and operators)."""
        if self.directory.exists():
            yield from sorted(self.directory.glob("*.json"))


class S3Overflow:
    """Overflow objects in an S3 bucket; a put is remembered, so a retry never puts again."""

    def __init__(self, store: S3Bucket, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self._stored: set[str] = set()

    @classmethod
    def from_config(
        cls, config: OverflowConfig, clients: AwsClients, region: str | None
    ) -> S3Overflow:
        from fanout.delivery.deadletter.s3 import S3Bucket

        assert config.bucket is not None
        store = S3Bucket(
            config.bucket,
            clients=clients,
            region=config.region or region,
            endpoint_url=config.endpoint_url,
        )
        return cls(store, config.prefix)

    async def put(self, sink: str, data: bytes) -> Pointer:
        digest, pointer = _describe(data)
        key = f"{self.prefix}{safe_name(sink)}/{digest}.json"
        bucket = self.store.bucket
        if key not in self._stored:
            try:
                await self.store.put(key, data)
            except TRANSPORT_ERRORS as exc:
                raise DeadLetterError(f"dead-letter overflow s3://{bucket}/{key}: {exc}") from exc
            self._stored.add(key)
        return {"uri": f"s3://{bucket}/{key}", "bucket": bucket, "key": key, **pointer}

    async def remove(self, pointer: Pointer) -> None:
        key = pointer.get("key")
        if not isinstance(key, str) or pointer.get("bucket") != self.store.bucket:
            return
        self._stored.discard(key)
        try:
            await self.store.delete([key])
        except TRANSPORT_ERRORS:
            pass

    async def load(self, pointer: Pointer) -> bytes:
        """The bytes ``pointer`` names.

        Raises:
            DeadLetterError: they cannot be read.
        """
        key = str(pointer.get("key"))
        try:
            return await self.store.get(key)
        except TRANSPORT_ERRORS as exc:
            raise DeadLetterError(
                f"overflow object s3://{pointer.get('bucket')}/{key}: {exc}"
            ) from exc
