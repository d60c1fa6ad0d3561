"""The local services the other tests run against: DynamoDB Local with Streams, and moto."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fanout.testing import dynamodb_local as local

pytestmark = pytest.mark.integration


def read_stream(streams: Any, stream_arn: str, want: int, timeout: float = 10.0) -> list[Any]:
    """All records of every shard from TRIM_HORIZON, polling until `want` have arrived."""
    shards = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    iterators = {
        shard["ShardId"]: streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for shard in shards
    }
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(records) < want and time.monotonic() < deadline:
        for shard_id, iterator in list(iterators.items()):
            if iterator is None:
                continue
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(page["Records"])
            iterators[shard_id] = page.get("NextShardIterator")
        if len(records) < want:
            time.sleep(0.1)
    return records


def test_dynamodb_local_answers(dynamodb_local, ddb_client):
    assert dynamodb_local.endpoint_url.startswith("http://127.0.0.1:")
    assert local.probe(dynamodb_local.endpoint_url)
    assert isinstance(ddb_client.list_tables()["TableNames"], list)


def test_table_has_a_new_and_old_images_stream(ddb_table, ddb_client, ddbstreams_client):
    name, stream_arn = ddb_table(sort_key=True)
    table = ddb_client.describe_table(TableName=name)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    assert table["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    description = ddbstreams_client.describe_stream(StreamArn=stream_arn)["StreamDescription"]
    assert description["TableName"] == name
    assert description["StreamStatus"] == "ENABLED"
    assert len(description["Shards"]) == 1


def test_stream_sees_insert_modify_remove_with_both_images(
    ddb_table, ddb_client, ddbstreams_client
):
    name, stream_arn = ddb_table()
    key = {"pk": {"S": "order-1"}}
    ddb_client.put_item(TableName=name, Item={**key, "status": {"S": "new"}})
    ddb_client.put_item(TableName=name, Item={"pk": {"S": "order-2"}, "n": {"N": "1"}})
    assert ddb_client.get_item(TableName=name, Key=key, ConsistentRead=True)["Item"] == {
        **key,
        "status": {"S": "new"},
    }
    ddb_client.update_item(
        TableName=name,
        Key=key,
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "paid"}},
    )
    ddb_client.delete_item(TableName=name, Key=key)

    records = read_stream(ddbstreams_client, stream_arn, want=4)

    assert [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in records] == [
        ("INSERT", "order-1"),
        ("INSERT", "order-2"),
        ("MODIFY", "order-1"),
        ("REMOVE", "order-1"),
    ]
    insert, _, modify, remove = (r["dynamodb"] for r in records)
    assert "OldImage" not in insert
    assert insert["NewImage"] == {**key, "status": {"S": "new"}}
    assert modify["OldImage"] == {**key, "status": {"S": "new"}}
    assert modify["NewImage"] == {**key, "status": {"S": "paid"}}
    assert remove["OldImage"] == {**key, "status": {"S": "paid"}}
    assert "NewImage" not in remove
    for r in records:
        assert r["eventSource"] == "aws:dynamodb"
        assert r["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert "ApproximateCreationDateTime" in r["dynamodb"]
    sequences = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 4


def test_tables_are_unique_and_deleted_afterwards(ddb_table, ddb_client):
    first, first_arn = ddb_table()
    second, second_arn = ddb_table()
    assert first != second
    assert first_arn != second_arn
    assert {first, second} <= set(ddb_client.list_tables()["TableNames"])
    # A table the test deletes itself does not break the clean-up.
    ddb_client.delete_table(TableName=second)


def test_sqs_round_trip(sqs_queue, sqs_client, moto_server):
    assert moto_server.endpoint_url.startswith("http://127.0.0.1:")
    url = sqs_queue()
    sqs_client.send_message(QueueUrl=url, MessageBody="hello", MessageAttributes={})
    messages = sqs_client.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", [])
    assert [m["Body"] for m in messages] == ["hello"]
    sqs_client.delete_message(QueueUrl=url, ReceiptHandle=messages[0]["ReceiptHandle"])
    again = sqs_client.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    assert again.get("Messages", []) == []


def test_sqs_fifo_queue_keeps_order(sqs_queue, sqs_client):
    url = sqs_queue(fifo=True, ContentBasedDeduplication="true")
    assert url.endswith(".fifo")
    attributes = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    assert attributes["Attributes"]["FifoQueue"] == "true"
    for i in range(5):
        sqs_client.send_message(QueueUrl=url, MessageBody=f"m{i}", MessageGroupId="g")
    bodies = [
        m["Body"]
        for m in sqs_client.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    ]
    assert bodies == [f"m{i}" for i in range(5)]


def test_fetch_is_idempotent_and_reuses_the_cache(dynamodb_local, monkeypatch):
    cache = local.default_cache_dir(Path(__file__).resolve().parents[2])
    emulator = local.fetch(cache)
    jar = emulator / local.JAR
    before = jar.stat()
    # With the emulator cached, fetch() neither needs nor runs npm.
    monkeypatch.setenv("PATH", "")
    started = time.monotonic()
    assert local.fetch(cache) == emulator
    assert local.fetch(cache, npm="no-such-npm") == emulator
    assert time.monotonic() - started < 1.0
    after = jar.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not list(cache.glob(".fetch-*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_start_runs_until_signalled(tmp_path, sig):
    repo = Path(__file__).resolve().parents[2]
    cache = local.default_cache_dir(repo)
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fanout.testing.dynamodb_local",
                "--cache-dir",
                str(cache),
                "start",
            ],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), stderr.read_text()
        assert local.probe(url)
        match = re.search(r"\(pid (\d+),", stderr.read_text())
        assert match, stderr.read_text()
        java = int(match.group(1))
        proc.send_signal(sig)
        assert proc.wait(30) == 0, stderr.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    with pytest.raises(ProcessLookupError):
        os.kill(java, 0)
    assert not local.probe(url, timeout=0.5)
