"""fanout.testing for users: the records its builders make are the records the worker
delivers, and the pytest fixtures run a config in-process until its changes are handled."""

from __future__ import annotations

import decimal
from pathlib import Path
from typing import Any

import pytest

from fanout.testing import events
from tests.integration import kit_handlers

pytestmark = pytest.mark.integration

# Everything the kit cannot know in advance: ids and times. Types are still compared.
_VARYING = {"eventID": str, "SequenceNumber": str, "ApproximateCreationDateTime": float}


def _without_ids_and_times(record: dict[str, Any]) -> dict[str, Any]:
    record = {k: v for k, v in record.items() if k != "eventID"}
    data = dict(record["dynamodb"])
    del data["SequenceNumber"], data["ApproximateCreationDateTime"]
    record["dynamodb"] = data
    return record


def _config(tmp_path: Path, handler: str = "capture", **sink: Any) -> Path:
    options = "".join(f"\n    {k}: {v}" for k, v in sink.items())
    path = tmp_path / "fanout.yaml"
    path.write_text(
        f"""
streams:
  orders: {{table: Orders}}
sinks:
  lambda:
    type: handler
    handler: tests.integration.kit_handlers:{handler}{options}
"""
    )
    return path


@pytest.fixture(autouse=True)
def _clean():
    kit_handlers.RECEIVED.clear()
    yield
    kit_handlers.RECEIVED.clear()


ITEM: dict[str, Any] = {
    "pk": "order-1",
    "status": "NEW",
    "total": 42,
    "rate": decimal.Decimal("0.25"),
    "gift": False,
    "note": None,
    "lines": [{"sku": "A-1", "qty": 2}],
    "address": {"city": "Oslo", "zip": "0150"},
    "tags": {"web"},
    "blob": b"\x00\x01",
}


@pytest.mark.parametrize("view", ["NEW_AND_OLD_IMAGES", "NEW_IMAGE", "OLD_IMAGE", "KEYS_ONLY"])
def test_built_events_equal_the_delivered_ones_but_for_ids_and_times(
    view, fanout_table, fanout_worker, tmp_path
):
    orders = fanout_table("Orders", view=view)
    worker = fanout_worker(_config(tmp_path))
    paid = {**ITEM, "status": "PAID", "total": 43}
    shipped = {**paid, "status": "SHIPPED"}
    orders.put(ITEM)
    orders.put(paid)
    orders.update({"pk": "order-1"}, {"status": "SHIPPED"})
    orders.delete({"pk": "order-1"})
    worker.drain()

    built = [
        orders.events.insert(ITEM),
        orders.events.modify(ITEM, paid),
        orders.events.modify(paid, shipped),
        orders.events.remove(shipped),
    ]
    delivered = kit_handlers.RECEIVED
    assert len(delivered) == len(built)
    for got, made in zip(delivered, built, strict=True):
        for field, kind in _VARYING.items():
            where_got = got if field == "eventID" else got["dynamodb"]
            where_made = made if field == "eventID" else made["dynamodb"]
            assert isinstance(where_got[field], kind), field
            assert isinstance(where_made[field], kind), field
        assert _without_ids_and_times(got) == _without_ids_and_times(made)
    # and in the order the stream numbers them
    sequences = [int(r["dynamodb"]["SequenceNumber"]) for r in delivered]
    assert sequences == sorted(sequences)


def test_builders_type_plain_values_as_dynamodb_does():
    assert events.image(ITEM) == {
        "pk": {"S": "order-1"},
        "status": {"S": "NEW"},
        "total": {"N": "42"},
        "rate": {"N": "0.25"},
        "gift": {"BOOL": False},
        "note": {"NULL": True},
        "lines": {"L": [{"M": {"sku": {"S": "A-1"}, "qty": {"N": "2"}}}]},
        "address": {"M": {"city": {"S": "Oslo"}, "zip": {"S": "0150"}}},
        "tags": {"SS": ["web"]},
        "blob": {"B": "AAE="},
    }
    assert events.plain(events.image(ITEM)) == ITEM
    ttl = events.remove({"pk": "a", "expires": 1}, ttl=True)
    assert ttl["userIdentity"] == {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    assert ttl["eventName"] == "REMOVE"
    assert "NewImage" not in ttl["dynamodb"]
    assert "userIdentity" not in events.remove({"pk": "a"})
    event = events.event(events.insert({"pk": "a"}), [events.insert({"pk": "b"})])
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]] == ["a", "b"]


def test_a_failing_record_is_dead_lettered_and_drain_still_returns(
    fanout_table, fanout_worker, tmp_path
):
    orders = fanout_table("Orders")
    worker = fanout_worker(
        _config(tmp_path, "fail_on_poison", retry="{max_attempts: 3}", batch_size=10)
    )
    orders.put({"pk": "a"})
    orders.put({"pk": "b", "poison": True})
    orders.put({"pk": "c"})
    worker.drain()
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in kit_handlers.RECEIVED] == ["a", "c"]
    (dead,) = worker.dead_letters("lambda")
    assert dead["record"]["dynamodb"]["Keys"] == {"pk": {"S": "b"}}
    assert dead["attempts"] == 3
    # a second round of changes drains too
    orders.put({"pk": "d"})
    worker.drain()
    assert kit_handlers.RECEIVED[-1]["dynamodb"]["Keys"] == {"pk": {"S": "d"}}


def test_the_worker_fixture_points_handler_sdks_at_dynamodb_local(fanout_table, fanout_dynamodb):
    import os

    fanout_table("Orders")
    assert os.environ["AWS_ENDPOINT_URL_DYNAMODB"] == fanout_dynamodb.endpoint_url
