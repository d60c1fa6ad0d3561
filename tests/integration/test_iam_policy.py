"""A real worker holding only deploy/iam-policy.json: moto's server enforces IAM.

The worker runs with the keys of an IAM user whose one policy is the shipped document (its
placeholders filled in) while moto checks every SQS and S3 call against it: the sqs sink,
an SQS dead-letter queue whose oversized entries overflow to S3, and an S3 dead-letter
destination; ``fanout dlq inspect`` reads both with the same keys. The stream comes from
DynamoDB Local, which does not enforce IAM (nor would moto for DynamoDB Streams here), so
the stream and lease statements are checked by tests/unit/test_deploy.py only. moto gives
SNS and EventBridge calls no resource to match, so those sinks are not run here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from tests.conftest import REGION, s3_objects
from tests.integration.process import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"  # moto's default account
SINK_LIMIT = 2048  # the sink queue's MaximumMessageSize: a larger record is dead-lettered
DLQ_LIMIT = 2048  # the dead-letter queue's: its entry overflows to S3


@contextmanager
def iam_enforced(endpoint: str) -> Iterator[None]:
    """moto checks every call's signature and IAM policies until the block ends."""

    def reset(count: str) -> None:
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200

    reset("0")
    try:
        yield
    finally:
        reset("inf")


def user(iam: Any, name: str, policy: dict[str, Any]) -> dict[str, str]:
    """An IAM user with ``policy`` as its only policy; its access key."""
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="fanout", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


# AWS authorizes SQS's batch calls by the single-message action (SendMessageBatch needs
# sqs:SendMessage, and so on; IAM has no sqs:SendMessageBatch action); moto checks the
# call's own name. Each statement granting the single action is given moto's name for the
# batch call too, on the same resources: nothing else is added.
_MOTO_BATCH_NAMES = {
    "sqs:SendMessage": "sqs:SendMessageBatch",
    "sqs:DeleteMessage": "sqs:DeleteMessageBatch",
    "sqs:ChangeMessageVisibility": "sqs:ChangeMessageVisibilityBatch",
}


def shipped_policy(values: dict[str, str]) -> dict[str, Any]:
    """deploy/iam-policy.json with its placeholders filled in."""
    text = (REPO / "deploy" / "iam-policy.json").read_text()
    for placeholder in sorted(values, key=len, reverse=True):  # DLQ_PREFIX before PREFIX...
        text = text.replace(placeholder, values[placeholder])
    policy: dict[str, Any] = json.loads(text)
    assert not any(
        placeholder in text
        for placeholder in ("DLQ_BUCKET", "DLQ_PREFIX", "OVERFLOW_BUCKET", "OVERFLOW_PREFIX")
    )
    for statement in policy["Statement"]:
        actions = statement["Action"]
        actions += [_MOTO_BATCH_NAMES[a] for a in actions if a in _MOTO_BATCH_NAMES]
    return policy


def client(service: str, endpoint: str, keys: dict[str, str]) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
    )


def drain(sqs: Any, url: str) -> list[str]:
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)
        if not got.get("Messages"):
            return bodies
        bodies += [m["Body"] for m in got["Messages"]]


def test_a_worker_with_only_the_shipped_policy_sends_and_dead_letters_to_sqs_and_s3(
    tmp_path, dynamodb_local, ddb_table, ddb_client, moto_server, sqs_queue, s3_bucket
):
    endpoint = moto_server.endpoint_url
    table, _ = ddb_table()
    sink_queue = sqs_queue(MaximumMessageSize=str(SINK_LIMIT))
    dlq = sqs_queue(MaximumMessageSize=str(DLQ_LIMIT))
    dlq_bucket, overflow_bucket = s3_bucket(), s3_bucket()
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    suffix = os.urandom(4).hex()
    worker_keys = user(
        iam,
        f"fanout-worker-{suffix}",
        shipped_policy(
            {
                "REGION": REGION,
                "ACCOUNT_ID": ACCOUNT,
                "SINK_QUEUE_NAME": sink_queue.rsplit("/", 1)[1],
                "DLQ_QUEUE_NAME": dlq.rsplit("/", 1)[1],
                "DLQ_BUCKET": dlq_bucket,
                "DLQ_PREFIX": "dlq/",
                "OVERFLOW_BUCKET": overflow_bucket,
                "OVERFLOW_PREFIX": "overflow/",
                "TABLE_NAME": table,
            }
        ),
    )
    admin_keys = user(
        iam,
        f"fanout-test-admin-{suffix}",
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        },
    )
    config = tmp_path / "fanout.yaml"
    config.write_text(
        f"""
streams:
  orders: {{table: {table}, endpoint_url: "{dynamodb_local.endpoint_url}", region: {REGION},
            max_idle_interval: 100ms}}
checkpoints: {{path: "{tmp_path}/fanout.db", interval: 200ms}}
http: {{enabled: false}}
shutdown_grace: 5s
sinks:
  queue:
    type: sqs
    queue_url: "{sink_queue}"
    endpoint_url: "{endpoint}"
    format: raw
    dead_letter:
      type: sqs
      queue_url: "{dlq}"
      region: {REGION}
      endpoint_url: "{endpoint}"
      overflow: {{type: s3, bucket: {overflow_bucket}, prefix: overflow/,
                  endpoint_url: "{endpoint}"}}
  archive:
    type: handler
    handler: tests.integration.delivery_handlers:refuse_poison
    retry: {{max_attempts: 1}}
    dead_letter:
      type: s3
      bucket: {dlq_bucket}
      prefix: dlq/
      region: {REGION}
      endpoint_url: "{endpoint}"
"""
    )
    keys = [f"k{i}" for i in range(5)]
    for key in keys:
        ddb_client.put_item(TableName=table, Item={"pk": {"S": key}})
    ddb_client.put_item(TableName=table, Item={"pk": {"S": "poison"}, "blob": {"S": "x" * 5000}})
    admin_sqs = client("sqs", endpoint, admin_keys)
    admin_s3 = client("s3", endpoint, admin_keys)
    env = {**os.environ, **worker_keys}
    log = tmp_path / "worker.log"
    with iam_enforced(endpoint):
        # moto enforces: the worker's keys may not do what the policy does not grant
        with pytest.raises(admin_sqs.exceptions.ClientError, match="AccessDenied"):
            client("sqs", endpoint, worker_keys).purge_queue(QueueUrl=sink_queue)
        with pytest.raises(admin_s3.exceptions.ClientError, match="AccessDenied"):
            client("s3", endpoint, worker_keys).put_object(
                Bucket=dlq_bucket, Key="elsewhere/x", Body=b"x"
            )
        with _env(worker_keys):
            worker = WorkerProcess(config, tmp_path / "out.jsonl", log)
        try:
            wait_for(
                lambda: (
                    len(s3_objects(admin_s3, dlq_bucket)) == 1
                    and len(s3_objects(admin_s3, overflow_bucket)) == 1
                ),
                30,
                "a dead letter in S3 and an overflow in S3",
            )
            delivered = drain(admin_sqs, sink_queue)
            assert sorted(orjson.loads(b)["dynamodb"]["Keys"]["pk"]["S"] for b in delivered) == keys
        finally:
            assert worker.terminate() == 0
        inspect = subprocess.run(
            [sys.executable, "-m", "fanout", "dlq", "inspect", "--config", str(config), "--json"],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert inspect.returncode == 0, inspect.stderr.decode()
        summaries = {s["sink"]: s for s in orjson.loads(inspect.stdout)}
        assert summaries["archive"]["pending"] == 1
        assert summaries["archive"]["errors"] == {"ValueError": 1}
        assert summaries["queue"]["pending"] == 1
        (pointer,) = drain(admin_sqs, dlq)
    text = log.read_text()
    assert "AccessDenied" not in text, text
    overflow = orjson.loads(pointer)["fanout_overflow"]
    (key,) = s3_objects(_plain_s3(endpoint), overflow_bucket)
    assert overflow["uri"] == f"s3://{overflow_bucket}/{key}"
    (entry,) = (orjson.loads(b) for b in s3_objects(_plain_s3(endpoint), dlq_bucket).values())
    assert entry["record"]["dynamodb"]["Keys"] == {"pk": {"S": "poison"}}
    assert entry["error"]["class"] == "ValueError"


def _plain_s3(endpoint: str) -> Any:
    return client(
        "s3", endpoint, {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    )


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
