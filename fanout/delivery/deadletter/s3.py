"""The ``s3`` dead-letter destination: one S3 object per entry, under keys sortable by time.

An object holds the entry exactly as a file line or an SQS message does (``base.entry``: the
whole record, the error, the attempts), so ``fanout dlq inspect|redrive`` read it the same
way. Its key is ``<prefix><sink>/<time>-<id>.json``: ``<time>`` is when the entry was given
up on (UTC, ``20240501T120000.123456Z``), so keys list oldest first; ``<id>`` is a hash of the
entry's key and that time, so a write retried after a failure puts the same object again
instead of a second one, and two entries never share a key.

Reading lists the sink's keys and gets each object; ``acknowledge`` deletes the objects of
redriven entries (as the SQS destination deletes its messages), ``release`` leaves them.
Clients come from the process's shared ``AwsClients``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import orjson
from botocore.exceptions import ClientError

from fanout.aws.sqs import TRANSPORT_ERRORS
from fanout.delivery.deadletter.base import (
    Entry,
    Letter,
    PartialDeadLetterError,
    entry_key,
    safe_name,
)
from fanout.errors import DeadLetterError

if TYPE_CHECKING:
    from fanout.aws.clients import AwsClients
    from fanout.config import Config

log = logging.getLogger("fanout.dlq.s3")

__all__ = ["S3Bucket", "S3DeadLetter", "object_key"]

_CONCURRENCY = 8  # objects put or got at once
_LIST_PAGE = 100  # keys a read batch holds
_DELETE_BATCH = 1000  # the DeleteObjects limit

T = TypeVar("T")


def object_key(prefix: str, item: Entry) -> str:
    """``<prefix><sink>/<time>-<id>.json`` for ``item`` (see the module docstring)."""
    at = item.get("dead_lettered_at")
    when = float(at) if isinstance(at, int | float) else time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when)) + f".{int(when % 1 * 1e6):06d}Z"
    digest = hashlib.sha256(f"{entry_key(item)}|{at}".encode()).hexdigest()[:20]
    return f"{prefix}{safe_name(item.get('sink'))}/{stamp}-{digest}.json"


def _code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


async def _each(
    items: Sequence[T], call: Callable[[T], Awaitable[object]]
) -> list[BaseException | None]:
    """Run ``call`` on every item, ``_CONCURRENCY`` at a time; what each raised (or None)."""
    outcome: list[BaseException | None] = [None] * len(items)
    limit = anyio.Semaphore(_CONCURRENCY)

    async def one(index: int) -> None:
        async with limit:
            try:
                await call(items[index])
            except TRANSPORT_ERRORS as exc:
                outcome[index] = exc

    async with anyio.create_task_group() as tg:
        for index in range(len(items)):
            tg.start_soon(one, index)
    return outcome


class S3Bucket:
    """One bucket through the process's shared S3 client (made on first use)."""

    def __init__(
        self,
        bucket: str,
        *,
        clients: AwsClients,
        region: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.clients = clients
        self.region = region
        self.endpoint_url = endpoint_url

    async def client(self) -> Any:
        """The S3 client (``TRANSPORT_ERRORS`` when it cannot be made)."""
        return await self.clients.client("s3", region=self.region, endpoint_url=self.endpoint_url)

    async def put(self, key: str, data: bytes) -> None:
        s3 = await self.client()
        await s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/json")

    async def get(self, key: str) -> bytes:
        s3 = await self.client()
        answer = await s3.get_object(Bucket=self.bucket, Key=key)
        async with answer["Body"] as body:
            data: bytes = await body.read()
        return data

    async def delete(self, keys: Sequence[str]) -> set[str]:
        """Delete ``keys``; returns those S3 did not delete."""
        s3 = await self.client()
        failed: set[str] = set()
        for start in range(0, len(keys), _DELETE_BATCH):
            part = keys[start : start + _DELETE_BATCH]
            answer = await s3.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in part], "Quiet": True},
            )
            failed.update(str(e.get("Key")) for e in answer.get("Errors") or [])
        return failed

    async def pages(self, prefix: str) -> AsyncIterator[list[str]]:
        """The keys under ``prefix``, in key order, a page at a time."""
        s3 = await self.client()
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": _LIST_PAGE}
            if token:
                args["ContinuationToken"] = token
            answer = await s3.list_objects_v2(**args)
            keys = [str(o["Key"]) for o in answer.get("Contents") or []]
            if keys:
                yield keys
            token = answer.get("NextContinuationToken")
            if not answer.get("IsTruncated") or not token:
                return


class S3DeadLetter:
    """Dead-letter entries as objects in one S3 bucket.

    Args:
        bucket: the bucket.
        prefix: the key prefix (``<prefix><sink>/...``).
        clients: the process's AWS clients.
        sink: the sink whose entries ``read`` lists (None: every sink under ``prefix``).
        region: the bucket's region (default: from the environment).
        endpoint_url: another endpoint, e.g. a local emulator.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        clients: AwsClients,
        sink: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self.store = S3Bucket(bucket, clients=clients, region=region, endpoint_url=endpoint_url)
        self.prefix = prefix
        self.sink = sink
        self.name = f"s3:{bucket}/{prefix}"

    @classmethod
    def for_sink(cls, config: Config, sink: str, clients: AwsClients) -> S3DeadLetter:
        """The destination of ``sink``'s ``dead_letter`` (type s3) in ``config``."""
        dl = config.sinks[sink].dead_letter
        if not dl.bucket:
            raise DeadLetterError(f"sink {sink!r} has no dead_letter.bucket")
        return cls(
            dl.bucket,
            prefix=dl.prefix,
            clients=clients,
            sink=sink,
            region=dl.region,
            endpoint_url=dl.endpoint_url,
        )

    @property
    def location(self) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.store.bucket}/{self._listed()}"

    def _listed(self) -> str:
        return self.prefix if self.sink is None else f"{self.prefix}{safe_name(self.sink)}/"

    async def aclose(self) -> None:
        """Nothing to release: the client belongs to ``clients``."""
        return None

    # -- writing ------------------------------------------------------------------------------

    async def write(self, entries: list[Entry]) -> None:
        """Put one object per entry.

        Raises:
            DeadLetterError: none could be stored.
            PartialDeadLetterError: some were stored; ``remaining`` could not be.
        """
        if not entries:
            return
        keyed = [(object_key(self.prefix, item), orjson.dumps(item)) for item in entries]

        async def put(pair: tuple[str, bytes]) -> None:
            await self.store.put(*pair)

        outcome = await _each(keyed, put)
        failed = [i for i, exc in enumerate(outcome) if exc is not None]
        if not failed:
            return
        last = outcome[failed[-1]]
        assert last is not None
        message = (
            f"dead-letter bucket {self.store.bucket}: {len(failed)} of {len(entries)} entries "
            f"not stored: {_code(last)}: {last}"
        )
        if len(failed) == len(entries):
            raise DeadLetterError(message) from last
        raise PartialDeadLetterError(message, [entries[i] for i in failed]) from last

    # -- reading ------------------------------------------------------------------------------

    async def keys(self) -> AsyncIterator[list[str]]:
        """The keys of the stored entries, oldest first, a page at a time.

        Raises:
            DeadLetterError: the bucket cannot be listed.
        """
        try:
            async for page in self.store.pages(self._listed()):
                yield [k for k in page if k.endswith(".json")]
        except TRANSPORT_ERRORS as exc:
            raise DeadLetterError(f"dead-letter bucket {self.store.bucket}: {exc}") from exc

    async def letters(self, keys: Sequence[str]) -> list[Letter]:
        """The letters of ``keys`` (one without entry for an object that cannot be read)."""
        found: dict[str, Letter] = {}

        async def get(key: str) -> None:
            try:
                item = orjson.loads(await self.store.get(key))
            except orjson.JSONDecodeError as exc:
                found[key] = Letter(None, f"object {key}: not JSON: {exc}", handle=key)
                return
            if not isinstance(item, dict):
                found[key] = Letter(None, f"object {key}: not an entry", handle=key)
                return
            found[key] = Letter(item, handle=key)

        for key, exc in zip(keys, await _each(keys, get), strict=True):
            if exc is not None:
                found[key] = Letter(None, f"object {key}: {_code(exc)}: {exc}", handle=key)
        return [found[k] for k in keys]

    async def read(self) -> AsyncIterator[list[Letter]]:
        """Every stored entry, oldest first, in batches of up to 100.

        Raises:
            DeadLetterError: the bucket cannot be listed.
        """
        async for page in self.keys():
            if page:
                yield await self.letters(page)

    async def acknowledge(self, letters: list[Letter], *, target: str = "") -> None:
        """Delete the objects of ``letters``."""
        keys = [str(letter.handle) for letter in letters if isinstance(letter.handle, str)]
        if not keys:
            return
        try:
            failed = await self.store.delete(keys)
        except TRANSPORT_ERRORS as exc:
            raise DeadLetterError(f"dead-letter bucket {self.store.bucket}: {exc}") from exc
        if failed:
            log.warning(
                "dead_letter_delete_failed",
                extra={"bucket": self.store.bucket, "failed": len(failed)},
            )

    async def release(self, letters: list[Letter]) -> None:
        """Nothing to do: objects not acknowledged stay where they are."""
        return None
