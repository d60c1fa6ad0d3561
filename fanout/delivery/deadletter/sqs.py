"""The ``sqs`` dead-letter destination: one SQS message per entry, oversized ones by pointer.

Entries are sent with SendMessageBatch: at most 10 a call and at most the queue's maximum
message size (its ``MaximumMessageSize`` attribute; 1 MiB, the SQS limit, by default) for a
message and for the sum of a batch. An entry whose JSON is larger than that, or that SQS
refuses as a sender fault (e.g. characters SQS does not accept), is written whole to a file
in ``overflow_dir`` (fsynced) and a small pointer message names that file; nothing is ever
truncated. Entries a batch call reports as failed for a server fault are retried alone, a few
times with backoff; what still fails raises ``DeadLetterError`` (``PartialDeadLetterError``
when others were stored), so the records stay unsettled.

Message bodies are the entry's JSON (``fanout.dlq.entry``). A pointer message is the entry
without its ``record`` plus ``{"fanout_overflow": {"path", "bytes", "sha256"}}``;
``load_body`` turns either back into the whole entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.to_thread
import orjson
from botocore.exceptions import BotoCoreError, ClientError

from fanout.delivery.deadletter import Entry, PartialDeadLetterError, entry_key
from fanout.errors import DeadLetterError
from fanout.retry import RetryPolicy

log = logging.getLogger("fanout.dlq.sqs")

SQS_MAX_MESSAGE_BYTES = 1_048_576
"""The SQS limit for one message and for the sum of one SendMessageBatch (1 MiB)."""
SQS_MAX_BATCH_ENTRIES = 10
OVERFLOW_KEY = "fanout_overflow"
_POINTER_TEXT_LIMIT = 1024  # long error messages are cut in the pointer only (whole in the file)
_TRANSPORT_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError, OSError, TimeoutError)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(text: object) -> str:
    return _UNSAFE.sub("_", str(text))[:80] or "_"


def load_body(body: str | bytes) -> tuple[Entry, Path | None]:
    """The whole entry a message holds, reading the overflow file of a pointer message.

    Returns:
        ``(entry, overflow_path)``; the path is None for an entry sent inline.

    Raises:
        DeadLetterError: the body is not an entry, or its overflow file is missing or does not
            match the checksum in the pointer.
    """
    try:
        item = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DeadLetterError(f"message body is not JSON: {exc}") from exc
    if not isinstance(item, dict):
        raise DeadLetterError("message body is not a dead-letter entry")
    pointer = item.get(OVERFLOW_KEY)
    if pointer is None:
        return item, None
    path = Path(pointer["path"])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DeadLetterError(f"overflow file {path}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != pointer.get("sha256"):
        raise DeadLetterError(f"overflow file {path} does not match its checksum")
    whole = orjson.loads(data)
    if not isinstance(whole, dict):
        raise DeadLetterError(f"overflow file {path} does not hold an entry")
    return whole, path


class SqsDeadLetter:
    """Dead-letter entries as messages of one SQS queue (standard or FIFO).

    Args:
        queue_url: the queue.
        region: its region (default: from the environment).
        endpoint_url: another endpoint, e.g. a local emulator.
        overflow_dir: where entries too large for a message are written.
        max_message_bytes: a lower message size limit than the queue's.
        attempts: SendMessageBatch calls per entry before ``write`` gives up.
        backoff: the delay between those calls.
    """

    def __init__(
        self,
        queue_url: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        overflow_dir: str | Path,
        max_message_bytes: int | None = None,
        attempts: int = 4,
        backoff: RetryPolicy | None = None,
    ) -> None:
        self.queue_url = queue_url
        self.region = region
        self.endpoint_url = endpoint_url
        self.overflow_dir = Path(overflow_dir)
        self.name = f"sqs:{queue_url}"
        self.fifo = queue_url.endswith(".fifo")
        self.attempts = max(1, attempts)
        self.backoff = backoff or RetryPolicy(0.2, 5.0)
        self._configured_limit = max_message_bytes
        self._limit = max_message_bytes or SQS_MAX_MESSAGE_BYTES
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._open_lock = anyio.Lock()

    @property
    def limit(self) -> int:
        """The largest message body sent, in bytes."""
        return self._limit

    async def _sqs(self) -> Any:
        async with self._open_lock:
            if self._client is not None:
                return self._client
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session

            stack = AsyncExitStack()
            try:
                client = await stack.enter_async_context(
                    get_session().create_client(
                        "sqs",
                        region_name=self.region,
                        endpoint_url=self.endpoint_url,
                        config=AioConfig(
                            retries={"mode": "standard", "max_attempts": 3},
                            connect_timeout=5,
                            read_timeout=30,
                        ),
                    )
                )
                answer = await client.get_queue_attributes(
                    QueueUrl=self.queue_url, AttributeNames=["MaximumMessageSize"]
                )
            except _TRANSPORT_ERRORS as exc:
                await stack.aclose()
                raise DeadLetterError(f"dead-letter queue {self.queue_url}: {exc}") from exc
            queue_limit = int(answer.get("Attributes", {}).get("MaximumMessageSize", 0) or 0)
            limits = [SQS_MAX_MESSAGE_BYTES, queue_limit or SQS_MAX_MESSAGE_BYTES]
            if self._configured_limit:
                limits.append(self._configured_limit)
            self._limit = min(limits)
            self._stack, self._client = stack, client
            return client

    async def aclose(self) -> None:
        """Close the SQS client."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    # -- writing ------------------------------------------------------------------------------

    async def write(self, entries: list[Entry]) -> None:
        """Send every entry (oversized ones through the overflow directory).

        Raises:
            DeadLetterError: none could be stored.
            PartialDeadLetterError: some were stored; ``remaining`` could not be.
        """
        if not entries:
            return
        client = await self._sqs()
        items: list[tuple[Entry, bytes]] = []
        for item in entries:
            body = orjson.dumps(item)
            if len(body) > self._limit:
                body = await self._overflow(item, body, "larger than the message size limit")
            items.append((item, body))
        unsent: list[tuple[Entry, bytes]] = []
        last_error = ""
        for batch in self._batches(items):
            failed, error = await self._send(client, batch)
            unsent.extend(failed)
            last_error = error or last_error
        if not unsent:
            return
        message = (
            f"dead-letter queue {self.queue_url}: {len(unsent)} of {len(entries)} entries "
            f"not stored: {last_error}"
        )
        if len(unsent) == len(entries):
            raise DeadLetterError(message)
        raise PartialDeadLetterError(message, [item for item, _ in unsent])

    def _batches(self, items: list[tuple[Entry, bytes]]) -> list[list[tuple[Entry, bytes]]]:
        batches: list[list[tuple[Entry, bytes]]] = []
        current: list[tuple[Entry, bytes]] = []
        size = 0
        for item in items:
            length = len(item[1])
            if current and (len(current) == SQS_MAX_BATCH_ENTRIES or size + length > self._limit):
                batches.append(current)
                current, size = [], 0
            current.append(item)
            size += length
        if current:
            batches.append(current)
        return batches

    def _message(self, index: int, item: Entry, body: bytes) -> dict[str, Any]:
        message: dict[str, Any] = {"Id": str(index), "MessageBody": body.decode()}
        if self.fifo:
            key = entry_key(item)
            message["MessageGroupId"] = _safe(f"{item.get('sink')}-{item.get('shard_id')}")
            message["MessageDeduplicationId"] = hashlib.sha256(
                f"{key}|{item.get('dead_lettered_at')}".encode()
            ).hexdigest()
        return message

    async def _send(
        self, client: Any, batch: list[tuple[Entry, bytes]]
    ) -> tuple[list[tuple[Entry, bytes]], str]:
        """Send one batch; retry what fails. Returns what could not be stored, and why."""
        pending = batch
        error = ""
        overflowed: set[int] = set()
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                await self.backoff.wait(attempt - 1)
            try:
                answer = await client.send_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[self._message(i, e, b) for i, (e, b) in enumerate(pending)],
                )
            except _TRANSPORT_ERRORS as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "dead_letter_queue_call_failed",
                    extra={"queue": self.queue_url, "entries": len(pending), "error": error},
                )
                continue
            failed = answer.get("Failed") or []
            if not failed:
                return [], ""
            retry: list[tuple[Entry, bytes]] = []
            for failure in failed:
                item, body = pending[int(failure["Id"])]
                error = f"{failure.get('Code')}: {failure.get('Message', '')}"
                if failure.get("SenderFault") and id(item) not in overflowed:
                    # The message itself was refused (size, characters): keep it whole in
                    # a file and send a pointer instead.
                    body = await self._overflow(item, orjson.dumps(item), error)
                    overflowed.add(id(item))
                retry.append((item, body))
            log.warning(
                "dead_letter_queue_entries_failed",
                extra={
                    "queue": self.queue_url,
                    "failed": len(failed),
                    "entries": len(pending),
                    "error": error,
                    "attempt": attempt,
                },
            )
            pending = retry
        return pending, error

    # -- overflow -----------------------------------------------------------------------------

    def _store(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def _overflow(self, item: Entry, data: bytes, why: str) -> bytes:
        """Write the whole entry to a file; return the pointer message's body."""
        name = (
            f"{_safe(item.get('sink'))}-{_safe(item.get('shard_id'))}-"
            f"{_safe(item.get('sequence_number'))}-{uuid.uuid4().hex[:12]}.json"
        )
        path = (self.overflow_dir / name).resolve()
        try:
            await anyio.to_thread.run_sync(self._store, path, data)
        except OSError as exc:
            raise DeadLetterError(f"dead-letter overflow file {path}: {exc}") from exc
        pointer = {k: v for k, v in item.items() if k != "record"}
        error = pointer.get("error")
        if isinstance(error, dict) and len(str(error.get("message", ""))) > _POINTER_TEXT_LIMIT:
            text = str(error["message"])[:_POINTER_TEXT_LIMIT]
            pointer["error"] = {**error, "message": text + " ... (whole in the overflow file)"}
        pointer[OVERFLOW_KEY] = {
            "path": str(path),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "reason": why,
        }
        body = orjson.dumps(pointer)
        if len(body) > self._limit:  # keep only what identifies the record
            keys = ("sink", "stream_arn", "shard_id", "sequence_number", OVERFLOW_KEY)
            body = orjson.dumps({k: pointer.get(k) for k in keys})
        log.warning(
            "dead_letter_entry_overflowed",
            extra={
                "queue": self.queue_url,
                "sink": item.get("sink"),
                "shard": item.get("shard_id"),
                "seq": item.get("sequence_number"),
                "bytes": len(data),
                "path": str(path),
                "reason": why,
            },
        )
        return body
