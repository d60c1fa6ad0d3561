"""An in-memory SQS queue with scripted send failures, and AwsClients that hand it out."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fanout.aws.clients import AwsClients

# A rule answers one SendMessageBatch entry: None stores it, (code, sender_fault) fails it.
Rule = Callable[[dict[str, Any]], tuple[str, bool] | None]


class FakeSqs:
    """Answers the SQS calls fanout makes; ``script`` holds one ``Rule`` per send call.

    Received messages are hidden (whatever the visibility timeout, except 0) until deleted
    or released; no real time passes.
    """

    def __init__(self, script: Sequence[Rule] | None = None, **attributes: str) -> None:
        self.calls: list[list[dict[str, Any]]] = []  # SendMessageBatch entries, per call
        self.stored: list[str] = []  # bodies, in the order they were stored
        self.script = list(script or [])
        self.attributes = attributes
        self.messages: dict[str, dict[str, Any]] = {}  # message id -> message, oldest first
        self.hidden: set[str] = set()
        self.deleted: list[str] = []
        self._ids = itertools.count(1)

    async def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]):
        visible = sum(1 for m in self.messages if m not in self.hidden)
        return {
            "Attributes": {
                **self.attributes,
                "ApproximateNumberOfMessages": str(visible),
                "ApproximateNumberOfMessagesNotVisible": str(len(self.hidden)),
            }
        }

    async def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]):
        self.calls.append(Entries)
        assert len(Entries) <= 10
        rule = self.script.pop(0) if self.script else (lambda e: None)
        failed, successful = [], []
        for item in Entries:
            code = rule(item)
            if code is None:
                self.stored.append(item["MessageBody"])
                message_id = f"m{next(self._ids)}"
                self.messages[message_id] = {
                    "MessageId": message_id,
                    "ReceiptHandle": f"r-{message_id}",
                    "Body": item["MessageBody"],
                    "sent": item,
                }
                successful.append({"Id": item["Id"], "MessageId": message_id})
            else:
                failed.append(
                    {"Id": item["Id"], "Code": code[0], "SenderFault": code[1], "Message": "x"}
                )
        return {"Successful": successful, "Failed": failed}

    async def receive_message(
        self, QueueUrl: str, MaxNumberOfMessages: int, VisibilityTimeout: int, WaitTimeSeconds: int
    ):
        found = []
        for message_id, message in self.messages.items():
            if message_id in self.hidden:
                continue
            found.append({k: v for k, v in message.items() if k != "sent"})
            if VisibilityTimeout:
                self.hidden.add(message_id)
            if len(found) == MaxNumberOfMessages:
                break
        return {"Messages": found} if found else {}

    def _by_handle(self, handle: str) -> str | None:
        return next((m for m, v in self.messages.items() if v["ReceiptHandle"] == handle), None)

    async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]):
        assert len(Entries) <= 10
        failed = []
        for item in Entries:
            message_id = self._by_handle(item["ReceiptHandle"])
            if message_id is None:
                failed.append({"Id": item["Id"], "Code": "ReceiptHandleIsInvalid"})
                continue
            del self.messages[message_id]
            self.hidden.discard(message_id)
            self.deleted.append(message_id)
        return {"Failed": failed}

    async def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]):
        assert len(Entries) <= 10
        for item in Entries:
            message_id = self._by_handle(item["ReceiptHandle"])
            if message_id is not None and item["VisibilityTimeout"] == 0:
                self.hidden.discard(message_id)
        return {"Failed": []}


class FakeSession:
    """An aiobotocore session whose every client is ``client``; remembers what was asked."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.created: list[tuple[str, str | None, str | None]] = []

    def create_client(self, service: str, **options: Any):
        self.created.append((service, options.get("region_name"), options.get("endpoint_url")))

        @asynccontextmanager
        async def opened() -> AsyncIterator[Any]:
            yield self.client

        return opened()


def fake_clients(client: Any) -> AwsClients:
    """``AwsClients`` whose clients are all ``client``."""
    return AwsClients(session=FakeSession(client))
