"""Sinks in a running worker get the process's shared clients, closed after they stop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest

from fanout.config import SinkConfig, build_config
from fanout.records import Record
from fanout.sink import Failures, SinkContext, SinkRegistry, SinkType
from fanout.testing.streamserver import StreamServer
from tests.integration.shardkit import put_keys, running, wait_for

pytestmark = pytest.mark.integration


@dataclass
class Seen:
    contexts: list[SinkContext] = field(default_factory=list)
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)
    open_at_stop: list[bool] = field(default_factory=list)
    records: list[str] = field(default_factory=list)


SEEN = Seen()


class WatchConfig(SinkConfig):
    type: Literal["watch"] = "watch"


class WatchSink:
    """Uses the shared HTTP session and an AWS client as a real sink would."""

    ordered = True

    def __init__(self, name: str, context: SinkContext) -> None:
        self.name = name
        self.context = context
        SEEN.contexts.append(context)

    async def start(self) -> None:
        SEEN.sessions.append(self.context.http.session())
        await self.context.aws.client("sqs", region="us-east-1", endpoint_url="http://127.0.0.1:9")

    async def send(self, batch: Sequence[Record]) -> Failures:
        SEEN.records.extend(r["dynamodb"]["SequenceNumber"] for r in batch)
        return {}

    async def stop(self) -> None:
        SEEN.open_at_stop.append(self.context.http.opened)


def _build(name: str, config: WatchConfig, context: SinkContext) -> WatchSink:
    return WatchSink(name, context)


WATCH: SinkType[WatchConfig] = SinkType(WatchConfig, _build)


def _config(server: StreamServer, stream_arn: str, tmp_path: Path) -> Any:
    data: dict[str, Any] = {
        "streams": {
            "orders": {
                "stream_arn": stream_arn,
                "endpoint_url": server.endpoint_url,
                "region": "us-east-1",
                "max_idle_interval": "100ms",
            }
        },
        "checkpoints": {"path": str(tmp_path / "fanout.db"), "interval": "100ms"},
        "http": {"enabled": False},
        "shutdown_grace": 2,
        "sinks": {"one": {"type": "watch"}, "two": {"type": "watch"}},
    }
    return build_config(data, SinkRegistry({"watch": WATCH}, entry_points=False))


async def test_sinks_share_the_workers_clients_which_close_after_every_sink_stopped(
    tmp_path: Path,
) -> None:
    global SEEN
    SEEN = Seen()
    async with StreamServer() as server:
        stream = server.add_stream("Orders", shards=1)
        sequences = put_keys(server, stream.shards[0], ["a", "b", "c"], 1)
        async with running(_config(server, stream.arn, tmp_path)) as run:
            await wait_for(lambda: len(SEEN.records) == 2 * len(sequences), what="deliveries")
            worker = run.worker
        assert run.code == 0
    one, two = SEEN.contexts
    assert one.aws is two.aws is worker.aws
    assert one.http is two.http is worker.http
    assert one.metrics is two.metrics is worker.metrics
    assert one.logger.name == "fanout.sink.one"
    assert SEEN.sessions[0] is SEEN.sessions[1]
    assert SEEN.open_at_stop == [True, True]
    assert SEEN.sessions[0].closed
    assert not worker.http.opened
