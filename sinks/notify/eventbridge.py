"""The ``eventbridge`` sink: one event per record, put with PutEvents on a named bus.

An event has ``source`` (from the config), ``detail-type`` (a template, by default the
record's eventName), ``detail`` (the record as ``raw``, ``plain`` or a template) and the
change's time (ApproximateCreationDateTime). A call holds at most 10 entries and at most
256 KiB in total, an entry's size counted as EventBridge documents it (Source, DetailType,
Detail and Resources in UTF-8, 14 bytes for Time). Per-entry ``ThrottlingException`` and
``InternalFailure`` are retryable, every other error code permanent. EventBridge keeps no
order, so the sink is unordered.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from fanout.records import Record, approximate_creation_time
from fanout.shapes import parse_arn
from fanout.sink import SinkContext, SinkType
from sinks.notify.common import AwsNotifySink, Refusal, RenderError, region_from_arn
from sinks.notify.config import AwsNotifyConfig
from sinks.notify.format import TextTemplate, check_template

EVENTBRIDGE_MAX_ENTRY_BYTES = 262_144
"""PutEvents' limit for one entry and for the sum of one call (256 KiB)."""
_RETRYABLE = frozenset({"ThrottlingException", "InternalFailure", "InternalException"})
_TIME_BYTES = 14  # how EventBridge counts a Time parameter
_BUS_NAME = re.compile(r"^[A-Za-z0-9._\/-]{1,256}$")


class EventBridgeSinkConfig(AwsNotifyConfig):
    """Options of the ``eventbridge`` sink."""

    type: Literal["eventbridge"] = "eventbridge"
    event_bus_name: str = Field("default", description="The bus: its name or ARN.")
    source: str = Field(description="The events' source, e.g. app.orders.")
    detail_type: str = Field(
        "{eventName}", description="The events' detail-type, a template; default the eventName."
    )
    max_message_bytes: int | None = Field(
        None,
        ge=1024,
        le=EVENTBRIDGE_MAX_ENTRY_BYTES,
        description="A lower entry size limit than EventBridge's 262144 (256 KiB).",
    )

    @field_validator("event_bus_name")
    @classmethod
    def _bus(cls, value: str) -> str:
        if value.startswith("arn:"):
            parse_arn(value, "events")
        elif not _BUS_NAME.match(value):
            raise ValueError(
                f"{value!r} is not an event bus name (1-256 of A-Z a-z 0-9 . _ - /) or ARN"
            )
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if value.startswith("aws."):
            raise ValueError("sources starting with 'aws.' are reserved for AWS services")
        return value

    @field_validator("detail_type")
    @classmethod
    def _detail_type(cls, value: str) -> str:
        return check_template(value)


class EventBridgeSink(AwsNotifySink):
    """Puts each record as one event on an EventBridge bus."""

    service = "events"

    def __init__(self, name: str, config: EventBridgeSinkConfig, context: SinkContext) -> None:
        super().__init__(name, config, context, region_from_arn(config.event_bus_name))
        self.bus = config.event_bus_name
        self.source = config.source
        self.detail_type = TextTemplate(config.detail_type)
        self._limit = min(
            EVENTBRIDGE_MAX_ENTRY_BYTES, config.max_message_bytes or EVENTBRIDGE_MAX_ENTRY_BYTES
        )

    async def limit(self) -> int:
        return self._limit

    def _entry(self, record: Record, body: bytes) -> tuple[Any, int]:
        detail_type = self.detail_type.render(record)
        if not detail_type:
            raise RenderError(f"detail_type {self.detail_type.text!r} is empty for this record")
        entry: dict[str, Any] = {
            "Source": self.source,
            "DetailType": detail_type,
            "Detail": body.decode(),
            "EventBusName": self.bus,
        }
        size = len(self.source.encode()) + len(detail_type.encode()) + len(body)
        created = approximate_creation_time(record)
        if created is not None:
            entry["Time"] = datetime.fromtimestamp(created, UTC)
            size += _TIME_BYTES
        return entry, size

    async def _call(self, entries: list[Any]) -> dict[int, Refusal]:
        answer = await self.client.put_events(Entries=entries)
        if not answer.get("FailedEntryCount"):
            return {}
        refused: dict[int, Refusal] = {}
        results = answer.get("Entries") or []
        for position in range(len(entries)):
            item = results[position] if position < len(results) else {}
            code = item.get("ErrorCode")
            if code:
                message = str(item.get("ErrorMessage", ""))
                refused[position] = Refusal(code in _RETRYABLE, str(code), message)
            elif not item.get("EventId"):
                refused[position] = Refusal(True, "NoAnswer", "EventBridge did not report it")
        return refused


def _build(name: str, config: EventBridgeSinkConfig, context: SinkContext) -> EventBridgeSink:
    return EventBridgeSink(name, config, context)


EVENTBRIDGE: SinkType[EventBridgeSinkConfig] = SinkType(EventBridgeSinkConfig, _build)
