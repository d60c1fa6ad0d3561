"""FIFO notification sinks in a running worker: per-key order across parallel batches (an
in-process worker on the stream server), and no duplicates after a SIGKILL and restart (a
worker process on DynamoDB Local), both delivering to moto's SQS and SNS."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from fanout.config import build_config
from fanout.testing.streamserver import Change, StreamServer
from tests.integration.notify_kit import bodies, drain
from tests.integration.process import WorkerProcess, checkpoint, read_lines, wait_for
from tests.integration.shardkit import running
from tests.integration.shardkit import wait_for as wait_until

pytestmark = pytest.mark.integration

LIMIT = 4096  # the queue's and the topic's message size limit in these tests


def queue_count(sqs_client: Any, url: str) -> int:
    answer = sqs_client.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(answer["Attributes"]["ApproximateNumberOfMessages"])


def change(key: str, version: int, pad: int = 0) -> Change:
    keys = {"pk": {"S": key}}
    image = {**keys, "v": {"N": str(version)}}
    if pad:
        image["pad"] = {"S": "x" * pad}
    return Change("MODIFY", keys, image, None)


def versions_by_key(messages: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Per item key, the versions in the order the queue holds them."""
    found: dict[str, list[int]] = defaultdict(list)
    for body in bodies(messages):
        found[body["keys"]["pk"]].append(int(body["new"]["v"]))
    return found


async def test_fifo_order_per_key_holds_across_parallel_batches(
    tmp_path: Path, moto_server, sqs_queue, sqs_client, sns_topic
):
    endpoint = moto_server.endpoint_url
    queue = sqs_queue(fifo=True, MaximumMessageSize=str(LIMIT))
    topic_queue = sqs_queue(fifo=True)
    topic = sns_topic(fifo=True, queue_url=topic_queue)
    keys, versions = [f"k{i:02d}" for i in range(24)], 6
    lanes = {
        "parallelization_factor": 4,  # four batches per shard in flight at once
        "batch_size": 5,
        "retry": {"initial_backoff": 0.01, "max_backoff": 0.1},
    }
    async with StreamServer() as server:
        stream = server.add_stream("Orders", shards=2)
        rng = random.Random(7)
        for version in range(1, versions + 1):
            batch = [change(k, version) for k in rng.sample(keys, len(keys))]
            server.put(stream, batch)
        server.put(stream, [change("big", 1, pad=LIMIT)])  # too large for a message
        config = build_config(
            {
                "streams": {
                    "orders": {
                        "stream_arn": stream.arn,
                        "endpoint_url": server.endpoint_url,
                        "region": "us-east-1",
                        "max_idle_interval": "100ms",
                    }
                },
                "checkpoints": {"path": str(tmp_path / "fanout.db"), "interval": "100ms"},
                "http": {"enabled": False},
                "shutdown_grace": 5,
                "sinks": {
                    "queue": {
                        "type": "sqs",
                        "queue_url": queue,
                        "endpoint_url": endpoint,
                        **lanes,
                        "dead_letter": {"type": "file", "path": str(tmp_path / "dlq-queue.jsonl")},
                    },
                    "topic": {
                        "type": "sns",
                        "topic_arn": topic,
                        "endpoint_url": endpoint,
                        "max_message_bytes": LIMIT,
                        **lanes,
                        "dead_letter": {"type": "file", "path": str(tmp_path / "dlq-topic.jsonl")},
                    },
                },
            }
        )
        expected = len(keys) * versions
        async with running(config):
            await wait_until(
                lambda: (
                    queue_count(sqs_client, queue) == expected
                    and queue_count(sqs_client, topic_queue) == expected
                    and all((tmp_path / f"dlq-{s}.jsonl").exists() for s in ("queue", "topic"))
                ),
                60,
                "every message and both dead letters",
            )
    for url in (queue, topic_queue):
        order = versions_by_key(drain(sqs_client, url))
        assert order == {k: list(range(1, versions + 1)) for k in keys}, url
    for sink in ("queue", "topic"):
        (entry,) = read_lines(tmp_path / f"dlq-{sink}.jsonl")
        assert entry["record"]["dynamodb"]["Keys"] == {"pk": {"S": "big"}}
        assert entry["error"]["class"] == "Rejected"
        assert entry["error"]["message"].startswith("MessageTooLarge: message of ")
        assert entry["error"]["message"].endswith(f"exceeds the {LIMIT}-byte limit")
        assert entry["attempts"] == 1


def write_config(
    tmp_path: Path, table: str, ddb_endpoint: str, moto: str, queue: str, topic: str
) -> Path:
    config = tmp_path / "fanout.yaml"
    config.write_text(
        f"""
streams:
  orders: {{table: {table}, endpoint_url: "{ddb_endpoint}", region: us-east-1,
            max_idle_interval: 200ms}}
# No checkpoint is written before the kill: the restart replays everything sent before it.
checkpoints: {{path: "{tmp_path}/fanout.db", interval: 1h}}
http: {{enabled: false}}
shutdown_grace: 10s
sinks:
  queue: {{type: sqs, queue_url: "{queue}", endpoint_url: "{moto}", format: raw,
           batch_size: 10}}
  topic: {{type: sns, topic_arn: "{topic}", endpoint_url: "{moto}", format: raw,
           batch_size: 10}}
  audit: {{type: file, path: "{tmp_path}/audit.jsonl"}}
"""
    )
    return config


def test_a_replay_after_sigkill_is_not_delivered_twice(
    tmp_path: Path,
    monkeypatch,
    dynamodb_local,
    ddb_table,
    ddb_client,
    moto_server,
    sqs_queue,
    sqs_client,
    sns_topic,
):
    from moto.sqs.models import SQSBackend

    # Count what reaches moto's queues, duplicates included (moto drops a duplicate id
    # inside its five-minute window, as SQS does).
    sent: Counter[tuple[str, str]] = Counter()
    send_message = SQSBackend.send_message

    def counting(self: Any, queue_name: str, message_body: str, **options: Any) -> Any:
        sent[(queue_name, str(options.get("deduplication_id")))] += 1
        return send_message(self, queue_name, message_body, **options)

    monkeypatch.setattr(SQSBackend, "send_message", counting)

    table, _ = ddb_table()
    queue = sqs_queue(fifo=True)
    topic_queue = sqs_queue(fifo=True)
    topic = sns_topic(fifo=True, queue_url=topic_queue)
    total, keys = 120, 20
    rng = random.Random(3)
    versions: dict[str, int] = {}
    for _ in range(total):
        key = f"k{rng.randrange(keys)}"
        versions[key] = versions.get(key, 0) + 1
        ddb_client.put_item(
            TableName=table, Item={"pk": {"S": key}, "v": {"N": str(versions[key])}}
        )
    config = write_config(
        tmp_path, table, dynamodb_local.endpoint_url, moto_server.endpoint_url, queue, topic
    )
    audit, log = tmp_path / "audit.jsonl", tmp_path / "worker.log"

    worker = WorkerProcess(config, tmp_path / "out.jsonl", log)
    wait_for(lambda: queue_count(sqs_client, queue) >= 20, 60, "messages before the kill")
    worker.kill()
    before_kill = queue_count(sqs_client, queue)
    assert checkpoint(tmp_path / "fanout.db") == 0

    worker = WorkerProcess(config, tmp_path / "out.jsonl", log)
    wait_for(
        lambda: (
            len({r["eventID"] for r in read_lines(audit)}) == total
            and queue_count(sqs_client, queue) == total
            and queue_count(sqs_client, topic_queue) == total
        ),
        90,
        "every change at every sink",
    )
    assert worker.terminate() == 0

    audit_ids = [r["eventID"] for r in read_lines(audit)]
    assert len(audit_ids) > total  # the file sink got the replayed records again
    for url in (queue, topic_queue):
        messages = drain(sqs_client, url)
        ids = [b["eventID"] for b in bodies(messages)]
        assert len(ids) == len(set(ids)) == total, url  # each change exactly once
        assert set(ids) == set(audit_ids)
        # and in order per item key
        order: dict[str, list[int]] = defaultdict(list)
        for body in bodies(messages):
            order[body["dynamodb"]["Keys"]["pk"]["S"]].append(
                int(body["dynamodb"]["NewImage"]["v"]["N"])
            )
        assert order == {k: list(range(1, n + 1)) for k, n in versions.items()}
    # What was stored before the kill was sent again after it, and dropped by the queue.
    queue_name = queue.rsplit("/", 1)[1]
    resent = [dedup for (name, dedup), n in sent.items() if name == queue_name and n > 1]
    assert len(resent) >= before_kill
