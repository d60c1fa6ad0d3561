"""Contract targets of the notification sinks: SQS, SNS and EventBridge on the moto server
(what arrived is read from an SQS queue: the sink's own, one subscribed to the topic, one a
rule on the bus targets), the webhook on a local receiver that checks signatures."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from fanout.records import Record
from fanout.sink import SinkType
from fanout.testing.contract import ContractTarget
from tests.integration.webhook_receiver import Answer, Receiver, Request, serving

SECRET = "whsec_Y29udHJhY3QtdGVzdC1zZWNyZXQtb2YtMzItYnl0ZXMh"
_LIMIT = 8192  # a small message limit, so a refused record needs no megabyte
_SOURCE = "contract.test"


def _poisoned(record: Record) -> Record:
    """Too large for a message (SQS, SNS, EventBridge); refused by the receiver (webhook)."""
    record["dynamodb"]["NewImage"]["poison"] = {"S": "x" * (_LIMIT + 1)}
    return record


class QueueArrivals:
    """The eventIDs of the messages that reached an SQS queue (read once, then deleted)."""

    def __init__(self, sqs_client: Any, url: str, event_id: Callable[[Any], str]) -> None:
        self.sqs = sqs_client
        self.url = url
        self.event_id = event_id
        self.seen: list[str] = []

    def __call__(self) -> list[str]:
        while True:
            got = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10)
            messages = got.get("Messages", [])
            if not messages:
                return self.seen
            self.seen += [self.event_id(orjson.loads(m["Body"])) for m in messages]
            self.sqs.delete_message_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                    for n, m in enumerate(messages)
                ],
            )


def _aws(request: pytest.FixtureRequest) -> tuple[str, Any, Callable[..., str]]:
    moto = request.getfixturevalue("moto_server")
    return (
        moto.endpoint_url,
        request.getfixturevalue("sqs_client"),
        request.getfixturevalue("sqs_queue"),
    )


def sqs_target(
    sink_type: SinkType[Any], tmp_path: Path, request: pytest.FixtureRequest
) -> ContractTarget:
    endpoint, sqs, make_queue = _aws(request)
    url = make_queue(MaximumMessageSize=str(_LIMIT))
    options = {"type": "sqs", "queue_url": url, "endpoint_url": endpoint, "format": "raw"}
    return ContractTarget(
        sink_type,
        options,
        QueueArrivals(sqs, url, lambda body: body["eventID"]),
        # start() finds no queue of that name
        broken_options={**options, "queue_url": url.rsplit("/", 1)[0] + "/no-such-queue"},
        poison=_poisoned,
    )


def sns_target(
    sink_type: SinkType[Any], tmp_path: Path, request: pytest.FixtureRequest
) -> ContractTarget:
    endpoint, sqs, make_queue = _aws(request)
    url = make_queue()
    topic = request.getfixturevalue("sns_topic")(queue_url=url)
    options = {
        "type": "sns",
        "topic_arn": topic,
        "endpoint_url": endpoint,
        "format": "raw",
        "max_message_bytes": _LIMIT,
    }
    return ContractTarget(
        sink_type,
        options,
        QueueArrivals(sqs, url, lambda body: body["eventID"]),
        broken_options={**options, "endpoint_url": "not-a-url"},
        poison=_poisoned,
    )


def eventbridge_target(
    sink_type: SinkType[Any], tmp_path: Path, request: pytest.FixtureRequest
) -> ContractTarget:
    endpoint, sqs, make_queue = _aws(request)
    url = make_queue()
    bus = request.getfixturevalue("event_bus")(queue_url=url, source=_SOURCE)
    options = {
        "type": "eventbridge",
        "event_bus_name": bus,
        "source": _SOURCE,
        "endpoint_url": endpoint,
        "format": "raw",
        "max_message_bytes": _LIMIT,
    }
    return ContractTarget(
        sink_type,
        options,
        QueueArrivals(sqs, url, lambda event: event["detail"]["eventID"]),
        broken_options={**options, "endpoint_url": "not-a-url"},
        poison=_poisoned,
    )


def _refuse_poison(request: Request) -> Answer | None:
    if "poison" in request.json["dynamodb"]["NewImage"]:
        return Answer(400, text="poison")
    return None


def webhook_target(
    sink_type: SinkType[Any], tmp_path: Path, request: pytest.FixtureRequest
) -> ContractTarget:
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    receiver = stack.enter_context(serving(Receiver(SECRET, decide=_refuse_poison)))
    options = {"type": "webhook", "url": receiver.url, "secret": SECRET, "format": "raw"}
    return ContractTarget(
        sink_type,
        options,
        receiver.event_ids,
        broken_options={**options, "secret": "whsec_not*base64"},  # start() cannot sign
        poison=_poisoned,
    )


NOTIFY_TARGETS: dict[
    str, Callable[[SinkType[Any], Path, pytest.FixtureRequest], ContractTarget]
] = {
    "sqs": sqs_target,
    "sns": sns_target,
    "eventbridge": eventbridge_target,
    "webhook": webhook_target,
}
