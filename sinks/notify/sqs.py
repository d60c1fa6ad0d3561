"""The ``sqs`` sink: one message per record, sent with SendMessageBatch through the shared
``fanout.aws.sqs.SqsQueue`` (10 messages and the queue's ``MaximumMessageSize`` per call).

A message SQS refuses as a sender fault fails permanently with SQS's error code; server
faults, already retried inside ``SqsQueue``, are retryable. FIFO queues (``.fifo``) get
``MessageGroupId`` from the item key (``group_id``) and ``MessageDeduplicationId`` from the
record's ``eventID``, so a replay within SQS's five-minute deduplication window is stored
once.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from fanout.aws.sqs import Message, SqsQueue
from fanout.records import Record
from fanout.shapes import check_sqs_queue_url
from fanout.sink import SinkContext, SinkType
from sinks.notify.common import AwsNotifySink, MessageParts, Refusal
from sinks.notify.config import MessageConfig


class SqsSinkConfig(MessageConfig):
    """Options of the ``sqs`` sink."""

    type: Literal["sqs"] = "sqs"
    queue_url: str = Field(description="The queue; a name ending in .fifo is a FIFO queue.")

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str) -> str:
        return check_sqs_queue_url(value)


_REGION_IN_URL = re.compile(r"^https://(?:sqs\.([a-z0-9-]+)|([a-z0-9-]+)\.queue)\.amazonaws\.com")


def region_from_url(url: str) -> str | None:
    """The region of ``https://sqs.REGION.amazonaws.com/...`` (and the legacy
    ``https://REGION.queue.amazonaws.com/...``)."""
    match = _REGION_IN_URL.match(url)
    return (match.group(1) or match.group(2)) if match else None


class SqsSink(AwsNotifySink):
    """Sends each record as one message to an SQS queue."""

    service = "sqs"

    def __init__(self, name: str, config: SqsSinkConfig, context: SinkContext) -> None:
        super().__init__(name, config, context, region_from_url(config.queue_url))
        self.queue_url = config.queue_url
        self.fifo = config.queue_url.endswith(".fifo")
        self.ordered = self.fifo
        self.parts = MessageParts(config, self.fifo)
        self.queue: SqsQueue | None = None

    async def start(self) -> None:
        await super().start()
        self.queue = SqsQueue(
            self.client, self.queue_url, max_message_bytes=self.config.max_message_bytes
        )
        # A wrong queue URL fails start-up (a denied lookup falls back to the SQS limit).
        await self.queue.message_limit()

    async def stop(self) -> None:
        self.queue = None
        await super().stop()

    async def limit(self) -> int:
        assert self.queue is not None, "send() before start()"
        return await self.queue.message_limit()

    def _entry(self, record: Record, body: bytes) -> tuple[Any, int]:
        message = Message(
            body,
            group_id=self.parts.group_id(record),
            deduplication_id=self.parts.deduplication_id(record),
            attributes=self.parts.message_attributes(record),
        )
        return message, message.size

    async def _call(self, entries: list[Any]) -> dict[int, Refusal]:
        assert self.queue is not None, "send() before start()"
        failures = await self.queue.send(entries)
        return {f.index: Refusal(not f.sender_fault, f.code, f.message) for f in failures}


def _build(name: str, config: SqsSinkConfig, context: SinkContext) -> SqsSink:
    return SqsSink(name, config, context)


SQS: SinkType[SqsSinkConfig] = SinkType(SqsSinkConfig, _build)
