"""What the ``sns``, ``sqs`` and ``eventbridge`` sinks share: the claim check to S3 for
records too large for one message, message attributes and FIFO ids, and one ``send`` that
splits a batch into calls within the service's limits and turns per-entry answers into
per-record outcomes (their options are in ``sinks.notify.config``).

Outcomes, the same for the three services:

* an entry the service refused for a reason of its own (throttling, an internal error) is a
  retryable failure; one refused for what it holds (a validation error, a sender fault) a
  permanent one, with the service's error code in the reason;
* a call refused as a whole for a validation error is made again entry by entry, so one bad
  entry fails alone; other failed calls (throttling, 5xx, the network, access denied) fail
  their entries as retryable, and an unordered sink sends nothing more in that batch;
* a record whose message is larger than the limit fails permanently (``message of N bytes
  exceeds the M-byte limit``), or, with ``large_messages``, its body is put to S3 and a
  small pointer message is sent instead (``docs/notifications.md``);
* FIFO destinations are *ordered*: a retryable failure stops the batch there (the records
  after it are reported failed too and sent again behind it), so an item's changes arrive
  in order. Each call waits for its answer before the next one starts.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from botocore.exceptions import ClientError

from fanout.aws.sqs import TRANSPORT_ERRORS
from fanout.records import Record, plain_image
from fanout.sink import Failure, Failures, SinkContext
from sinks.notify.config import AwsNotifyConfig, LargeMessagesConfig, MessageConfig
from sinks.notify.format import TextTemplate, fifo_id, key_text, table_name

MAX_BATCH_ENTRIES = 10
"""Entries of one PublishBatch, SendMessageBatch or PutEvents call."""

# Error codes that say "not now" rather than "not this": the same entry may go through later.
_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "Throttled",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "KMSThrottlingException",
        "InternalError",
        "InternalFailure",
        "InternalException",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
# Codes that refuse what a call holds; with more than one entry, the entries are tried alone.
_VALIDATION_CODES = frozenset(
    {
        "InvalidParameter",
        "InvalidParameterValue",
        "InvalidParameterException",
        "InvalidParameterValueException",
        "ParameterValueInvalid",
        "ValidationError",
        "ValidationException",
        "InvalidArgument",
        "MalformedDetail",
        "InvalidMessageContents",
        "BatchRequestTooLong",
        "AWS.SimpleQueueService.BatchRequestTooLong",
    }
)


def transient(code: str) -> bool:
    """True for an error code that means the same request may succeed later."""
    return code in _TRANSIENT_CODES


# -- outcomes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the service did not take one entry."""

    retryable: bool
    code: str
    message: str

    def failure(self) -> Failure:
        return Failure(
            self.retryable, f"{self.code}: {self.message}" if self.message else self.code
        )


def refusal_of(exc: BaseException) -> Refusal:
    """A failed call as a refusal of each of its entries: retryable unless it was a
    validation error."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or "ClientError"
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = str(error.get("Message", "")) or str(exc)
        return Refusal(code not in _VALIDATION_CODES or status >= 500, code, message)
    return Refusal(True, type(exc).__name__, str(exc))


class RenderError(Exception):
    """A record cannot be turned into an entry (permanent)."""


@dataclass(slots=True)
class Outgoing:
    """One record's entry, ready to send."""

    index: int  # in the batch
    size: int  # bytes counted against the limit
    entry: Any  # what the service's call takes for it


def plan(sizes: Sequence[int], limit: int) -> list[list[int]]:
    """Positions of ``sizes`` in order, split into calls of at most 10 entries and at most
    ``limit`` bytes in total."""
    calls: list[list[int]] = []
    current: list[int] = []
    total = 0
    for position, size in enumerate(sizes):
        if current and (len(current) == MAX_BATCH_ENTRIES or total + size > limit):
            calls.append(current)
            current, total = [], 0
        current.append(position)
        total += size
    if current:
        calls.append(current)
    return calls


def region_from_arn(arn: str) -> str | None:
    """The region field of an ARN (``arn:aws:sns:REGION:ACCOUNT:name``), if it is one."""
    parts = arn.split(":")
    return parts[3] or None if len(parts) > 5 and parts[0] == "arn" else None


# -- the claim check -----------------------------------------------------------------------

CLAIM_CHECK_KEY = "claim_check"


class ClaimCheck:
    """Puts a record's body to S3 and makes the pointer sent in its place.

    The object key is ``<prefix><sink>/<eventID>.json``: the same record always lands on
    the same key, so a replay overwrites it with the same bytes.
    """

    def __init__(
        self, config: LargeMessagesConfig, sink: str, context: SinkContext, region: str | None
    ) -> None:
        self.config = config
        self.sink = sink
        self.context = context
        self.region = config.region or region
        self._s3: Any = None

    async def open(self) -> None:
        self._s3 = await self.context.aws.client(
            "s3", region=self.region, endpoint_url=self.config.endpoint_url
        )

    def key(self, record: Record, body: bytes) -> str:
        event_id = str(record.get("eventID") or hashlib.sha256(body).hexdigest())
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", event_id)
        return f"{self.config.prefix}{self.sink}/{safe}.json"

    async def put(self, record: Record, body: bytes) -> bytes:
        """Store ``body``; returns the pointer's JSON.

        Raises:
            TRANSPORT_ERRORS: the object could not be stored.
        """
        assert self._s3 is not None, "put() before open()"
        key = self.key(record, body)
        await self._s3.put_object(
            Bucket=self.config.bucket, Key=key, Body=body, ContentType="application/json"
        )
        pointer = {
            CLAIM_CHECK_KEY: {
                "bucket": self.config.bucket,
                "key": key,
                "bytes": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            },
            "eventID": record.get("eventID"),
            "eventName": record.get("eventName"),
            "table": table_name(record),
            "keys": plain_image(record.get("dynamodb", {}).get("Keys") or {}),
        }
        return orjson.dumps(pointer, default=str)


# -- message attributes and FIFO ids (SNS, SQS) -----------------------------------------


class MessageParts:
    """Attributes and FIFO ids of a record's message (shared with the ``sns`` sink)."""

    def __init__(self, config: MessageConfig, fifo: bool) -> None:
        self.fifo = fifo
        self.attributes = [(name, TextTemplate(t)) for name, t in config.attributes.items()]
        self.group = TextTemplate(config.group_id) if config.group_id else None

    def message_attributes(self, record: Record) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for name, template in self.attributes:
            value = template.render(record)
            if value:
                found[name] = {"DataType": "String", "StringValue": value}
        return found

    def group_id(self, record: Record) -> str | None:
        if not self.fifo:
            return None
        text = self.group.render(record) if self.group is not None else ""
        return fifo_id(text or key_text(record))

    def deduplication_id(self, record: Record) -> str | None:
        if not self.fifo:
            return None
        return fifo_id(str(record.get("eventID", "")) or key_text(record))


# -- the sink ------------------------------------------------------------------------------


class AwsNotifySink:
    """A batch-API notification sink; subclasses say how to build and send entries.

    Subclasses set ``service`` and implement ``_entry`` (one record's entry and its size),
    ``_call`` (one call of at most 10 entries: refusals by position) and ``limit``.
    """

    service: ClassVar[str]

    def __init__(
        self, name: str, config: AwsNotifyConfig, context: SinkContext, region: str | None
    ) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.region = config.region or region
        self.ordered = False
        self.format = config.body_format()
        self.client: Any = None
        self.claim_check = (
            ClaimCheck(config.large_messages, name, context, self.region)
            if config.large_messages
            else None
        )
        self._log = context.logger
        metrics = context.metrics
        self._failures = metrics.sink_entry_failures
        self._claims = metrics.sink_claim_checks.labels(name)

    async def start(self) -> None:
        self.client = await self.context.aws.client(
            self.service, region=self.region, endpoint_url=self.config.endpoint_url
        )
        if self.claim_check is not None:
            await self.claim_check.open()

    async def stop(self) -> None:
        self.client = None

    # -- what subclasses provide ---------------------------------------------------------

    async def limit(self) -> int:
        """The largest entry, and the largest sum of one call, in bytes."""
        raise NotImplementedError

    def _entry(self, record: Record, body: bytes) -> tuple[Any, int]:
        """The entry of ``record`` with ``body``, and its size. RenderError: it has none."""
        raise NotImplementedError

    async def _call(self, entries: list[Any]) -> dict[int, Refusal]:
        """Send one call; the refused entries by position. May raise TRANSPORT_ERRORS."""
        raise NotImplementedError

    # -- sending ---------------------------------------------------------------------------

    async def send(self, batch: Sequence[Record]) -> Failures:
        assert self.client is not None, "send() before start()"
        if not batch:
            return {}
        limit = await self.limit()
        refused: dict[int, Refusal] = {}
        outgoing: list[Outgoing] = []
        for index, record in enumerate(batch):
            ready = await self._prepare(record, limit)
            if isinstance(ready, Refusal):
                refused[index] = ready
            else:
                outgoing.append(Outgoing(index, ready[1], ready[0]))
        stop = self._first_retryable(refused)
        if stop is not None:
            outgoing = [o for o in outgoing if o.index < stop]
        for positions in plan([o.size for o in outgoing], limit):
            chunk = [outgoing[p] for p in positions]
            answer = await self._call_split([o.entry for o in chunk])
            for position, refusal in answer.items():
                refused[chunk[position].index] = refusal
            if self.ordered:
                stop = self._first_retryable(refused)
                if stop is not None:
                    break
            elif len(answer) == len(chunk) and all(r.retryable for r in answer.values()):
                # Refused as a whole for a reason of the service's: do not push harder.
                stop = chunk[-1].index
                break
        self._count(refused)
        failures = {index: refusal.failure() for index, refusal in refused.items()}
        if stop is not None:
            # Ordered: what follows the failed record is sent again behind it (a FIFO
            # destination drops the copies of what it already took). Unordered: what was
            # not sent yet waits for the next round.
            note = Failure(True, f"not sent: record {stop} of the batch failed before it")
            for index in range(stop + 1, len(batch)):
                failures.setdefault(index, note)
        return failures

    async def _prepare(self, record: Record, limit: int) -> tuple[Any, int] | Refusal:
        """The record's entry within ``limit`` (through the claim check if it is larger), or
        why there is none."""
        try:
            body = self.format.dumps(record)
            entry, size = self._entry(record, body)
        except RenderError as exc:
            return Refusal(False, "Unrenderable", str(exc))
        if size <= limit:
            return entry, size
        if self.claim_check is None:
            return Refusal(
                False, "MessageTooLarge", f"message of {size} bytes exceeds the {limit}-byte limit"
            )
        try:
            pointer = await self.claim_check.put(record, body)
        except TRANSPORT_ERRORS as exc:
            refusal = refusal_of(exc)
            return Refusal(True, refusal.code, f"claim check to S3 failed: {refusal.message}")
        self._claims.inc()
        entry, size = self._entry(record, pointer)
        if size > limit:
            return Refusal(
                False,
                "MessageTooLarge",
                f"claim check pointer of {size} bytes exceeds the {limit}-byte limit",
            )
        return entry, size

    async def _call_split(self, entries: list[Any]) -> dict[int, Refusal]:
        """One call; a call refused as a whole for a validation error is made again entry by
        entry (an ordered sink stops at the first retryable refusal)."""
        try:
            return await self._call(entries)
        except TRANSPORT_ERRORS as exc:
            refusal = refusal_of(exc)
        if refusal.retryable or len(entries) == 1:
            return dict.fromkeys(range(len(entries)), refusal)
        answer: dict[int, Refusal] = {}
        for position, entry in enumerate(entries):
            alone = await self._call_split([entry])
            if 0 in alone:
                answer[position] = alone[0]
                if self.ordered and alone[0].retryable:
                    break  # the rest waits behind it (send() holds it back)
        return answer

    def _first_retryable(self, refused: dict[int, Refusal]) -> int | None:
        if not self.ordered:
            return None
        return min((i for i, r in refused.items() if r.retryable), default=None)

    def _count(self, refused: dict[int, Refusal]) -> None:
        if not refused:
            return
        codes = Counter(r.code for r in refused.values())
        for code, count in codes.items():
            self._failures.labels(self.name, code).inc(count)
        first = refused[min(refused)]
        self._log.warning(
            "notification_entries_failed",
            extra={
                "sink": self.name,
                "failed": len(refused),
                "codes": dict(codes),
                "error": first.failure().reason,
            },
        )
