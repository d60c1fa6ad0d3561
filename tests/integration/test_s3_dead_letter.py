"""The s3 dead-letter destination, and S3 overflows of the sqs one, against moto's server;
``fanout dlq inspect|redrive`` reading them."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from fanout.aws.clients import AwsClients
from fanout.cli import main
from fanout.delivery.deadletter.overflow import S3Overflow
from fanout.delivery.deadletter.s3 import S3Bucket, S3DeadLetter
from fanout.delivery.deadletter.sqs import SqsDeadLetter
from fanout.errors import DeadLetterError
from tests.conftest import s3_objects
from tests.unit.test_sqs_dlq import make_entries

pytestmark = pytest.mark.integration


@pytest.fixture
async def aws() -> AsyncIterator[AwsClients]:
    clients = AwsClients()
    yield clients
    await clients.aclose()


def s3_dead_letter(moto_server: Any, aws: AwsClients, bucket: str) -> S3DeadLetter:
    return S3DeadLetter(
        bucket, prefix="dlq/", clients=aws, sink="audit", endpoint_url=moto_server.endpoint_url
    )


def timed_entries(n: int, **options: Any) -> list[dict[str, Any]]:
    entries = make_entries(n, **options)
    for i, item in enumerate(entries):  # given up on out of order, a millisecond apart
        item["dead_lettered_at"] = 1_700_000_000.0 + (n - i) / 1000
    return entries


async def test_each_entry_is_one_object_keyed_by_time_and_a_retry_puts_no_second(
    moto_server, s3_bucket, s3_client, aws
):
    bucket = s3_bucket()
    entries = timed_entries(3)
    dl = s3_dead_letter(moto_server, aws, bucket)
    await dl.write(entries)
    await dl.write(entries)  # the same entries again (a retried write)
    stored = s3_objects(s3_client, bucket)
    assert len(stored) == 3
    assert all(key.startswith("dlq/audit/20231114T") for key in stored)
    # key order is the order they were given up on; each object is the whole entry
    by_time = sorted(entries, key=lambda e: e["dead_lettered_at"])
    assert [orjson.loads(body) for body in stored.values()] == by_time


async def test_entries_are_read_back_whole_and_acknowledged_ones_deleted(
    moto_server, s3_bucket, s3_client, aws
):
    bucket = s3_bucket()
    entries = timed_entries(3)
    dl = s3_dead_letter(moto_server, aws, bucket)
    await dl.write(entries)
    s3_client.put_object(Bucket=bucket, Key="dlq/audit/20231114T000000.000000Z-x.json", Body=b"{")
    letters = [letter async for batch in dl.read() for letter in batch]
    assert [letter.entry for letter in letters[1:]] == sorted(
        entries, key=lambda e: e["dead_lettered_at"]
    )
    assert letters[0].entry is None  # an object that is not an entry is reported, not skipped
    assert "not JSON" in letters[0].error
    await dl.acknowledge(letters[1:3], target="audit")
    assert len(s3_objects(s3_client, bucket)) == 2


async def test_a_missing_bucket_fails_the_write(moto_server, aws):
    dl = s3_dead_letter(moto_server, aws, "no-such-bucket-fanout")
    with pytest.raises(DeadLetterError, match="NoSuchBucket"):
        await dl.write(make_entries(2))


async def test_an_oversized_sqs_entry_overflows_to_s3_once_and_goes_with_its_message(
    moto_server, sqs_queue, s3_bucket, s3_client, aws, tmp_path
):
    url = sqs_queue(MaximumMessageSize="2048")
    bucket = s3_bucket()
    overflow = S3Overflow(
        S3Bucket(bucket, clients=aws, endpoint_url=moto_server.endpoint_url), "over/"
    )
    dl = SqsDeadLetter(
        url,
        clients=aws,
        region="us-east-1",
        endpoint_url=moto_server.endpoint_url,
        overflow_dir=tmp_path / "unused",
        overflow=overflow,
    )
    big = make_entries(1, pad=50_000)
    await dl.write(big)
    (key,) = s3_objects(s3_client, bucket)
    assert key.startswith("over/audit/")
    letters = [letter async for batch in dl.read() for letter in batch]
    (letter,) = letters
    assert letter.entry == big[0]
    pointer = letter.handle.overflow  # type: ignore[attr-defined]
    assert pointer["uri"] == f"s3://{bucket}/{key}"
    assert not (tmp_path / "unused").exists()  # nothing on the worker's own disk
    await dl.acknowledge(letters, target="audit")
    assert s3_objects(s3_client, bucket) == {}


def cli(*argv: str) -> tuple[int, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, orjson.loads(out.getvalue())


def test_dlq_inspect_and_redrive_read_an_s3_destination(
    moto_server, s3_bucket, s3_client, tmp_path: Path
):
    bucket = s3_bucket()
    redriven = tmp_path / "redriven.jsonl"
    config = tmp_path / "fanout.yaml"
    config.write_text(
        f"""
streams:
  orders: {{table: Orders}}
checkpoints: {{store: sqlite, path: {tmp_path / "fanout.db"}}}
sinks:
  audit:
    type: file
    path: {tmp_path / "audit.jsonl"}
    dead_letter:
      type: s3
      bucket: {bucket}
      prefix: dlq/
      region: us-east-1
      endpoint_url: {moto_server.endpoint_url}
  fixed:
    type: file
    path: {redriven}
"""
    )
    entries = timed_entries(3)

    async def write() -> None:
        clients = AwsClients()
        try:
            await s3_dead_letter(moto_server, clients, bucket).write(entries)
        finally:
            await clients.aclose()

    anyio.run(write)
    code, (summary,) = cli("dlq", "inspect", "--config", str(config), "--sink", "audit", "--json")
    assert code == 0
    assert summary["destination"] == f"s3://{bucket}/dlq/audit/"
    assert summary["pending"] == 3
    assert summary["errors"] == {"Boom": 3}
    assert summary["oldest"] == min(e["dead_lettered_at"] for e in entries)
    args = ("dlq", "redrive", "--config", str(config), "--sink", "audit", "--to", "fixed")
    code, report = cli(*args, "--json")
    assert (code, report["delivered"], report["failed"]) == (0, 3, 0)
    assert len(redriven.read_text().splitlines()) == 3
    assert s3_objects(s3_client, bucket) == {}  # redriven objects are deleted
    code, report = cli(*args, "--json")
    assert report["found"] == 0
