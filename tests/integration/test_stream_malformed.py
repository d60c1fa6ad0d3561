"""Malformed answers from the stream are faults, not crashes: the real worker against the
scripted stream server.

A 200 whose body is no answer (not JSON, a JSON list, ``Records`` not a list) is retried
with backoff and counted; records that cannot be delivered (null, a string, an object
without ``dynamodb`` or without a sequence number) go to the dead-letter destination with
the reason, and the shard moves on, delivering the others in order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fanout.delivery.deadletter.file import read_entries
from fanout.testing.streamserver import StreamServer
from tests.integration.process import checkpoint
from tests.integration.shardkit import COLLECTOR, make_config, put_keys, running, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _collector(caplog: pytest.LogCaptureFixture) -> None:
    COLLECTOR.reset()
    caplog.set_level(logging.INFO, logger="fanout")


MALFORMED_RECORDS = [
    (b"null", "record is a NoneType, not an object"),
    (b'"just text"', "record is a str, not an object"),
    (b'{"eventName": "MODIFY"}', "record has no 'dynamodb' object"),
    (
        b'{"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "x"}}}}',
        "record has no dynamodb.SequenceNumber",
    ),
]

GARBLED_PAGES = [
    b"<html><body>502 Bad Gateway</body></html>",  # not JSON
    b'{"Records": [{"dynamodb": {}}',  # cut short
    b"[]",  # a JSON list
    b'{"Records": {"0": {}}, "NextShardIterator": "x"}',  # Records not a list
    b'{"Records": [], "NextShardIterator": 7}',  # the iterator not a string
]


async def test_garbled_pages_are_retried_and_malformed_records_dead_lettered(
    tmp_path: Path,
) -> None:
    dlq = tmp_path / "dlq.jsonl"
    async with StreamServer(page_size=3) as server:
        stream = server.add_stream("Orders")
        (shard,) = stream.shards
        # Pages of three: [a a a] [null text no-dynamodb] [no-sequence b b] [b b b] [list]:
        # a page of nothing but malformed records between good ones, and one at the end.
        good = put_keys(server, shard, [f"a-{i}" for i in range(3)], 1)
        for raw, _ in MALFORMED_RECORDS:
            server.put_raw(shard, raw)
        good += put_keys(server, shard, [f"b-{i}" for i in range(5)], 1)
        server.put_raw(shard, b"[1, 2]")
        for body in GARBLED_PAGES:
            server.garble("GetRecords", body, after=1)
        server.garble("GetShardIterator", b"{}")
        server.garble("DescribeStream", b'{"StreamDescription": {"Shards": "none"}}')
        config = make_config(
            server,
            tmp_path,
            stream_arn=stream.arn,
            sink={"dead_letter": {"type": "file", "path": str(dlq)}},
        )
        async with running(config) as run:
            await wait_for(lambda: set(good) <= COLLECTOR.seen, what="the well-formed records")
            await wait_for(
                lambda: dlq.exists() and len(read_entries(dlq)) == len(MALFORMED_RECORDS) + 1,
                what="the malformed records dead-lettered",
            )
            assert run.sample("fanout_get_records_calls_total", outcome="malformed") == len(
                GARBLED_PAGES
            )
            # Counted once the write returned, a moment after its lines are in the file.
            await wait_for(
                lambda: (
                    run.sample("fanout_sink_records_total", sink="collect", outcome="dead_lettered")
                    == len(MALFORMED_RECORDS) + 1
                ),
                what="the dead-lettered records counted",
            )
            # The shard moves on: its checkpoint passes the last well-formed record.
            db = tmp_path / "fanout.db"
            await wait_for(lambda: checkpoint(db) >= int(good[-1]), what="the checkpoint")
        assert run.code == 0

    assert COLLECTOR.seqs == good  # each once, in shard order
    entries = read_entries(dlq)
    reasons = [(e["error"]["class"], e["error"]["message"]) for e in entries]
    expected = [("MalformedRecord", why) for _, why in MALFORMED_RECORDS]
    expected.append(("MalformedRecord", "record is a list, not an object"))
    assert reasons == expected
    assert [e["record"] for e in entries[:2]] == [None, "just text"]
    assert {e["sink"] for e in entries} == {"collect"}
    assert {e["shard_id"] for e in entries} == {shard.shard_id}
    assert [e["sequence_number"] for e in entries] == [None] * len(entries)
