"""The ``sns`` sink: one message per record, published with PublishBatch.

A call holds at most 10 messages and at most ``max_message_bytes`` (256 KiB, SNS's default
``MaximumMessageSize``; a topic can be set to allow up to 1 MiB) for one message and for the
sum of the call; a message's size is its body plus its attributes. Per-entry failures:
throttling and internal errors are retryable, other sender faults (validation) permanent.
FIFO topics (``.fifo``) get ``MessageGroupId`` from the item key (``group_id``) and
``MessageDeduplicationId`` from the record's ``eventID``, so a replay within SNS's
five-minute deduplication window is delivered once.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from fanout.records import Record
from fanout.shapes import parse_arn
from fanout.sink import SinkContext, SinkType
from sinks.notify.common import AwsNotifySink, MessageParts, Refusal, region_from_arn, transient
from sinks.notify.config import MessageConfig

SNS_MAX_MESSAGE_BYTES = 262_144
"""SNS's default limit for one message and for the sum of one PublishBatch (256 KiB)."""
SNS_LARGEST_MESSAGE_BYTES = 1_048_576
"""The largest ``MaximumMessageSize`` a topic can have (1 MiB)."""


class SnsSinkConfig(MessageConfig):
    """Options of the ``sns`` sink."""

    type: Literal["sns"] = "sns"
    topic_arn: str = Field(description="The topic; a name ending in .fifo is a FIFO topic.")

    @field_validator("topic_arn")
    @classmethod
    def _topic_arn(cls, value: str) -> str:
        parts = parse_arn(value, "sns")
        if not parts["region"] or not parts["account"] or ":" in parts["resource"]:
            raise ValueError(
                f"{value!r} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT_ID:TOPIC)"
            )
        return value

    max_message_bytes: int | None = Field(
        None,
        ge=1024,
        le=SNS_LARGEST_MESSAGE_BYTES,
        description="The topic's MaximumMessageSize if it is not the default 262144 (256 KiB).",
    )


def _size(body: bytes, attributes: dict[str, dict[str, str]]) -> int:
    size = len(body)
    for name, value in attributes.items():
        size += len(name.encode()) + len(value["DataType"]) + len(value["StringValue"].encode())
    return size


class SnsSink(AwsNotifySink):
    """Publishes each record as one message to an SNS topic."""

    service = "sns"

    def __init__(self, name: str, config: SnsSinkConfig, context: SinkContext) -> None:
        super().__init__(name, config, context, region_from_arn(config.topic_arn))
        self.topic_arn = config.topic_arn
        self.fifo = config.topic_arn.endswith(".fifo")
        self.ordered = self.fifo
        self.parts = MessageParts(config, self.fifo)
        self._limit = config.max_message_bytes or SNS_MAX_MESSAGE_BYTES

    async def limit(self) -> int:
        return self._limit

    def _entry(self, record: Record, body: bytes) -> tuple[Any, int]:
        attributes = self.parts.message_attributes(record)
        entry: dict[str, Any] = {"Message": body.decode()}
        if attributes:
            entry["MessageAttributes"] = attributes
        if self.fifo:
            entry["MessageGroupId"] = self.parts.group_id(record)
            entry["MessageDeduplicationId"] = self.parts.deduplication_id(record)
        return entry, _size(body, attributes)

    async def _call(self, entries: list[Any]) -> dict[int, Refusal]:
        answer = await self.client.publish_batch(
            TopicArn=self.topic_arn,
            PublishBatchRequestEntries=[{"Id": str(n), **e} for n, e in enumerate(entries)],
        )
        refused: dict[int, Refusal] = {}
        for item in answer.get("Failed") or []:
            code = str(item.get("Code", "")) or "Failed"
            sender_fault = bool(item.get("SenderFault"))
            retryable = transient(code) or not sender_fault
            refused[int(item["Id"])] = Refusal(retryable, code, str(item.get("Message", "")))
        published = {int(item["Id"]) for item in answer.get("Successful") or []}
        for position in range(len(entries)):
            if position not in published and position not in refused:
                refused[position] = Refusal(True, "NoAnswer", "SNS did not report this message")
        return refused


def _build(name: str, config: SnsSinkConfig, context: SinkContext) -> SnsSink:
    return SnsSink(name, config, context)


SNS: SinkType[SnsSinkConfig] = SinkType(SnsSinkConfig, _build)
