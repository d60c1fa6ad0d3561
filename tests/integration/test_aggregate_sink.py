"""The aggregate sink against DynamoDB Local: exact totals whatever the order, repetition and
concurrency of the changes; tombstones; windows; append-only measures; table and stream
checks at start; injected DynamoDB faults; and a worker whose target is its own source."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from botocore.exceptions import ClientError

from fanout.aws.clients import AwsClients
from fanout.config import StreamConfig, build_config
from fanout.errors import ConfigError, SinkUnavailable
from fanout.sink import Failure, SinkContext
from sinks.aggregate import AGGREGATE, AggregateSink
from tests.integration.shardkit import running
from tests.integration.shardkit import wait_for as wait_async

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-01-01T00:00:00.000"
T0 = 1_767_225_600


# -- helpers -------------------------------------------------------------------------------


def options(endpoint: str, **more: Any) -> dict[str, Any]:
    return {
        "type": "aggregate",
        "table": f"agg-{uuid.uuid4().hex[:12]}",
        "group_by": ["customer"],
        "measures": {"orders": "count", "revenue": {"sum": "amount"}},
        "region": REGION,
        "endpoint_url": endpoint,
        "create_table": True,
    } | more


def make_sink(opts: dict[str, Any], context: SinkContext | None = None) -> AggregateSink:
    config = AGGREGATE.config.model_validate(opts)
    sink = AGGREGATE.build("agg", config, context or SinkContext.standalone("agg"))
    assert isinstance(sink, AggregateSink)
    return sink


def sample(sink: AggregateSink, name: str, **labels: str) -> float:
    value = sink.context.metrics.registry.get_sample_value(name, {"sink": "agg", **labels})
    return value or 0.0


def record(
    event: str,
    key: str,
    seq: int,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    created: int = T0,
) -> dict[str, Any]:
    ddb: dict[str, Any] = {
        "ApproximateCreationDateTime": created,
        "Keys": {"pk": {"S": key}},
        "SequenceNumber": f"{seq:021d}",
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        ddb["NewImage"] = {"pk": {"S": key}, **new}
    if old is not None:
        ddb["OldImage"] = {"pk": {"S": key}, **old}
    return {"eventID": f"e{seq}", "eventName": event, "eventSourceARN": ARN, "dynamodb": ddb}


def order(customer: str, amount: str) -> dict[str, Any]:
    return {"customer": {"S": customer}, "amount": {"N": amount}}


def history(
    seed: int, items: int = 40, changes: int = 600
) -> tuple[list[dict[str, Any]], dict[str, tuple[dict[str, Any], int]]]:
    """Random changes in stream order, and each remaining item with its last change's time."""
    rng = random.Random(seed)
    current: dict[str, tuple[dict[str, Any], int]] = {}
    records = []
    seq = 10**20
    for n in range(changes):
        key = f"k{rng.randrange(items)}"
        seq += rng.randrange(1, 40)
        created = T0 + n * 3
        old = current.get(key)
        if old is not None and rng.random() < 0.15:
            records.append(record("REMOVE", key, seq, old=old[0], created=created))
            del current[key]
            continue
        new = order(f"c{rng.randrange(6)}", f"{rng.randrange(-1000, 100000) / 100}")
        event = "MODIFY" if old else "INSERT"
        records.append(record(event, key, seq, new, old[0] if old else None, created))
        current[key] = (new, created)
    return records, current


def recompute(
    current: dict[str, tuple[dict[str, Any], int]], window: int | None
) -> dict[tuple[str, str], tuple[int, Decimal]]:
    rows: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for item, created in current.values():
        at = "all" if window is None else str(created - created % window)
        row = rows[(item["customer"]["S"], at)]
        row[0] += 1
        row[1] += Decimal(item["amount"]["N"])
    return {key: (count, total) for key, (count, total) in rows.items()}


def rows(ddb_client: Any, table: str) -> dict[tuple[str, str], tuple[int, Decimal]]:
    found = {}
    for page in ddb_client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for row in page["Items"]:
            found[(row["group"]["S"], row["window"]["S"])] = (
                int(row["orders"]["N"]),
                Decimal(row["revenue"]["N"]),
            )
    return found


async def deliver(sink: AggregateSink, batch: Sequence[dict[str, Any]], rounds: int = 20) -> None:
    """Send until every record is delivered, as the delivery layer's retries would."""
    for _ in range(rounds):
        failures = await sink.send(batch)
        assert all(f.retryable for f in failures.values()), failures
        if not failures:
            return
        batch = [batch[i] for i in sorted(failures)]
        await anyio.sleep(0.01)
    raise AssertionError(f"not delivered after {rounds} rounds")


# -- exactness -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
async def test_any_order_any_repetition_and_two_concurrent_workers_give_exact_totals(
    seed, dynamodb_local, ddb_client
):
    records, current = history(seed, changes=400)
    opts = options(dynamodb_local.endpoint_url, window="1m")
    # Two sinks with their own clients and caches: two workers applying the same stream.
    sinks = [make_sink(opts), make_sink(opts)]
    rng = random.Random(seed)
    batches = []
    for _ in range(3):  # every record three times, shuffled: any order, any repetition
        shuffled = list(records)
        rng.shuffle(shuffled)
        batches += [shuffled[i : i + 50] for i in range(0, len(shuffled), 50)]
    try:
        for sink in sinks:
            await sink.start()
        limiter = anyio.CapacityLimiter(8)  # eight lanes at once, four per worker

        async def lane(sink: AggregateSink, batch: list[dict[str, Any]]) -> None:
            async with limiter:
                await deliver(sink, batch)

        async with anyio.create_task_group() as tg:
            for n, batch in enumerate(batches):
                tg.start_soon(lane, sinks[n % 2], batch)
    finally:
        for sink in sinks:
            await sink.stop()
            await sink.context.aclose()
    assert rows(ddb_client, opts["table"]) == recompute(current, 60)
    replays = sum(sample(s, "fanout_aggregate_replays_absorbed_total") for s in sinks)
    writes = sum(sample(s, "fanout_aggregate_writes_total") for s in sinks)
    assert replays > len(records)
    assert writes >= len(current)


async def test_in_stream_order_every_change_applies_once_and_a_replay_changes_nothing(
    dynamodb_local, ddb_client
):
    records, current = history(7, items=30, changes=400)
    opts = options(dynamodb_local.endpoint_url)
    sink = make_sink(opts)
    await sink.start()
    try:
        for i in range(0, len(records), 1):  # one change per batch: no folding
            await deliver(sink, records[i : i + 1])
        assert sample(sink, "fanout_aggregate_writes_total") == len(records)
        expected = recompute(current, None)
        assert rows(ddb_client, opts["table"]) == expected
        for i in range(0, len(records), 100):
            await deliver(sink, records[i : i + 100])
        assert sample(sink, "fanout_aggregate_replays_absorbed_total") > 0
        assert sample(sink, "fanout_aggregate_writes_total") == len(records)
        assert rows(ddb_client, opts["table"]) == expected
    finally:
        await sink.context.aclose()


async def test_a_delete_leaves_a_tombstone_that_an_older_insert_cannot_pass(
    dynamodb_local, ddb_client
):
    opts = options(dynamodb_local.endpoint_url)
    sink = make_sink(opts)
    insert = record("INSERT", "a", 1, order("c1", "5"))
    modify = record("MODIFY", "a", 2, order("c2", "7"), order("c1", "5"))
    remove = record("REMOVE", "a", 3, old=order("c2", "7"))
    await sink.start()
    try:
        await deliver(sink, [insert])
        assert rows(ddb_client, opts["table"]) == {("c1", "all"): (1, Decimal(5))}
        await deliver(sink, [modify])
        assert rows(ddb_client, opts["table"]) == {("c2", "all"): (1, Decimal(7))}
        await deliver(sink, [remove])
        assert rows(ddb_client, opts["table"]) == {}  # no row is left at zero
        await deliver(sink, [insert, modify])  # a replay, a redrive
        assert rows(ddb_client, opts["table"]) == {}
        # a REMOVE that arrives first (its INSERT dead-lettered, say) still wins
        await deliver(sink, [record("REMOVE", "b", 9, old=order("c1", "1"))])
        await deliver(sink, [record("INSERT", "b", 8, order("c1", "1"))])
        assert rows(ddb_client, opts["table"]) == {}
        # the replayed INSERT and MODIFY fold into one change of the item: one replay
        assert sample(sink, "fanout_aggregate_replays_absorbed_total") == 2
        assert sample(sink, "fanout_aggregate_anomalies_total", reason="unseen_item") == 1
    finally:
        await sink.context.aclose()


async def test_an_item_the_aggregate_never_saw_joins_with_its_next_change(
    dynamodb_local, ddb_client
):
    opts = options(dynamodb_local.endpoint_url)
    sink = make_sink(opts)
    await sink.start()
    try:
        # It existed before the stream was read: there is nothing of it to take out.
        await deliver(sink, [record("MODIFY", "old", 5, order("c1", "3"), order("c9", "100"))])
        assert rows(ddb_client, opts["table"]) == {("c1", "all"): (1, Decimal(3))}
        assert sample(sink, "fanout_aggregate_anomalies_total", reason="unseen_item") == 1
    finally:
        await sink.context.aclose()


async def test_a_change_moves_its_item_into_the_window_of_its_own_time(dynamodb_local, ddb_client):
    opts = options(dynamodb_local.endpoint_url, window="1h")
    sink = make_sink(opts)
    await sink.start()
    try:
        await deliver(sink, [record("INSERT", "a", 1, order("c1", "5"), created=T0 + 10)])
        await deliver(sink, [record("INSERT", "b", 2, order("c1", "1"), created=T0 + 20)])
        assert rows(ddb_client, opts["table"]) == {("c1", str(T0)): (2, Decimal(6))}
        later = T0 + 3600 + 5
        await deliver(sink, [record("MODIFY", "a", 3, order("c1", "8"), order("c1", "5"), later)])
        assert rows(ddb_client, opts["table"]) == {
            ("c1", str(T0)): (1, Decimal(1)),
            ("c1", str(T0 + 3600)): (1, Decimal(8)),
        }
    finally:
        await sink.context.aclose()


async def test_an_items_changes_in_one_batch_fold_into_its_last(dynamodb_local, ddb_client):
    opts = options(dynamodb_local.endpoint_url)
    sink = make_sink(opts)
    batch = [
        record("INSERT", "a", 1, order("c1", "1")),
        record("MODIFY", "a", 2, order("c2", "2"), order("c1", "1")),
        record("MODIFY", "a", 3, order("c3", "3.5"), order("c2", "2")),
        record("INSERT", "b", 4, {"customer": {"S": "c3"}, "amount": {"S": "n/a"}}),
        record("INSERT", "c", 5, {"amount": {"N": "1"}}),  # no customer: counts nowhere
    ]
    await sink.start()
    try:
        assert await sink.send(batch) == {}
        assert rows(ddb_client, opts["table"]) == {("c3", "all"): (2, Decimal("3.5"))}
        assert sample(sink, "fanout_aggregate_writes_total") == 3
        assert sample(sink, "fanout_aggregate_transactions_total") == 1
        assert sample(sink, "fanout_aggregate_anomalies_total", reason="non_numeric") == 1
        assert sample(sink, "fanout_aggregate_anomalies_total", reason="ungrouped") == 1
    finally:
        await sink.context.aclose()


async def test_transactions_stay_within_their_action_limit(dynamodb_local, ddb_client):
    records, current = history(11, items=120, changes=300)
    opts = options(dynamodb_local.endpoint_url, max_transaction_actions=10)
    sink = make_sink(opts)
    await sink.start()
    try:
        await deliver(sink, records)
        assert rows(ddb_client, opts["table"]) == recompute(current, None)
        assert sample(sink, "fanout_aggregate_transactions_total") >= 120 / 9
    finally:
        await sink.context.aclose()


async def test_min_max_and_latest_on_an_append_only_stream(dynamodb_local, ddb_client):
    measures = {
        "orders": "count",
        "revenue": {"sum": "amount"},
        "smallest": {"min": "amount"},
        "largest": {"max": "amount"},
        "last_status": {"latest": "status"},
    }
    opts = options(dynamodb_local.endpoint_url, measures=measures)
    sink = make_sink(opts)
    inserts = [
        record("INSERT", f"o{n}", 10 + n, {**order("c1", amount), "status": {"S": f"s{n}"}})
        for n, amount in enumerate(["5", "-2.5", "40", "7"])
    ]
    await sink.start()
    try:
        await deliver(sink, inserts[2:])
        await deliver(sink, inserts[:2])  # older changes arriving late
        await deliver(sink, list(reversed(inserts)))  # a replay
        (row,) = ddb_client.scan(TableName=opts["table"])["Items"]
        assert row["orders"] == {"N": "4"}
        assert row["revenue"] == {"N": "49.5"}
        assert row["smallest"] == {"N": "-2.5"}
        assert row["largest"] == {"N": "40"}
        assert row["last_status"] == {"S": "s3"}
        assert row["fanout:sink"] == {"S": "agg"}
    finally:
        await sink.context.aclose()


async def test_a_sum_beyond_38_digits_is_refused_not_rounded(dynamodb_local, ddb_client):
    opts = options(dynamodb_local.endpoint_url)
    sink = make_sink(opts)
    big = "9" * 38
    await sink.start()
    try:
        await deliver(sink, [record("INSERT", "a", 1, order("c1", big))])
        failures = await sink.send([record("INSERT", "b", 2, order("c1", "0.5"))])
        assert list(failures) == [0]
        assert not failures[0].retryable
        assert "38 digits" in failures[0].reason
        assert rows(ddb_client, opts["table"]) == {("c1", "all"): (1, Decimal(big))}
    finally:
        await sink.context.aclose()


async def test_a_refused_change_among_many_is_split_out_and_the_rest_apply(
    dynamodb_local, ddb_client
):
    opts = options(dynamodb_local.endpoint_url)
    sink = make_sink(opts)
    big = "9" * 38
    await sink.start()
    try:
        await deliver(sink, [record("INSERT", "big", 1, order("c1", big))])
        batch = [record("INSERT", f"k{n}", 10 + n, order(f"c{2 + n % 3}", "1")) for n in range(9)]
        batch.insert(4, record("INSERT", "over", 5, order("c1", "0.5")))
        failures = await sink.send(batch)
        assert list(failures) == [4]
        assert not failures[4].retryable
        assert rows(ddb_client, opts["table"]) == {
            ("c1", "all"): (1, Decimal(big)),
            ("c2", "all"): (3, Decimal(3)),
            ("c3", "all"): (3, Decimal(3)),
            ("c4", "all"): (3, Decimal(3)),
        }
    finally:
        await sink.context.aclose()


async def test_a_row_deleted_behind_the_sinks_back_is_reported_not_driven_negative(
    dynamodb_local, ddb_client
):
    opts = options(dynamodb_local.endpoint_url)
    sink = make_sink(opts)
    await sink.start()
    try:
        await deliver(sink, [record("INSERT", "a", 1, order("c1", "5"))])
        ddb_client.delete_item(
            TableName=opts["table"], Key={"group": {"S": "c1"}, "window": {"S": "all"}}
        )
        failures = await sink.send([record("MODIFY", "a", 2, order("c2", "1"), order("c1", "5"))])
        assert list(failures) == [0]
        assert not failures[0].retryable
        assert "fewer than its state rows count in it" in failures[0].reason
        assert rows(ddb_client, opts["table"]) == {}
        assert sample(sink, "fanout_aggregate_anomalies_total", reason="inconsistent_row") == 1
    finally:
        await sink.context.aclose()


async def test_records_it_cannot_apply_are_refused_at_their_index(dynamodb_local):
    sink = make_sink(options(dynamodb_local.endpoint_url))
    good = record("INSERT", "a", 1, order("c1", "1"))
    bad = record("INSERT", "b", 2, order("c1", "1"))
    bad["dynamodb"]["StreamViewType"] = "KEYS_ONLY"
    await sink.start()
    try:
        failures = await sink.send([good, bad])
        assert list(failures) == [1]
        assert not failures[1].retryable
        assert "KEYS_ONLY" in failures[1].reason
    finally:
        await sink.context.aclose()


# -- start-up checks -------------------------------------------------------------------------


async def test_start_creates_both_tables_or_names_what_is_wrong(dynamodb_local, ddb_client):
    opts = options(dynamodb_local.endpoint_url)
    sink = make_sink(opts)
    await sink.start()
    await sink.context.aclose()
    target = ddb_client.describe_table(TableName=opts["table"])["Table"]
    assert target["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert sorted((k["AttributeName"], k["KeyType"]) for k in target["KeySchema"]) == [
        ("group", "HASH"),
        ("window", "RANGE"),
    ]
    state = ddb_client.describe_table(TableName=f"{opts['table']}-fanout-state")["Table"]
    assert state["KeySchema"] == [{"AttributeName": "item", "KeyType": "HASH"}]

    missing = make_sink({**options(dynamodb_local.endpoint_url), "create_table": False})
    with pytest.raises(ConfigError, match="does not exist") as info:
        await missing.start()
    assert info.value.path == "sinks.agg.table"
    await missing.context.aclose()

    wrong = options(dynamodb_local.endpoint_url, create_table=False)
    ddb_client.create_table(
        TableName=wrong["table"],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    sink = make_sink(wrong)
    with pytest.raises(ConfigError, match=r"has the keys pk \(S, HASH\); the sink needs group"):
        await sink.start()
    await sink.context.aclose()


@pytest.mark.parametrize("view", ["NEW_IMAGE", "KEYS_ONLY", "NEW_AND_OLD_IMAGES"])
async def test_start_fails_unless_the_stream_carries_both_images(view, dynamodb_local, ddb_client):
    table = f"src-{uuid.uuid4().hex[:12]}"
    answer = ddb_client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
    )
    endpoint = dynamodb_local.endpoint_url
    for stream in (
        StreamConfig(table=table, region=REGION, endpoint_url=endpoint),
        StreamConfig(
            stream_arn=answer["TableDescription"]["LatestStreamArn"],
            region=REGION,
            endpoint_url=endpoint,
        ),
    ):
        context = SinkContext.standalone("agg", streams={"orders": stream})
        sink = make_sink(options(endpoint), context)
        try:
            if view == "NEW_AND_OLD_IMAGES":
                await sink.start()
            else:
                with pytest.raises(ConfigError) as info:
                    await sink.start()
                assert info.value.path == "streams.orders"
                assert f"StreamViewType {view}" in str(info.value)
                assert "needs NEW_AND_OLD_IMAGES" in str(info.value)
        finally:
            await context.aclose()


async def test_an_unreachable_dynamodb_delays_the_checks_instead_of_failing_start(
    dynamodb_local, caplog
):
    sink = make_sink(options("http://127.0.0.1:9"))
    await sink.start()  # does not raise
    assert any(r.message == "aggregate_unreachable" for r in caplog.records)
    with pytest.raises(SinkUnavailable, match="unreachable"):
        await sink.send([record("INSERT", "a", 1, order("c1", "1"))])
    await sink.context.aclose()


# -- injected faults -------------------------------------------------------------------------


def client_error(code: str, reasons: list[dict[str, Any]] | None = None) -> ClientError:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": code}}
    if reasons is not None:
        response["CancellationReasons"] = reasons
    return ClientError(response, "TransactWriteItems")  # type: ignore[arg-type]


class Faulty:
    """A DynamoDB client whose calls fail as scripted before they reach DynamoDB Local."""

    def __init__(self, client: Any, faults: dict[str, list[Callable[[dict[str, Any]], None]]]):
        self.client = client
        self.faults = faults

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.client, name)

        async def call(**kwargs: Any) -> Any:
            script = self.faults.get(name)
            if script:
                script.pop(0)(kwargs)
            return await real(**kwargs)

        return call


class FaultyAws(AwsClients):
    def __init__(self) -> None:
        super().__init__()
        self.faults: dict[str, list[Callable[[dict[str, Any]], None]]] = {}

    async def client(
        self, service: str, *, region: str | None = None, endpoint_url: str | None = None
    ) -> Any:
        real = await super().client(service, region=region, endpoint_url=endpoint_url)
        return Faulty(real, self.faults) if service == "dynamodb" else real


def conflict(request: dict[str, Any]) -> None:
    reasons = [{"Code": "None"} for _ in request["TransactItems"]]
    reasons[-1] = {"Code": "TransactionConflict", "Message": "conflict"}
    raise client_error("TransactionCanceledException", reasons)


def throttled(request: dict[str, Any]) -> None:
    raise client_error("ProvisionedThroughputExceededException")


async def test_conflicts_are_retried_and_throttling_asks_for_a_pause(dynamodb_local, ddb_client):
    aws = FaultyAws()
    opts = options(dynamodb_local.endpoint_url)
    sink = make_sink(opts, SinkContext.standalone("agg", aws=aws))
    records, current = history(3, items=20, changes=200)
    await sink.start()
    try:
        aws.faults["transact_write_items"] = [conflict, conflict, conflict]
        assert await sink.send(records[:100]) == {}
        assert sample(sink, "fanout_aggregate_conflicts_total") == 3

        aws.faults["transact_write_items"] = [throttled]
        with pytest.raises(SinkUnavailable) as info:
            await sink.send(records[100:])
        assert info.value.retry_after == 1.0
        assert sample(sink, "fanout_aggregate_throttles_total") == 1

        aws.faults["batch_get_item"] = [throttled]
        with pytest.raises(SinkUnavailable):
            await sink.send(records[100:])
        assert sample(sink, "fanout_aggregate_throttles_total") == 2

        # a conflict on every round: left to the delivery layer's retries, as retryable
        aws.faults["transact_write_items"] = [conflict] * 8
        failures = await sink.send(records[100:])
        assert failures
        assert all(f.retryable for f in failures.values())
        await deliver(sink, records[100:])
        assert rows(ddb_client, opts["table"]) == recompute(current, None)
    finally:
        await sink.context.aclose()


async def test_a_write_that_landed_before_its_answer_was_lost_is_absorbed(
    dynamodb_local, ddb_client
):
    aws = FaultyAws()
    opts = options(dynamodb_local.endpoint_url)
    sink = make_sink(opts, SinkContext.standalone("agg", aws=aws))
    await sink.start()
    landed: list[Failure] = []

    def lose_the_answer(request: dict[str, Any]) -> None:
        import boto3

        other = boto3.client("dynamodb", endpoint_url=dynamodb_local.endpoint_url)
        other.transact_write_items(**request)  # it lands ...
        raise client_error("InternalServerError")  # ... and the answer is a 500

    try:
        aws.faults["transact_write_items"] = [lose_the_answer]
        batch = [record("INSERT", "a", 1, order("c1", "5"))]
        with pytest.raises(SinkUnavailable):
            await sink.send(batch)
        assert await sink.send(batch) == {}  # the retry finds it applied
        assert rows(ddb_client, opts["table"]) == {("c1", "all"): (1, Decimal(5))}
        assert sample(sink, "fanout_aggregate_replays_absorbed_total") == 1
        assert not landed
    finally:
        await sink.context.aclose()


# -- a target that is its own source -------------------------------------------------------


async def test_a_target_that_is_its_own_source_skips_the_sinks_own_writes(
    tmp_path: Path, dynamodb_local, ddb_client
):
    # Single-table design: the orders and their totals live in one table.
    table = f"single-{uuid.uuid4().hex[:12]}"
    ddb_client.create_table(
        TableName=table,
        KeySchema=[
            {"AttributeName": "group", "KeyType": "HASH"},
            {"AttributeName": "window", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "group", "AttributeType": "S"},
            {"AttributeName": "window", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    endpoint = dynamodb_local.endpoint_url
    data: dict[str, Any] = {
        "streams": {"single": {"table": table, "endpoint_url": endpoint, "region": REGION}},
        "checkpoints": {"path": str(tmp_path / "fanout.db"), "interval": 0.1},
        "http": {"enabled": False},
        "sinks": {"totals": options(endpoint, table=table, create_table=False)},
    }
    with pytest.raises(ConfigError, match="also the source of stream 'single'"):
        build_config(data)
    data["sinks"]["totals"]["allow_source_target"] = True
    config = build_config(data)
    for n in range(20):
        ddb_client.put_item(
            TableName=table,
            Item={
                "group": {"S": f"order#{n}"},
                "window": {"S": "item"},
                "customer": {"S": f"c{n % 3}"},
                "amount": {"N": str(n)},
            },
        )
    stream_arn = ddb_client.describe_table(TableName=table)["Table"]["LatestStreamArn"]

    def stream_length() -> int:
        import boto3

        streams = boto3.client("dynamodbstreams", endpoint_url=endpoint)
        shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]
        iterator = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        return len(streams.get_records(ShardIterator=iterator, Limit=1000)["Records"])

    def totals() -> dict[str, tuple[str, str]]:
        items = ddb_client.scan(TableName=table, ConsistentRead=True)["Items"]
        return {
            i["group"]["S"]: (i["orders"]["N"], i["revenue"]["N"])
            for i in items
            if i["window"]["S"] == "all"
        }

    def sample_of(run: Any, name: str) -> float:
        return run.worker.metrics.registry.get_sample_value(name, {"sink": "totals"}) or 0.0

    async with running(config) as run:
        # the worker tells the sink which streams feed it (for the view-type check)
        context = run.worker.sinks["totals"].context  # type: ignore[attr-defined]
        assert list(context.streams) == ["single"]
        expected = {"c0": ("7", "63"), "c1": ("7", "70"), "c2": ("6", "57")}
        await wait_async(lambda: totals() == expected, 20, "the totals")
        # The sink's row writes come back through the stream, are recognised by their
        # marker and skipped: only the 20 orders are ever applied, and the stream settles.
        await wait_async(
            lambda: sample_of(run, "fanout_aggregate_own_writes_total") >= 3, 20, "own writes"
        )
        settled = stream_length()
        await anyio.sleep(1.5)
        assert stream_length() == settled
        assert sample_of(run, "fanout_aggregate_writes_total") == 20
        assert sample_of(run, "fanout_aggregate_own_writes_total") == settled - 20
    assert run.code == 0
