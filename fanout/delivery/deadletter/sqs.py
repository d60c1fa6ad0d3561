"""The ``sqs`` dead-letter destination: one SQS message per entry, oversized ones by pointer.

Entries are sent with ``fanout.aws.sqs.SqsQueue`` (SendMessageBatch: at most 10 a call and at
most the queue's maximum message size, its ``MaximumMessageSize`` attribute, 1 MiB at most,
for a message and for the sum of a batch). An entry whose JSON is larger than that, or that
SQS refuses as a sender fault (e.g. characters SQS does not accept), is stored whole as an
overflow (``fanout.delivery.deadletter.overflow``: a file in ``overflow_dir``, fsynced and
mode 0600, or with ``overflow: {type: s3}`` an S3 object every reader of the queue can
fetch) and a small pointer message names it; nothing is ever truncated. An overflow is
content-addressed, so a write retried during an outage stores it once; when a write finally
fails for an entry (SQS answered that it did not store its message) its overflow is removed.
Entries a batch call reports as failed for a server fault are retried alone,
a few times with backoff; what still fails raises ``DeadLetterError``
(``PartialDeadLetterError`` when others were stored), so the records stay unsettled.

Message bodies are the entry's JSON (``fanout.dlq.entry``). A pointer message is the entry
without its ``record`` plus ``{"fanout_overflow": {"path" | "uri", "bucket", "key", "bytes",
"sha256", "reason"}}``; ``SqsDeadLetter.load`` turns either back into the whole entry
(``load_body`` too, for overflow files).

Reading (``fanout dlq``): ``read`` receives messages (hidden from other readers meanwhile),
``acknowledge`` deletes a message and its overflow, ``release`` makes it visible again.
The SQS client is the process's shared one (``AwsClients``), for the worker and the CLI alike.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from fanout.aws.sqs import (
    SQS_MAX_MESSAGE_BYTES,
    TRANSPORT_ERRORS,
    CallTrouble,
    Message,
    SendFailure,
    SqsQueue,
    queue_region,
)
from fanout.delivery.deadletter.base import Entry, Letter, PartialDeadLetterError, entry_key
from fanout.delivery.deadletter.overflow import FileOverflow, Overflow, Pointer, S3Overflow
from fanout.errors import DeadLetterError
from fanout.retry import RetryPolicy

if TYPE_CHECKING:
    from fanout.aws.clients import AwsClients
    from fanout.config import Config

log = logging.getLogger("fanout.dlq.sqs")

__all__ = ["OVERFLOW_KEY", "SQS_MAX_MESSAGE_BYTES", "SqsDeadLetter", "load_body", "overflow_dir"]

OVERFLOW_KEY = "fanout_overflow"
_POINTER_TEXT_LIMIT = 1024  # long error messages are cut in the pointer only (whole in the file)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_VISIBILITY_S = 300  # a redrive has this long to deliver a received message before it reappears
_RECEIVE_WAIT_S = 1
_PEEK_ROUNDS = 5


def _safe(text: object) -> str:
    return _UNSAFE.sub("_", str(text))[:80] or "_"


def overflow_dir(config: Config) -> Path:
    """Where entries too large for a message are kept: ``dlq-overflow/`` next to the
    checkpoint database."""
    return Path(config.settings.checkpoints.path).parent / "dlq-overflow"


def _parse(body: str | bytes) -> tuple[Entry, Pointer | None]:
    """A message body's entry, and its overflow pointer (None for an entry sent inline)."""
    try:
        item = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DeadLetterError(f"message body is not JSON: {exc}") from exc
    if not isinstance(item, dict):
        raise DeadLetterError("message body is not a dead-letter entry")
    pointer = item.get(OVERFLOW_KEY)
    if pointer is not None and not isinstance(pointer, dict):
        raise DeadLetterError("message body has a malformed overflow pointer")
    return item, pointer


def _whole(data: bytes, pointer: Pointer, where: str) -> Entry:
    if hashlib.sha256(data).hexdigest() != pointer.get("sha256"):
        raise DeadLetterError(f"overflow {where} does not match its checksum")
    try:
        whole = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DeadLetterError(f"overflow {where} is not JSON: {exc}") from exc
    if not isinstance(whole, dict):
        raise DeadLetterError(f"overflow {where} does not hold an entry")
    return whole


def load_body(body: str | bytes) -> tuple[Entry, Path | None]:
    """The whole entry a message holds, reading the overflow file of a pointer message
    (``SqsDeadLetter.load`` reads S3 overflows too).

    Returns:
        ``(entry, overflow_path)``; the path is None for an entry sent inline.

    Raises:
        DeadLetterError: the body is not an entry, or its overflow file is missing or does not
            match the checksum in the pointer, or it is in S3.
    """
    item, pointer = _parse(body)
    if pointer is None:
        return item, None
    if "path" not in pointer:
        raise DeadLetterError(f"overflow {pointer.get('uri')} is not a file")
    path = Path(pointer["path"])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DeadLetterError(f"overflow file {path}: {exc}") from exc
    return _whole(data, pointer, f"file {path}"), path


class SqsDeadLetter:
    """Dead-letter entries as messages of one SQS queue (standard or FIFO).

    Args:
        queue_url: the queue (None: looked up by ``queue_name`` when first used).
        clients: the process's AWS clients (the SQS client comes from there).
        region: its region (default: from the environment).
        endpoint_url: another endpoint, e.g. a local emulator.
        overflow_dir: where entries too large for a message are written (as files).
        overflow: where they are written instead (e.g. ``S3Overflow``).
        max_message_bytes: a lower message size limit than the queue's.
        attempts: SendMessageBatch calls per entry before ``write`` gives up.
        backoff: the delay between those calls.
    """

    def __init__(
        self,
        queue_url: str | None,
        *,
        clients: AwsClients,
        queue_name: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        overflow_dir: str | Path,
        overflow: Overflow | None = None,
        max_message_bytes: int | None = None,
        attempts: int = 4,
        backoff: RetryPolicy | None = None,
    ) -> None:
        given = queue_url or queue_name
        if given is None:
            raise ValueError("a queue URL or a queue name is needed")
        # Until GetQueueUrl answered, messages name the queue by its name.
        self.queue_url: str = given
        self._queue_name = queue_name if queue_url is None else None
        self.clients = clients
        self.region = region
        self.endpoint_url = endpoint_url
        self.overflow_dir = Path(overflow_dir)
        self.overflow: Overflow = overflow or FileOverflow(self.overflow_dir)
        self.name = f"sqs:{given}"
        self.fifo = given.endswith(".fifo")
        self.attempts = max(1, attempts)
        self.backoff = backoff or RetryPolicy(0.2, 5.0)
        self._max_message_bytes = max_message_bytes
        self._queue: SqsQueue | None = None
        self._open_lock = anyio.Lock()

    @classmethod
    def for_sink(cls, config: Config, sink: str, clients: AwsClients) -> SqsDeadLetter:
        """The destination of ``sink``'s ``dead_letter`` (type sqs) in ``config``."""
        dl = config.sinks[sink].dead_letter
        if not dl.queue_url and not dl.queue_name:
            raise DeadLetterError(f"sink {sink!r} has no dead_letter.queue_url")
        region = dl.region or (queue_region(dl.queue_url) if dl.queue_url else None)
        overflow: Overflow | None = None
        if dl.overflow.type == "s3":
            overflow = S3Overflow.from_config(dl.overflow, clients, region)
        return cls(
            dl.queue_url,
            queue_name=dl.queue_name,
            clients=clients,
            region=region,
            endpoint_url=dl.endpoint_url,
            overflow_dir=overflow_dir(config),
            overflow=overflow,
        )

    @property
    def location(self) -> str:
        """The queue URL."""
        return self.queue_url

    @property
    def limit(self) -> int:
        """The largest message body sent, in bytes."""
        if self._queue is not None:
            return self._queue.limit
        return min(SQS_MAX_MESSAGE_BYTES, self._max_message_bytes or SQS_MAX_MESSAGE_BYTES)

    async def _open(self) -> SqsQueue:
        """The queue, its client and its size limit (looked up on first use).

        Raises:
            DeadLetterError: the client cannot be made or the queue cannot be reached.
        """
        async with self._open_lock:
            if self._queue is None:
                try:
                    client = await self.clients.client(
                        "sqs", region=self.region, endpoint_url=self.endpoint_url
                    )
                except TRANSPORT_ERRORS as exc:
                    raise DeadLetterError(f"dead-letter queue {self.queue_url}: {exc}") from exc
                if self._queue_name is not None:
                    try:
                        found = await client.get_queue_url(QueueName=self._queue_name)
                    except TRANSPORT_ERRORS as exc:
                        raise DeadLetterError(f"dead-letter queue {self.queue_url}: {exc}") from exc
                    self.queue_url, self._queue_name = str(found["QueueUrl"]), None
                self._queue = SqsQueue(
                    client,
                    self.queue_url,
                    max_message_bytes=self._max_message_bytes,
                    attempts=self.attempts,
                    retry=self.backoff,
                    on_trouble=self._log_trouble,
                )
            queue = self._queue
        try:
            await queue.message_limit()
        except TRANSPORT_ERRORS as exc:
            raise DeadLetterError(f"dead-letter queue {self.queue_url}: {exc}") from exc
        return queue

    async def aclose(self) -> None:
        """Nothing to release: the client belongs to ``clients``, closed by its owner."""
        return None

    # -- writing ------------------------------------------------------------------------------

    async def write(self, entries: list[Entry]) -> None:
        """Send every entry (oversized ones through the overflow directory).

        Raises:
            DeadLetterError: none could be stored.
            PartialDeadLetterError: some were stored; ``remaining`` could not be.
        """
        if not entries:
            return
        queue = await self._open()
        bodies: list[bytes] = []
        pointers: dict[int, Pointer] = {}  # entries sent by pointer: their overflow
        try:
            for index, item in enumerate(entries):
                body = orjson.dumps(item)
                if len(body) > queue.limit:
                    pointers[index], body = await self._overflow(
                        item, body, "larger than the message size limit"
                    )
                bodies.append(body)
        except DeadLetterError:
            await self._forget(pointers.values())
            raise
        failures = await queue.send(
            [self._message(e, b) for e, b in zip(entries, bodies, strict=True)]
        )
        unsent = {f.index: f for f in failures}
        refused = [f for f in failures if f.sender_fault]
        if refused:
            # The messages themselves were refused (size, characters): keep those entries
            # whole in files and send pointers instead.
            resend: list[Message] = []
            for failure in refused:
                item = entries[failure.index]
                try:
                    pointers[failure.index], body = await self._overflow(
                        item, orjson.dumps(item), f"{failure.code}: refused by SQS"
                    )
                except DeadLetterError:
                    await self._forget(p for i, p in pointers.items() if i in unsent)
                    raise
                resend.append(self._message(item, body))
            for failure in refused:
                del unsent[failure.index]
            for again in await queue.send(resend):
                index = refused[again.index].index
                unsent[index] = SendFailure(
                    index, again.code, again.message, again.sender_fault, again.ambiguous
                )
        if not unsent:
            return
        # Overflows of messages SQS said it did not store are not needed: a retry stores
        # them again (once), a record that goes elsewhere leaves none behind. Those of a call
        # that failed as a whole stay: SQS may have stored their pointers all the same.
        await self._forget(
            pointers[i] for i, failure in unsent.items() if i in pointers and not failure.ambiguous
        )
        last = unsent[max(unsent)]
        message = (
            f"dead-letter queue {self.queue_url}: {len(unsent)} of {len(entries)} entries "
            f"not stored: {last}"
        )
        if len(unsent) == len(entries):
            raise DeadLetterError(message)
        raise PartialDeadLetterError(message, [entries[i] for i in sorted(unsent)])

    def _message(self, item: Entry, body: bytes) -> Message:
        if not self.fifo:
            return Message(body)
        key = entry_key(item)
        return Message(
            body,
            group_id=_safe(f"{item.get('sink')}-{item.get('shard_id')}"),
            deduplication_id=hashlib.sha256(
                f"{key}|{item.get('dead_lettered_at')}".encode()
            ).hexdigest(),
        )

    def _log_trouble(self, trouble: CallTrouble) -> None:
        if trouble.raised:
            log.warning(
                "dead_letter_queue_call_failed",
                extra={"queue": self.queue_url, "entries": trouble.entries, "error": trouble.error},
            )
            return
        log.warning(
            "dead_letter_queue_entries_failed",
            extra={
                "queue": self.queue_url,
                "failed": trouble.failed,
                "entries": trouble.entries,
                "error": trouble.error,
                "attempt": trouble.attempt,
            },
        )

    # -- reading ------------------------------------------------------------------------------

    async def read(self) -> AsyncIterator[list[Letter]]:
        """Receive every message once, in batches of up to 10, each hidden from other readers
        for 5 minutes unless acknowledged (deleted) or released first.

        Raises:
            DeadLetterError: the queue cannot be read.
        """
        queue = await self._open()
        seen: set[str] = set()
        while True:
            try:
                got = await queue.receive(visibility_s=_VISIBILITY_S, wait_s=_RECEIVE_WAIT_S)
            except TRANSPORT_ERRORS as exc:
                raise DeadLetterError(f"dead-letter queue {self.queue_url}: {exc}") from exc
            fresh = [m for m in got if m["MessageId"] not in seen]
            if not fresh:
                return
            letters: list[Letter] = []
            for message in fresh:
                seen.add(message["MessageId"])
                try:
                    item, pointer = await self.load(message["Body"])
                except DeadLetterError as exc:
                    letters.append(Letter(None, str(exc), handle=_Received(message, None)))
                    continue
                letters.append(Letter(item, handle=_Received(message, pointer)))
            yield letters

    async def acknowledge(self, letters: list[Letter], *, target: str = "") -> None:
        """Delete the messages of ``letters`` and then their overflow files."""
        received = [_received(letter) for letter in letters]
        if not received:
            return
        queue = await self._open()
        try:
            failed = await queue.delete([r.receipt_handle for r in received])
        except TRANSPORT_ERRORS as exc:
            raise DeadLetterError(f"dead-letter queue {self.queue_url}: {exc}") from exc
        await self._forget(
            r.overflow
            for position, r in enumerate(received)
            if position not in failed and r.overflow is not None
        )
        if failed:
            log.warning(
                "dead_letter_delete_failed", extra={"queue": self.queue_url, "failed": len(failed)}
            )

    async def release(self, letters: list[Letter]) -> None:
        """Make the messages of ``letters`` visible again at once."""
        handles = [_received(letter).receipt_handle for letter in letters]
        if not handles:
            return
        queue = await self._open()
        try:
            await queue.release(handles)
        except TRANSPORT_ERRORS as exc:
            raise DeadLetterError(f"dead-letter queue {self.queue_url}: {exc}") from exc

    async def approximate_counts(self) -> tuple[int, int]:
        """About how many messages are visible, and how many are being read."""
        queue = await self._open()
        try:
            return await queue.approximate_counts()
        except TRANSPORT_ERRORS as exc:
            raise DeadLetterError(f"dead-letter queue {self.queue_url}: {exc}") from exc

    async def peek(self) -> list[Entry]:
        """A sample of the queue's entries as sent (a pointer message stays a pointer), left
        where they are (received with visibility 0)."""
        queue = await self._open()
        seen: set[str] = set()
        sample: list[Entry] = []
        for _ in range(_PEEK_ROUNDS):
            try:
                got = await queue.receive(visibility_s=0, wait_s=0)
            except TRANSPORT_ERRORS as exc:
                raise DeadLetterError(f"dead-letter queue {self.queue_url}: {exc}") from exc
            fresh = [m for m in got if m["MessageId"] not in seen]
            if not fresh:
                break
            for message in fresh:
                seen.add(message["MessageId"])
                try:
                    item = orjson.loads(message["Body"])
                except orjson.JSONDecodeError:
                    continue
                if isinstance(item, dict):
                    sample.append(item)
        return sample

    # -- overflow -----------------------------------------------------------------------------

    async def _overflow(self, item: Entry, data: bytes, why: str) -> tuple[Pointer, bytes]:
        """Store the whole entry as an overflow; its pointer and the pointer message's body."""
        stored = await self.overflow.put(str(item.get("sink")), data)
        pointer = {k: v for k, v in item.items() if k != "record"}
        error = pointer.get("error")
        if isinstance(error, dict) and len(str(error.get("message", ""))) > _POINTER_TEXT_LIMIT:
            text = str(error["message"])[:_POINTER_TEXT_LIMIT]
            pointer["error"] = {**error, "message": text + " ... (whole in the overflow)"}
        pointer[OVERFLOW_KEY] = {**stored, "reason": why}
        body = orjson.dumps(pointer)
        if len(body) > self.limit:  # keep only what identifies the record
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
                "overflow": stored.get("uri") or stored.get("path"),
                "reason": why,
            },
        )
        return stored, body

    async def load(self, body: str | bytes) -> tuple[Entry, Pointer | None]:
        """The whole entry a message holds (reading its overflow file or object) and its
        overflow pointer (None for an entry sent inline).

        Raises:
            DeadLetterError: the body is not an entry, or its overflow is missing or does not
                match the checksum in the pointer.
        """
        item, pointer = _parse(body)
        if pointer is None:
            return item, None
        if "path" in pointer:
            return load_body(body)[0], pointer
        if not isinstance(pointer.get("bucket"), str) or not isinstance(pointer.get("key"), str):
            raise DeadLetterError("message body has a malformed overflow pointer")
        data = await self._s3_overflow(pointer).load(pointer)
        return _whole(data, pointer, str(pointer.get("uri"))), pointer

    def _s3_overflow(self, pointer: Pointer) -> S3Overflow:
        """The overflow store of the bucket ``pointer`` names (this queue's, or another)."""
        if isinstance(self.overflow, S3Overflow) and self.overflow.store.bucket == pointer.get(
            "bucket"
        ):
            return self.overflow
        from fanout.delivery.deadletter.s3 import S3Bucket

        return S3Overflow(S3Bucket(str(pointer["bucket"]), clients=self.clients), "")

    async def _forget(self, pointers: Iterable[Pointer]) -> None:
        """Remove overflows no message points at (never raises)."""
        for pointer in list(pointers):
            if "path" in pointer:
                await FileOverflow(self.overflow_dir).remove(pointer)
            else:
                await self._s3_overflow(pointer).remove(pointer)
            log.info(
                "dead_letter_overflow_removed",
                extra={
                    "queue": self.queue_url,
                    "overflow": pointer.get("uri", pointer.get("path")),
                },
            )


class _Received:
    """What acknowledging or releasing one received message needs."""

    __slots__ = ("overflow", "receipt_handle")

    def __init__(self, message: dict[str, Any], overflow: Pointer | None) -> None:
        self.receipt_handle: str = message["ReceiptHandle"]
        self.overflow = overflow


def _received(letter: Letter) -> _Received:
    handle = letter.handle
    if not isinstance(handle, _Received):
        raise TypeError("not a letter read from an SQS dead-letter queue")
    return handle
