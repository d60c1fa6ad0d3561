"""SQS for every part of fanout that uses a queue: batched sends within the SQS limits, FIFO ids,
per-message failures, and receiving, deleting and releasing messages.

``SendMessageBatch`` takes at most 10 entries, and at most the queue's maximum message size
(its ``MaximumMessageSize`` attribute; 1 MiB, the SQS limit, at most) for one message and
for the sum of one call; a message's size is its body plus its attributes (names, types and
values). ``SqsQueue.send`` splits messages into such calls and reports per message what did
not go through: a *sender fault* means the message itself was refused (sending it again
unchanged fails again, so it is reported at once); other failures, and calls that fail as a
whole (throttling, 5xx, the network), are retried alone with backoff a few times, then
reported.

Errors of calls that are not retried here (the size lookup, receive, delete, release) are
raised as they come (``TRANSPORT_ERRORS``); callers map them to their own errors. One
exception: when ``sqs:GetQueueAttributes`` is denied, the size lookup assumes 256 KiB (or a
lower ``max_message_bytes``) and logs ``sqs_queue_size_unknown``, so a policy that allows only
``sqs:SendMessage`` still sends. 256 KiB is the limit of every queue created before SQS took
1 MiB messages (August 2025) and of any queue set back to it; guessing higher would be worse
than wasteful: a batch larger than the queue's limit is refused as a whole
(``BatchRequestTooLong``, not a per-message sender fault), again on every retry.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import anyio
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from fanout.retry import RetryPolicy

log = logging.getLogger("fanout.aws.sqs")

SQS_MAX_MESSAGE_BYTES = 1_048_576
"""The SQS limit for one message and for the sum of one SendMessageBatch (1 MiB)."""
SQS_ASSUMED_MESSAGE_BYTES = 262_144
"""The limit assumed when a queue's ``MaximumMessageSize`` cannot be read (256 KiB)."""
SQS_MAX_BATCH_ENTRIES = 10
"""Entries of one SendMessageBatch, DeleteMessageBatch or ChangeMessageVisibilityBatch."""
TRANSPORT_ERRORS = (
    ClientError,
    BotoCoreError,
    ResponseParserError,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)
"""What a call to SQS raises when it fails (an answer botocore cannot parse, such as a
proxy's HTML error page, too)."""


_QUEUE_HOST = re.compile(
    r"^(?:sqs[.-](?P<region>[a-z0-9-]+)|(?P<legacy>[a-z]{2}(?:-[a-z]+)+-\d+)\.queue)"
    r"\.amazonaws\.com(?:\.cn)?$"
)


def queue_region(queue_url: str) -> str | None:
    """The region an AWS queue URL names (``https://sqs.eu-west-1.amazonaws.com/...``, or the
    legacy ``https://eu-west-1.queue.amazonaws.com/...``); None for other hosts."""
    host = urlsplit(queue_url).hostname or ""
    match = _QUEUE_HOST.match(host)
    if match is None:
        return None
    return match.group("region") or match.group("legacy")


class SqsApi(Protocol):
    """The SQS calls used here (an aiobotocore SQS client has them)."""

    async def get_queue_attributes(self, *, QueueUrl: str, AttributeNames: list[str]) -> Any: ...

    async def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any: ...

    async def receive_message(
        self,
        *,
        QueueUrl: str,
        MaxNumberOfMessages: int,
        VisibilityTimeout: int,
        WaitTimeSeconds: int,
    ) -> Any: ...

    async def delete_message_batch(
        self, *, QueueUrl: str, Entries: list[dict[str, Any]]
    ) -> Any: ...

    async def change_message_visibility_batch(
        self, *, QueueUrl: str, Entries: list[dict[str, Any]]
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class Message:
    """One message to send.

    Attributes:
        body: the message body (UTF-8 when given as bytes).
        group_id: ``MessageGroupId`` (required by FIFO queues).
        deduplication_id: ``MessageDeduplicationId`` (FIFO queues).
        attributes: ``MessageAttributes`` as SQS takes them, e.g.
            ``{"sink": {"DataType": "String", "StringValue": "audit"}}``.
    """

    body: str | bytes
    group_id: str | None = None
    deduplication_id: str | None = None
    attributes: Mapping[str, Mapping[str, Any]] | None = None

    @property
    def size(self) -> int:
        """Bytes the message counts against the size limit: body plus attributes."""
        body = self.body
        size = len(body) if isinstance(body, bytes) else len(body.encode())
        for name, value in (self.attributes or {}).items():
            size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
            data = value.get("StringValue", value.get("BinaryValue", b""))
            size += len(data) if isinstance(data, bytes) else len(str(data).encode())
        return size


@dataclass(frozen=True, slots=True)
class SendFailure:
    """A message ``send`` could not store.

    Attributes:
        index: the message's position in the list given to ``send``.
        code: SQS's error code (or the exception's class for a call that failed).
        message: the error text.
        sender_fault: the message itself was refused; sending it unchanged fails again.
        ambiguous: the call failed as a whole (timeout, network, 5xx), so SQS may have
            stored the message all the same.
    """

    index: int
    code: str
    message: str
    sender_fault: bool
    ambiguous: bool = False

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class CallTrouble:
    """One SendMessageBatch call that did not store everything (for logs).

    Attributes:
        attempt: 1 for the first call of these messages, then 2, ...
        entries: messages in the call.
        failed: messages it did not store.
        error: the last error, ``"Code: message"``.
        raised: the call failed as a whole (nothing stored).
    """

    attempt: int
    entries: int
    failed: int
    error: str
    raised: bool


def plan_batches(sizes: Sequence[int], limit: int) -> list[list[int]]:
    """Indices of ``sizes`` in order, split into SendMessageBatch calls: at most 10 entries
    and at most ``limit`` bytes each (a message larger than ``limit`` alone in its call)."""
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for index, size in enumerate(sizes):
        if current and (len(current) == SQS_MAX_BATCH_ENTRIES or total + size > limit):
            batches.append(current)
            current, total = [], 0
        current.append(index)
        total += size
    if current:
        batches.append(current)
    return batches


def _log_trouble(queue: str, trouble: CallTrouble) -> None:
    log.warning(
        "sqs_batch_failed",
        extra={
            "queue": queue,
            "entries": trouble.entries,
            "failed": trouble.failed,
            "error": trouble.error,
            "attempt": trouble.attempt,
        },
    )


class SqsQueue:
    """One SQS queue (standard or FIFO) through a shared client.

    Args:
        client: the SQS client (from ``AwsClients``).
        url: the queue URL; a name ending in ``.fifo`` is a FIFO queue.
        max_message_bytes: a lower message size limit than the queue's.
        attempts: SendMessageBatch calls per message before ``send`` reports it failed.
        retry: the delay between those calls.
        on_trouble: told about each call that did not store everything (default: a
            ``sqs_batch_failed`` warning).
    """

    def __init__(
        self,
        client: SqsApi,
        url: str,
        *,
        max_message_bytes: int | None = None,
        attempts: int = 4,
        retry: RetryPolicy | None = None,
        on_trouble: Callable[[CallTrouble], None] | None = None,
    ) -> None:
        self.client = client
        self.url = url
        self.fifo = url.endswith(".fifo")
        self.attempts = max(1, attempts)
        self.retry = retry or RetryPolicy(0.2, 5.0)
        self._on_trouble = on_trouble
        self._configured_limit = max_message_bytes
        self._limit = min(SQS_MAX_MESSAGE_BYTES, max_message_bytes or SQS_MAX_MESSAGE_BYTES)
        self._looked_up = False
        self._lock = anyio.Lock()

    @property
    def limit(self) -> int:
        """The largest message sent, in bytes (the queue's once ``message_limit`` ran)."""
        return self._limit

    async def message_limit(self) -> int:
        """The largest message this queue takes: its ``MaximumMessageSize`` (looked up once),
        the SQS limit, or ``max_message_bytes``, whichever is least.

        Raises:
            TRANSPORT_ERRORS: the queue's attributes cannot be read (no such queue, ...).
        """
        if self._looked_up:
            return self._limit
        async with self._lock:
            if not self._looked_up:
                try:
                    answer = await self.client.get_queue_attributes(
                        QueueUrl=self.url, AttributeNames=["MaximumMessageSize"]
                    )
                except ClientError as exc:
                    if not _access_denied(exc):
                        raise
                    assumed = min(SQS_ASSUMED_MESSAGE_BYTES, self._limit)
                    log.warning(
                        "sqs_queue_size_unknown",
                        extra={
                            "queue": self.url,
                            "error": str(exc.response.get("Error", {}).get("Code", "")),
                            "limit": assumed,
                            "note": "sqs:GetQueueAttributes is denied; assuming 256 KiB",
                        },
                    )
                    answer = {"Attributes": {"MaximumMessageSize": str(assumed)}}
                attributes = answer.get("Attributes", {})
                queue_limit = int(attributes.get("MaximumMessageSize", 0) or 0)
                limits = [SQS_MAX_MESSAGE_BYTES, queue_limit or SQS_MAX_MESSAGE_BYTES]
                if self._configured_limit:
                    limits.append(self._configured_limit)
                self._limit = min(limits)
                self._looked_up = True
        return self._limit

    # -- sending --------------------------------------------------------------------------------

    async def send(self, messages: Sequence[Message]) -> list[SendFailure]:
        """Send ``messages``; return those that were not stored, in order (empty: all were).

        A message larger than the limit is not sent (``MessageTooLong``, a sender fault).

        Raises:
            ValueError: a message for a FIFO queue has no ``group_id``.
            TRANSPORT_ERRORS: the size limit cannot be looked up.
        """
        if self.fifo and any(m.group_id is None for m in messages):
            raise ValueError(f"FIFO queue {self.url}: every message needs a group_id")
        limit = await self.message_limit()
        failures: list[SendFailure] = []
        sendable: list[int] = []
        sizes: list[int] = []
        for index, message in enumerate(messages):
            size = message.size
            if size > limit:
                text = f"{size} bytes; the limit is {limit}"
                failures.append(SendFailure(index, "MessageTooLong", text, True))
            else:
                sendable.append(index)
                sizes.append(size)
        for batch in plan_batches(sizes, limit):
            failures.extend(await self._send_batch(messages, [sendable[j] for j in batch]))
        failures.sort(key=lambda f: f.index)
        return failures

    async def _send_batch(
        self, messages: Sequence[Message], indices: list[int]
    ) -> list[SendFailure]:
        """One SendMessageBatch of ``indices``; what fails for a server fault is sent again."""
        pending = indices
        failed: dict[int, SendFailure] = {}
        uncertain: set[int] = set()  # a call that carried them failed as a whole
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                await self.retry.wait(attempt - 1)
            for index in pending:
                failed.pop(index, None)
            try:
                answer = await self.client.send_message_batch(
                    QueueUrl=self.url,
                    Entries=[_entry(n, messages[i]) for n, i in enumerate(pending)],
                )
            except TRANSPORT_ERRORS as exc:
                code, text = type(exc).__name__, str(exc)
                for index in pending:
                    failed[index] = SendFailure(index, code, text, False)
                uncertain.update(pending)
                self._trouble(
                    CallTrouble(attempt, len(pending), len(pending), f"{code}: {text}", True)
                )
                continue
            refused = answer.get("Failed") or []
            if not refused:
                break
            retry: list[int] = []
            error = ""
            for item in refused:
                index = pending[int(item["Id"])]
                failure = SendFailure(
                    index,
                    str(item.get("Code", "")),
                    str(item.get("Message", "")),
                    bool(item.get("SenderFault")),
                )
                failed[index] = failure
                error = str(failure)
                if not failure.sender_fault:
                    retry.append(index)
            self._trouble(CallTrouble(attempt, len(pending), len(refused), error, False))
            pending = retry
            if not pending:
                break
        return [
            dataclasses.replace(failed[i], ambiguous=True) if i in uncertain else failed[i]
            for i in sorted(failed)
        ]

    def _trouble(self, trouble: CallTrouble) -> None:
        if self._on_trouble is not None:
            self._on_trouble(trouble)
        else:
            _log_trouble(self.url, trouble)

    # -- reading --------------------------------------------------------------------------------

    async def receive(
        self, *, max_messages: int = 10, visibility_s: int = 30, wait_s: int = 0
    ) -> list[dict[str, Any]]:
        """Up to ``max_messages`` messages (SQS's dicts: ``MessageId``, ``ReceiptHandle``,
        ``Body``, ...), hidden from other readers for ``visibility_s`` seconds (0: a peek)."""
        answer = await self.client.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max_messages,
            VisibilityTimeout=visibility_s,
            WaitTimeSeconds=wait_s,
        )
        messages: list[dict[str, Any]] = answer.get("Messages", [])
        return messages

    async def delete(self, receipt_handles: Sequence[str]) -> set[int]:
        """Delete received messages; returns the positions of those SQS did not delete."""
        failed: set[int] = set()
        for start in range(0, len(receipt_handles), SQS_MAX_BATCH_ENTRIES):
            part = receipt_handles[start : start + SQS_MAX_BATCH_ENTRIES]
            answer = await self.client.delete_message_batch(
                QueueUrl=self.url,
                Entries=[{"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(part)],
            )
            failed.update(start + int(f["Id"]) for f in answer.get("Failed") or [])
        return failed

    async def release(self, receipt_handles: Sequence[str]) -> None:
        """Make received messages visible again at once."""
        for start in range(0, len(receipt_handles), SQS_MAX_BATCH_ENTRIES):
            part = receipt_handles[start : start + SQS_MAX_BATCH_ENTRIES]
            await self.client.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": h, "VisibilityTimeout": 0}
                    for n, h in enumerate(part)
                ],
            )

    async def approximate_counts(self) -> tuple[int, int]:
        """About how many messages are visible, and how many are received and not deleted."""
        answer = await self.client.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = answer.get("Attributes", {})
        return (
            int(attributes.get("ApproximateNumberOfMessages", 0)),
            int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        )


def _access_denied(exc: ClientError) -> bool:
    """The caller may not make the call (``AccessDenied``, ``AccessDeniedException``, or the
    query protocol's ``AWS.SimpleQueueService.AccessDenied``...)."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return "AccessDenied" in code


def _entry(position: int, message: Message) -> dict[str, Any]:
    body = message.body
    entry: dict[str, Any] = {
        "Id": str(position),
        "MessageBody": body.decode() if isinstance(body, bytes) else body,
    }
    if message.group_id is not None:
        entry["MessageGroupId"] = message.group_id
    if message.deduplication_id is not None:
        entry["MessageDeduplicationId"] = message.deduplication_id
    if message.attributes:
        entry["MessageAttributes"] = {k: dict(v) for k, v in message.attributes.items()}
    return entry
