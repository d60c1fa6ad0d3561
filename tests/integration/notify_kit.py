"""Helpers for the notification sink tests on the moto server: run a sink, read a queue,
inject per-entry failures into moto's backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest

from fanout.sink import Sink, SinkContext, SinkType

Injected = tuple[str, bool]  # (error code, sender fault)


@asynccontextmanager
async def running_sink(sink_type: SinkType[Any], options: dict[str, Any]) -> AsyncIterator[Any]:
    """A started sink of ``sink_type`` named ``n``, on its own context."""
    context = SinkContext.standalone("n")
    sink: Sink = sink_type.build("n", sink_type.config.model_validate(options), context)
    try:
        await sink.start()
        yield sink
    finally:
        await sink.stop()
        await context.aclose()


def drain(sqs_client: Any, url: str) -> list[dict[str, Any]]:
    """Every message of the queue (with attributes), in the order received; deleted."""
    found: list[dict[str, Any]] = []
    while True:
        got = sqs_client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            return found
        found += got
        sqs_client.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(got)
            ],
        )


def bodies(messages: list[dict[str, Any]]) -> list[Any]:
    return [orjson.loads(m["Body"]) for m in messages]


def injected(body: str) -> Injected | None:
    """The failure a message asks for: a plain body whose new image has ``inject``
    (``"Code"`` or ``"Code!"`` for a sender fault), directly or as an event's detail."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("detail"), dict):
        data = data["detail"]
    code = (data.get("new") or {}).get("inject") if isinstance(data, dict) else None
    if not isinstance(code, str):
        return None
    return code.rstrip("!"), code.endswith("!")


def inject_failures(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make moto's SQS, SNS and EventBridge backends fail the entries whose body asks for it
    (``injected``), answering the rest as usual. Returns the codes answered, in order."""
    from moto.events.models import EventsBackend
    from moto.sns.models import SNSBackend
    from moto.sqs.models import SQSBackend

    answered: list[str] = []
    send_batch = SQSBackend.send_message_batch
    publish_batch = SNSBackend.publish_batch
    put_events = EventsBackend.put_events

    def sqs_batch(self: Any, queue_name: str, entries: dict[str, Any]) -> Any:
        keep = {k: e for k, e in entries.items() if injected(e["MessageBody"]) is None}
        messages, failed = send_batch(self, queue_name, keep) if keep else ([], [])
        for key, entry in entries.items():
            fault = injected(entry["MessageBody"])
            if fault is not None:
                answered.append(fault[0])
                failed.append(
                    {"Id": key, "Code": fault[0], "Message": "injected", "SenderFault": fault[1]}
                )
        return messages, failed

    def sns_batch(
        self: Any, topic_arn: str, publish_batch_request_entries: list[dict[str, Any]]
    ) -> Any:
        entries = publish_batch_request_entries
        keep = [e for e in entries if injected(e["Message"]) is None]
        successful, failed = publish_batch(self, topic_arn, keep) if keep else ([], [])
        for entry in entries:
            fault = injected(entry["Message"])
            if fault is not None:
                answered.append(fault[0])
                failed.append(
                    {
                        "Id": entry["Id"],
                        "Code": fault[0],
                        "Message": "injected",
                        "SenderFault": fault[1],
                    }
                )
        return successful, failed

    def events_put(self: Any, events: list[dict[str, Any]]) -> Any:
        keep = [e for e in events if injected(e.get("Detail", "")) is None]
        results = iter(put_events(self, keep) if keep else [])
        answer = []
        for event in events:
            fault = injected(event.get("Detail", ""))
            if fault is None:
                answer.append(next(results))
            else:
                answered.append(fault[0])
                answer.append({"ErrorCode": fault[0], "ErrorMessage": "injected"})
        return answer

    monkeypatch.setattr(SQSBackend, "send_message_batch", sqs_batch)
    monkeypatch.setattr(SNSBackend, "publish_batch", sns_batch)
    monkeypatch.setattr(EventsBackend, "put_events", events_put)
    return answered


def marked(records: list[dict[str, Any]], marks: dict[int, str]) -> list[dict[str, Any]]:
    """``records`` with ``inject`` set in the new image of those at ``marks``' positions."""
    for position, code in marks.items():
        records[position]["dynamodb"]["NewImage"]["inject"] = {"S": code}
    return records


Drain = Callable[[str], list[dict[str, Any]]]
