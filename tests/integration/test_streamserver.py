"""The scripted DynamoDB Streams server, exercised through real clients.

boto3 (synchronous, against a server in a background thread) and aiobotocore (in the test's
event loop) must see the AWS wire protocol: shapes, pagination, iterator types, closed-shard
ends and every scripted fault mapped to the right botocore exception.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from fanout.testing.streamserver import Change, Shard, StreamServer, realistic_changes

if TYPE_CHECKING:
    from aiobotocore.session import ClientCreatorContext
    from types_aiobotocore_dynamodbstreams import DynamoDBStreamsClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1})
CREDENTIALS: dict[str, Any] = {
    "region_name": "us-east-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}


def aio_streams(endpoint_url: str) -> ClientCreatorContext[DynamoDBStreamsClient]:
    """An aiobotocore DynamoDB Streams client (no retries) for ``async with``."""
    return get_session().create_client(
        "dynamodbstreams",
        region_name="us-east-1",
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=AioConfig(retries={"mode": "standard", "total_max_attempts": 1}),
    )


def keys(n: int) -> dict[str, Any]:
    return {"pk": {"S": f"item-{n}"}, "sk": {"S": "v"}}


def image(n: int, **extra: Any) -> dict[str, Any]:
    return {**keys(n), "n": {"N": str(n)}, **extra}


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[StreamServer]:
    """A server in a background thread, for synchronous boto3 clients."""
    with StreamServer(seed=7).run_in_thread() as srv:
        yield srv


@pytest.fixture
def streams(server: StreamServer) -> Iterator[Any]:
    client = boto3.client(
        "dynamodbstreams", endpoint_url=server.endpoint_url, config=NO_RETRY, **CREDENTIALS
    )
    yield client
    client.close()


@pytest.fixture
def dynamodb(server: StreamServer) -> Iterator[Any]:
    client = boto3.client(
        "dynamodb", endpoint_url=server.endpoint_url, config=NO_RETRY, **CREDENTIALS
    )
    yield client
    client.close()


@pytest.fixture
async def aserver() -> AsyncIterator[StreamServer]:
    """A server in the test's own event loop."""
    async with StreamServer(seed=7) as srv:
        yield srv


@pytest.fixture
async def astreams(aserver: StreamServer) -> AsyncIterator[DynamoDBStreamsClient]:
    async with aio_streams(aserver.endpoint_url) as client:
        yield client


def iterator(client: Any, shard: Shard, kind: str = "TRIM_HORIZON", **extra: Any) -> str:
    answer = client.get_shard_iterator(
        StreamArn=shard.stream.arn, ShardId=shard.shard_id, ShardIteratorType=kind, **extra
    )
    return str(answer["ShardIterator"])


def drain(client: Any, start: str) -> tuple[list[dict[str, Any]], list[int]]:
    """Read a shard to its end; return the records and the size of every page."""
    records: list[dict[str, Any]] = []
    pages: list[int] = []
    it: str | None = start
    while it is not None:
        answer = client.get_records(ShardIterator=it)
        records.extend(answer["Records"])
        pages.append(len(answer["Records"]))
        it = answer.get("NextShardIterator")
    return records, pages


def seqs(records: Sequence[Any]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in records]


# -- DescribeStream ------------------------------------------------------------------------


def test_describe_stream_pages_through_250_shards(server: StreamServer, streams: Any) -> None:
    stream = server.add_stream("Orders", shards=250)
    desc = streams.describe_stream(StreamArn=stream.arn)["StreamDescription"]
    assert desc["StreamArn"] == stream.arn
    assert desc["StreamStatus"] == "ENABLED"
    assert desc["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert desc["TableName"] == "Orders"
    assert desc["StreamLabel"] == stream.label
    assert isinstance(desc["CreationRequestDateTime"], datetime)
    assert desc["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    pages = [desc["Shards"]]
    while "LastEvaluatedShardId" in desc:
        assert desc["LastEvaluatedShardId"] == desc["Shards"][-1]["ShardId"]
        desc = streams.describe_stream(
            StreamArn=stream.arn, ExclusiveStartShardId=desc["LastEvaluatedShardId"]
        )["StreamDescription"]
        pages.append(desc["Shards"])
    assert [len(p) for p in pages] == [100, 100, 50]
    ids = [s["ShardId"] for page in pages for s in page]
    assert ids == sorted(ids) == [s.shard_id for s in stream.shards]
    assert all(s.startswith("shardId-") and len(s) == 37 for s in ids)
    first = pages[0][0]
    assert "EndingSequenceNumber" not in first["SequenceNumberRange"]
    assert first["SequenceNumberRange"]["StartingSequenceNumber"].isdecimal()

    after_last = streams.describe_stream(StreamArn=stream.arn, ExclusiveStartShardId=ids[-1])
    assert after_last["StreamDescription"]["Shards"] == []
    assert "LastEvaluatedShardId" not in after_last["StreamDescription"]

    small = streams.describe_stream(StreamArn=stream.arn, Limit=7)["StreamDescription"]
    assert len(small["Shards"]) == 7
    assert server.calls_for("DescribeStream") == 5


def test_child_shards_filter(server: StreamServer, streams: Any) -> None:
    stream = server.add_stream("Orders", shards=2)
    first, second = stream.shards
    server.put(first, [Change("INSERT", keys(1), image(1))])
    child = server.rollover(first)
    left, right = server.split(second)

    def children(of: Shard) -> list[dict[str, Any]]:
        desc = streams.describe_stream(
            StreamArn=stream.arn, ShardFilter={"Type": "CHILD_SHARDS", "ShardId": of.shard_id}
        )["StreamDescription"]
        return list(desc["Shards"])

    assert [s["ShardId"] for s in children(first)] == [child.shard_id]
    assert [s["ShardId"] for s in children(second)] == [left.shard_id, right.shard_id]
    assert all(s["ParentShardId"] == second.shard_id for s in children(second))
    assert children(child) == []

    everything = streams.describe_stream(StreamArn=stream.arn)["StreamDescription"]["Shards"]
    ranges = {s["ShardId"]: s["SequenceNumberRange"] for s in everything}
    parent_end = int(ranges[first.shard_id]["EndingSequenceNumber"])
    assert parent_end == int(first.sequence_numbers[-1])
    assert int(ranges[child.shard_id]["StartingSequenceNumber"]) > parent_end
    assert "EndingSequenceNumber" in ranges[second.shard_id]
    assert "EndingSequenceNumber" not in ranges[left.shard_id]


# -- GetShardIterator / GetRecords ---------------------------------------------------------


def test_iterator_types(server: StreamServer, streams: Any) -> None:
    stream = server.add_stream("Orders")
    shard = stream.shards[0]
    written = server.put(shard, [Change("INSERT", keys(i), image(i)) for i in range(6)])
    assert written == sorted(written, key=int)
    assert all(s.isdecimal() and len(s) >= 21 for s in written)

    assert seqs(streams.get_records(ShardIterator=iterator(streams, shard))["Records"]) == written

    latest = iterator(streams, shard, "LATEST")
    answer = streams.get_records(ShardIterator=latest)
    assert answer["Records"] == []
    assert "NextShardIterator" in answer
    later = server.put(shard, [Change("MODIFY", keys(0), image(0), image(0))])
    answer = streams.get_records(ShardIterator=answer["NextShardIterator"])
    assert seqs(answer["Records"]) == later

    at = iterator(streams, shard, "AT_SEQUENCE_NUMBER", SequenceNumber=written[3])
    assert seqs(streams.get_records(ShardIterator=at)["Records"]) == [*written[3:], *later]
    after = iterator(streams, shard, "AFTER_SEQUENCE_NUMBER", SequenceNumber=written[3])
    assert seqs(streams.get_records(ShardIterator=after)["Records"]) == [*written[4:], *later]
    start = iterator(
        streams,
        shard,
        "AT_SEQUENCE_NUMBER",
        SequenceNumber=str(shard.starting_sequence),
    )
    assert len(streams.get_records(ShardIterator=start)["Records"]) == 7

    # sequence numbers leave gaps: a number between two records starts at the next one
    between = str(int(written[2]) + 1)
    at_gap = iterator(streams, shard, "AT_SEQUENCE_NUMBER", SequenceNumber=between)
    assert seqs(streams.get_records(ShardIterator=at_gap)["Records"])[0] == written[3]

    stamp = iterator(streams, shard, "AT_TIMESTAMP", Timestamp=server.now() - 60)
    assert len(streams.get_records(ShardIterator=stamp)["Records"]) == 7

    # iterators are opaque strings that start with the stream ARN
    assert latest.startswith(stream.arn + "|")
    assert latest != iterator(streams, shard, "LATEST")
    assert server.calls_for("GetShardIterator", shard) == 8


def test_iterator_argument_validation(server: StreamServer, streams: Any) -> None:
    shard = server.add_stream("Orders").shards[0]
    (seq,) = server.put(shard, [Change("INSERT", keys(1), image(1))])
    for kind, extra in [
        ("AT_SEQUENCE_NUMBER", {}),
        ("LATEST", {"SequenceNumber": seq}),
        ("SOMEWHERE", {}),
    ]:
        with pytest.raises(ClientError) as info:
            iterator(streams, shard, kind, **extra)
        assert info.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as info:
        streams.get_records(ShardIterator="not-an-iterator-at-all")
    assert info.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError, match="less than or equal to 1000") as info:
        streams.get_records(ShardIterator=iterator(streams, shard), Limit=1001)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as info:
        streams.describe_stream(StreamArn="x" * 40)
    assert info.value.response["Error"]["Code"] == "ValidationException"


def test_records_on_the_wire(server: StreamServer, streams: Any) -> None:
    stream = server.add_stream("Orders")
    shard = stream.shards[0]
    server.put(
        shard,
        [
            Change("INSERT", keys(1), image(1)),
            Change("MODIFY", keys(1), image(1, tag={"S": "new"}), image(1)),
            Change("REMOVE", keys(1), None, image(1), ttl=True),
        ],
    )
    server.put(shard, {"eventName": "INSERT", "dynamodb": {"Keys": keys(2)}})
    insert, modify, remove, raw = streams.get_records(ShardIterator=iterator(streams, shard))[
        "Records"
    ]
    assert insert["eventName"] == "INSERT"
    assert insert["eventVersion"] == "1.1"
    assert insert["eventSource"] == "aws:dynamodb"
    assert insert["awsRegion"] == "us-east-1"
    assert len(insert["eventID"]) == 32
    data = insert["dynamodb"]
    assert isinstance(data["ApproximateCreationDateTime"], datetime)
    assert data["Keys"] == keys(1)
    assert data["NewImage"] == image(1)
    assert "OldImage" not in data
    assert data["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert data["SizeBytes"] > 0
    assert modify["dynamodb"]["NewImage"]["tag"] == {"S": "new"}
    assert modify["dynamodb"]["OldImage"] == image(1)
    assert "NewImage" not in remove["dynamodb"]
    assert remove["userIdentity"] == {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
    assert raw["dynamodb"]["Keys"] == keys(2)

    keys_only = server.add_stream("Events", "KEYS_ONLY")
    server.put(keys_only, realistic_changes(5))
    only = [r for s in keys_only.shards for r in s.records()]
    assert len(only) == 5
    assert all(set(r["dynamodb"]) >= {"Keys", "SequenceNumber"} for r in only)
    assert not any("NewImage" in r["dynamodb"] or "OldImage" in r["dynamodb"] for r in only)


def test_pages_limit_and_size_cap(server: StreamServer, streams: Any) -> None:
    shard = server.add_stream("Orders").shards[0]
    server.fill(shard, 2500)
    records, pages = [], []
    answer = streams.get_records(ShardIterator=iterator(streams, shard))
    while answer["Records"]:
        records.extend(answer["Records"])
        pages.append(len(answer["Records"]))
        answer = streams.get_records(ShardIterator=answer["NextShardIterator"])
    assert pages == [1000, 1000, 500]
    assert "NextShardIterator" in answer  # open shard: an empty page and a way on
    assert seqs(records) == shard.sequence_numbers
    assert len({r["eventID"] for r in records}) == 2500
    assert len({r["dynamodb"]["Keys"]["pk"]["S"] for r in records}) == 2500

    limited = streams.get_records(ShardIterator=iterator(streams, shard), Limit=10)
    assert len(limited["Records"]) == 10
    assert server.records_served[shard.shard_id] == 2510

    big = server.add_stream("Blobs").shards[0]
    blob = {"S": "x" * 300_000}
    server.put(big, [Change("INSERT", keys(i), image(i, blob=blob)) for i in range(8)])
    server.close_shard(big)
    _, pages = drain(streams, iterator(streams, big))
    assert pages == [3, 3, 2]  # three 300 KB records fit in 1 MB, a fourth does not


def test_page_size_setting_caps_pages(streams: Any, server: StreamServer) -> None:
    server.page_size = 100
    shard = server.add_stream("Orders").shards[0]
    server.fill(shard, 250)
    server.close_shard(shard)
    records, pages = drain(streams, iterator(streams, shard))
    assert pages == [100, 100, 50]
    assert len(records) == 250


def test_closed_shard_end_has_no_next_iterator(server: StreamServer, streams: Any) -> None:
    shard = server.add_stream("Orders").shards[0]
    server.fill(shard, 1500)
    it = iterator(streams, shard)
    server.close_shard(shard)
    first = streams.get_records(ShardIterator=it)
    assert len(first["Records"]) == 1000
    last = streams.get_records(ShardIterator=first["NextShardIterator"])
    assert len(last["Records"]) == 500
    assert "NextShardIterator" not in last  # the page that drains a closed shard ends it

    empty = server.add_stream("Quiet").shards[0]
    latest = iterator(streams, empty, "LATEST")
    server.close_shard(empty)
    answer = streams.get_records(ShardIterator=latest)
    assert answer["Records"] == []
    assert "NextShardIterator" not in answer


def test_empty_pages_in_the_middle_of_a_shard(server: StreamServer, streams: Any) -> None:
    shard = server.add_stream("Orders").shards[0]
    server.fill(shard, 30)
    server.inject_empty_pages(shard, 2)
    server.fill(shard, 20)
    server.inject_empty_pages(shard, 1, at=10)
    server.close_shard(shard)
    records, pages = drain(streams, iterator(streams, shard))
    # the page before index 10 stops there; index 10 answers one empty page, 30 two
    assert pages == [10, 0, 20, 0, 0, 20]
    assert seqs(records) == shard.sequence_numbers
    assert server.calls_for("GetRecords", shard) == 6


# -- faults --------------------------------------------------------------------------------


def _expired_by_age(server: StreamServer, streams: Any, shard: Shard) -> Callable[[], Any]:
    it = iterator(streams, shard)
    server.advance(server.iterator_ttl + 1)
    return lambda: streams.get_records(ShardIterator=it)


def _expired_on_demand(server: StreamServer, streams: Any, shard: Shard) -> Callable[[], Any]:
    it = iterator(streams, shard)
    server.expire_iterators()
    return lambda: streams.get_records(ShardIterator=it)


def _throttled(server: StreamServer, streams: Any, shard: Shard) -> Callable[[], Any]:
    it = iterator(streams, shard)
    server.throttle("GetRecords", shard=shard)
    return lambda: streams.get_records(ShardIterator=it)


def _internal_error(server: StreamServer, streams: Any, shard: Shard) -> Callable[[], Any]:
    server.fail("DescribeStream", "InternalServerError")
    return lambda: streams.describe_stream(StreamArn=shard.stream.arn)


def _unknown_shard(server: StreamServer, streams: Any, shard: Shard) -> Callable[[], Any]:
    return lambda: streams.get_shard_iterator(
        StreamArn=shard.stream.arn,
        ShardId="shardId-00000000000000000000-00000000",
        ShardIteratorType="LATEST",
    )


def _removed_shard(server: StreamServer, streams: Any, shard: Shard) -> Callable[[], Any]:
    it = iterator(streams, shard)
    server.remove_shard(shard)
    return lambda: streams.get_records(ShardIterator=it)


def _gone_stream(server: StreamServer, streams: Any, shard: Shard) -> Callable[[], Any]:
    server.delete_stream(shard.stream)
    return lambda: streams.describe_stream(StreamArn=shard.stream.arn)


def _trimmed_iterator(server: StreamServer, streams: Any, shard: Shard) -> Callable[[], Any]:
    it = iterator(streams, shard)
    server.trim(shard, shard.sequence_numbers[1])
    return lambda: streams.get_records(ShardIterator=it)


def _trimmed_sequence(server: StreamServer, streams: Any, shard: Shard) -> Callable[[], Any]:
    first = shard.sequence_numbers[0]
    server.trim(shard, first)
    return lambda: iterator(streams, shard, "AT_SEQUENCE_NUMBER", SequenceNumber=first)


@pytest.mark.parametrize(
    ("setup", "code", "status"),
    [
        (_expired_by_age, "ExpiredIteratorException", 400),
        (_expired_on_demand, "ExpiredIteratorException", 400),
        (_throttled, "LimitExceededException", 400),
        (_internal_error, "InternalServerError", 500),
        (_unknown_shard, "ResourceNotFoundException", 400),
        (_removed_shard, "ResourceNotFoundException", 400),
        (_gone_stream, "ResourceNotFoundException", 400),
        (_trimmed_iterator, "TrimmedDataAccessException", 400),
        (_trimmed_sequence, "TrimmedDataAccessException", 400),
    ],
)
def test_errors_map_to_botocore_exceptions(
    server: StreamServer,
    streams: Any,
    setup: Callable[[StreamServer, Any, Shard], Callable[[], Any]],
    code: str,
    status: int,
) -> None:
    shard = server.add_stream("Orders").shards[0]
    server.put(shard, realistic_changes(3))
    action = setup(server, streams, shard)
    error_class = getattr(streams.exceptions, code)
    with pytest.raises(error_class) as info:
        action()
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert info.value.response["ResponseMetadata"]["RequestId"]
    assert sum(n for (_op, c), n in server.errors.items() if c == code) == 1


def test_plain_503_and_validation_errors(server: StreamServer, streams: Any) -> None:
    stream = server.add_stream("Orders")
    server.fail("ListStreams", 503)
    with pytest.raises(ClientError) as info:
        streams.list_streams()
    assert info.value.response["Error"]["Code"] == "503"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503

    server.fail("ListStreams", "ThrottlingException")
    with pytest.raises(ClientError) as info:
        streams.list_streams()
    assert info.value.response["Error"]["Code"] == "ThrottlingException"

    with pytest.raises(ClientError) as info:
        streams.describe_stream(StreamArn=stream.arn, Limit=101)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert streams.list_streams()["Streams"][0]["StreamArn"] == stream.arn


def test_requests_must_be_signed(server: StreamServer) -> None:
    server.add_stream("Orders")
    unsigned = boto3.client(
        "dynamodbstreams",
        endpoint_url=server.endpoint_url,
        config=NO_RETRY.merge(Config(signature_version=UNSIGNED)),
        **CREDENTIALS,
    )
    try:
        with pytest.raises(ClientError) as info:
            unsigned.list_streams()
        assert info.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"
    finally:
        unsigned.close()


def test_connection_reset(server: StreamServer, streams: Any) -> None:
    server.add_stream("Orders")
    server.fail("ListStreams", "reset")
    with pytest.raises(ConnectionClosedError):
        streams.list_streams()
    assert streams.list_streams()["Streams"]


def test_retries_ride_through_counted_faults(server: StreamServer) -> None:
    stream = server.add_stream("Orders")
    fault = server.fail("DescribeStream", "InternalServerError", times=1)
    client = boto3.client(
        "dynamodbstreams",
        endpoint_url=server.endpoint_url,
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
        **CREDENTIALS,
    )
    try:
        assert client.describe_stream(StreamArn=stream.arn)["StreamDescription"]["Shards"]
    finally:
        client.close()
    assert fault.fired == 1
    assert server.calls_for("DescribeStream") == 2


# -- tables and stream lifecycle -----------------------------------------------------------


def test_describe_table_follows_stream_reenable(
    server: StreamServer, streams: Any, dynamodb: Any
) -> None:
    old = server.add_stream("Orders", "NEW_IMAGE", shards=2)
    table = dynamodb.describe_table(TableName="Orders")["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["LatestStreamArn"] == old.arn
    assert table["LatestStreamLabel"] == old.label
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    assert table["KeySchema"][0] == {"AttributeName": "pk", "KeyType": "HASH"}

    server.disable_stream("Orders", gone_after=3600)
    table = dynamodb.describe_table(TableName="Orders")["Table"]
    assert table["LatestStreamArn"] == old.arn
    assert "StreamSpecification" not in table  # DynamoDB drops it for a disabled stream

    server.advance(1)
    new = server.enable_stream("Orders", "NEW_AND_OLD_IMAGES")
    assert new.arn != old.arn
    assert new.arn.startswith("arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/")
    assert dynamodb.describe_table(TableName="Orders")["Table"]["LatestStreamArn"] == new.arn

    listed = streams.list_streams(TableName="Orders")["Streams"]
    assert [s["StreamArn"] for s in listed] == [old.arn, new.arn]
    desc = streams.describe_stream(StreamArn=old.arn)["StreamDescription"]
    assert desc["StreamStatus"] == "DISABLED"
    assert all("EndingSequenceNumber" in s["SequenceNumberRange"] for s in desc["Shards"])

    server.advance(3600)
    with pytest.raises(streams.exceptions.ResourceNotFoundException):
        streams.describe_stream(StreamArn=old.arn)
    assert [s["StreamArn"] for s in streams.list_streams()["Streams"]] == [new.arn]
    with pytest.raises(dynamodb.exceptions.ResourceNotFoundException):
        dynamodb.describe_table(TableName="Missing")


def test_list_streams_pages(server: StreamServer, streams: Any) -> None:
    arns = [server.add_stream(f"T{i:02d}").arn for i in range(5)]
    seen: list[str] = []
    answer = streams.list_streams(Limit=2)
    while True:
        seen.extend(s["StreamArn"] for s in answer["Streams"])
        if "LastEvaluatedStreamArn" not in answer:
            break
        answer = streams.list_streams(
            Limit=2, ExclusiveStartStreamArn=answer["LastEvaluatedStreamArn"]
        )
    assert seen == arns
    assert streams.list_streams(TableName="T03")["Streams"][0]["TableName"] == "T03"


def test_retention_trims_old_records(streams: Any, server: StreamServer) -> None:
    server.retention = 3600
    server.iterator_ttl = 7200
    shard = server.add_stream("Orders").shards[0]
    server.put(shard, [Change("INSERT", keys(i), image(i)) for i in range(3)])
    old_iterator = iterator(streams, shard)
    server.advance(1800)
    fresh = server.put(shard, [Change("INSERT", keys(9), image(9))])
    server.advance(1801)
    assert seqs(streams.get_records(ShardIterator=iterator(streams, shard))["Records"]) == fresh
    with pytest.raises(streams.exceptions.TrimmedDataAccessException):
        streams.get_records(ShardIterator=old_iterator)
    assert shard.trimmed == 3


# -- aiobotocore, in the test's loop -------------------------------------------------------


async def _drain_async(client: DynamoDBStreamsClient, stream_arn: str, shard_id: str) -> list[Any]:
    answer = await client.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )
    it: str | None = answer["ShardIterator"]
    records: list[Any] = []
    while it is not None:
        page = await client.get_records(ShardIterator=it)
        records.extend(page["Records"])
        it = page.get("NextShardIterator")
    return records


async def test_aiobotocore_follows_lineage(
    aserver: StreamServer, astreams: DynamoDBStreamsClient
) -> None:
    stream = aserver.add_stream("Orders")
    parent = stream.shards[0]
    before = aserver.put(parent, realistic_changes(5))
    child = aserver.rollover(parent)
    after = aserver.put(child, realistic_changes(5, start=5))
    aserver.close_shard(child)

    desc = (await astreams.describe_stream(StreamArn=stream.arn))["StreamDescription"]
    roots = [s["ShardId"] for s in desc["Shards"] if "ParentShardId" not in s]
    assert roots == [parent.shard_id]
    read = await _drain_async(astreams, stream.arn, parent.shard_id)
    kids = await astreams.describe_stream(
        StreamArn=stream.arn, ShardFilter={"Type": "CHILD_SHARDS", "ShardId": parent.shard_id}
    )
    (kid,) = kids["StreamDescription"]["Shards"]
    read += await _drain_async(astreams, stream.arn, kid["ShardId"])
    assert seqs(read) == before + after
    assert [int(s) for s in seqs(read)] == sorted(int(s) for s in seqs(read))
    assert aserver.calls_for("GetRecords", parent) == 1
    assert aserver.calls_for("GetRecords", child) == 1
    assert aserver.calls["DescribeStream"] == 2


async def test_fault_counts_after_and_seeded_probability(
    aserver: StreamServer, astreams: DynamoDBStreamsClient
) -> None:
    stream = aserver.add_stream("Orders")
    fault = aserver.fail("DescribeStream", "InternalServerError", times=2, after=1)
    outcomes = []
    for _ in range(4):
        try:
            await astreams.describe_stream(StreamArn=stream.arn)
            outcomes.append("ok")
        except astreams.exceptions.InternalServerError:
            outcomes.append("500")
    assert outcomes == ["ok", "500", "500", "ok"]
    assert fault.fired == 2


async def _throttle_pattern(seed: int) -> list[bool]:
    """Which of 30 ListStreams calls a 50% throttle hits, on a fresh server seeded ``seed``."""
    async with StreamServer(seed=seed) as srv:
        srv.throttle("ListStreams", times=None, probability=0.5)
        async with aio_streams(srv.endpoint_url) as client:
            hits = []
            for _ in range(30):
                try:
                    await client.list_streams()
                    hits.append(False)
                except client.exceptions.LimitExceededException:
                    hits.append(True)
            return hits


async def test_probability_faults_are_seeded() -> None:
    first, again, other = [await _throttle_pattern(seed) for seed in (3, 3, 4)]
    assert first == again
    assert first != other
    assert 5 < sum(first) < 25


async def test_slow_responses(aserver: StreamServer, astreams: DynamoDBStreamsClient) -> None:
    aserver.add_stream("Orders")
    aserver.slow("ListStreams", 0.3, times=1)
    started = time.perf_counter()
    await astreams.list_streams()
    assert time.perf_counter() - started >= 0.3
    started = time.perf_counter()
    await astreams.list_streams()
    assert time.perf_counter() - started < 0.3


async def test_discovery_fails_part_way(
    aserver: StreamServer, astreams: DynamoDBStreamsClient
) -> None:
    stream = aserver.add_stream("Orders", shards=150)
    aserver.fail("DescribeStream", "InternalServerError", page=1)
    first = (await astreams.describe_stream(StreamArn=stream.arn))["StreamDescription"]
    assert len(first["Shards"]) == 100
    with pytest.raises(astreams.exceptions.InternalServerError):
        await astreams.describe_stream(
            StreamArn=stream.arn, ExclusiveStartShardId=first["LastEvaluatedShardId"]
        )
    second = await astreams.describe_stream(
        StreamArn=stream.arn, ExclusiveStartShardId=first["LastEvaluatedShardId"]
    )
    assert len(second["StreamDescription"]["Shards"]) == 50


async def test_aiobotocore_error_classes(
    aserver: StreamServer, astreams: DynamoDBStreamsClient
) -> None:
    shard = aserver.add_stream("Orders").shards[0]
    aserver.put(shard, realistic_changes(2))
    answer = await astreams.get_shard_iterator(
        StreamArn=shard.stream.arn, ShardId=shard.shard_id, ShardIteratorType="TRIM_HORIZON"
    )
    it = answer["ShardIterator"]
    aserver.throttle("GetRecords")
    with pytest.raises(astreams.exceptions.LimitExceededException):
        await astreams.get_records(ShardIterator=it)
    aserver.expire_iterators(shard)
    with pytest.raises(astreams.exceptions.ExpiredIteratorException):
        await astreams.get_records(ShardIterator=it)


async def test_in_loop_and_thread_servers_coexist(aserver: StreamServer) -> None:
    stream = aserver.add_stream("Orders")
    with StreamServer().run_in_thread() as other:
        assert other.endpoint_url != aserver.endpoint_url
        other_stream = other.add_stream("Orders")
        assert await asyncio.to_thread(lambda: other.stream("Orders")) is other_stream
    assert aserver.stream(stream.arn) is stream


# -- the standalone process ----------------------------------------------------------------


def test_standalone_process_serves_prebuilt_shards() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fanout.testing.streamserver",
            "--port",
            "0",
            "--shards",
            "2",
            "--records-per-shard",
            "1500",
            "--page-size",
            "1000",
            "--closed",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    try:
        url = process.stdout.readline().strip()
        arn = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        client = boto3.client("dynamodbstreams", endpoint_url=url, config=NO_RETRY, **CREDENTIALS)
        try:
            shards = client.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
            assert len(shards) == 2
            total = 0
            for shard in shards:
                it = client.get_shard_iterator(
                    StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
                records, pages = drain(client, it)
                assert pages == [1000, 500]
                total += len(records)
            assert total == 3000
        finally:
            client.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
    assert process.returncode == 0
