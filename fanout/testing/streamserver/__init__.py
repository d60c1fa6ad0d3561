"""An in-memory DynamoDB Streams server that speaks the real wire protocol, with faults on demand.

DynamoDB Local serves one shard per stream and never rolls shards over, throttles, expires
iterators or trims data. This server answers the same JSON 1.0 requests as the AWS endpoint
(``X-Amz-Target: DynamoDBStreams_20120810.<Op>`` for DescribeStream, GetShardIterator,
GetRecords and ListStreams, plus ``DynamoDB_20120810.DescribeTable`` on the same port), so
botocore, aiobotocore and the fanout worker talk to it unchanged, while tests script shards,
records and failures from Python::

    async with StreamServer() as server:
        stream = server.add_stream("Orders")
        shard = stream.shards[0]
        server.put(shard, [Change("INSERT", {"pk": {"S": "a"}}, {"pk": {"S": "a"}})])
        server.throttle("GetRecords", times=2)
        child = server.rollover(shard)
        ...  # point a client at server.endpoint_url

For synchronous clients use ``with StreamServer().run_in_thread() as server:``; for
benchmarks run it as a process::

    python -m fanout.testing.streamserver --port 0 --shards 4 --records-per-shard 100000 \
        --page-size 1000

which prints the endpoint URL on its first stdout line (and the stream ARN on the second)
once every record is built.

Records are serialized once, when they are put, into one byte buffer per shard; a GetRecords
page is a slice of that buffer, so serving a full 1,000-record page costs a memory copy.

Modules: ``records`` (changes, marshalling, realistic changes, wire records), ``model``
(tables, streams, shards and their stored records), ``faults`` (scripted failures and
delays), ``errors`` (the service's error answers), ``operations`` (the five operations and
their parameters), ``wire`` (HTTP, served by aiohttp), ``server`` (:class:`StreamServer`,
the scripting API) and ``__main__`` (the command line).
"""

from __future__ import annotations

from fanout.testing.streamserver.faults import Call, Fault
from fanout.testing.streamserver.model import Shard, Stream, Table
from fanout.testing.streamserver.records import Change, marshal, marshal_item, realistic_changes
from fanout.testing.streamserver.server import StreamServer

__all__ = [
    "Call",
    "Change",
    "Fault",
    "Shard",
    "Stream",
    "StreamServer",
    "Table",
    "marshal",
    "marshal_item",
    "realistic_changes",
]
