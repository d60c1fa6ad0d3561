"""One shard reader on the fake streams, its pages collected in a list: malformed pages,
idle polling, skipping by time, and the start it is given."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from fanout.errors import SourceError
from fanout.observe.metrics import GET_RECORDS_OUTCOMES, Metrics
from fanout.progress.store import Checkpoint
from fanout.progress.tracker import ShardProgress
from fanout.stream.api import Shard
from fanout.stream.gaps import DataLossError, Gap
from fanout.stream.reader import ReaderContext, ShardReader
from tests.unit.stream_fakes import FakeShard, FakeStream, FakeStreams, fast_options


class Pages:
    """A ``PageTarget`` that keeps what it is given."""

    def __init__(self) -> None:
        self.pages: list[tuple[list[dict[str, Any]], str | None]] = []
        self.weights: list[int] = []

    async def submit(
        self,
        records: list[dict[str, Any]],
        last_seq: str | None,
        weight: int = 0,
        reread: Any = None,
    ) -> None:
        self.pages.append((records, last_seq))
        self.weights.append(weight)

    @property
    def seqs(self) -> list[str]:
        return [
            r["dynamodb"]["SequenceNumber"]
            for records, _ in self.pages
            for r in records
            if isinstance(r, dict) and isinstance(r.get("dynamodb"), dict)
        ]


class Harness:
    def __init__(self, streams: FakeStreams, stream: FakeStream, *, max_idle: float = 0.002):
        self.streams = streams
        self.stream = stream
        self.metrics = Metrics()
        self.gaps: list[Gap] = []
        self.relists = 0
        self.pages = Pages()
        self.ages: dict[str, float] = {}
        m = self.metrics
        self.context = ReaderContext(
            stream="orders",
            stream_arn=stream.arn,
            client=streams,
            options=fast_options(),
            max_idle_interval=max_idle,
            calls={o: m.get_records_calls.labels("orders", o) for o in GET_RECORDS_OUTCOMES},
            records_read=m.records_read.labels("orders"),
            iterator_age=self.ages,
            relist=self.relist,
            record_loss=self.gaps.append,
        )

    def relist(self) -> None:
        self.relists += 1

    def reader(self, shard: FakeShard, checkpoint: Checkpoint | None = None, **start: Any):
        progress = ShardProgress("orders", self.stream.arn, shard.shard_id, None)
        listed = Shard.from_wire(shard.wire())
        return ShardReader(self.context, listed, progress, self.pages, checkpoint, **start)

    def calls(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "fanout_get_records_calls_total", {"stream": "orders", "outcome": outcome}
        )
        return value or 0.0


@pytest.fixture
def streams() -> FakeStreams:
    return FakeStreams(page_size=4)


def one_shard(streams: FakeStreams) -> tuple[FakeStream, FakeShard]:
    stream = streams.add_stream("Orders")
    return stream, next(iter(stream.shards.values()))


async def test_a_closed_shard_is_read_to_its_end_and_every_record_is_stamped(streams):
    stream, shard = one_shard(streams)
    written = streams.put(shard, 10)
    streams.close(shard)
    h = Harness(streams, stream)
    assert await h.reader(shard).run() is True
    assert h.pages.seqs == written
    assert [last for _, last in h.pages.pages] == [written[3], written[7], written[9]]
    assert {r["eventSourceARN"] for records, _ in h.pages.pages for r in records} == {stream.arn}
    assert h.calls("records") == 3
    assert (
        h.metrics.registry.get_sample_value("fanout_records_read_total", {"stream": "orders"}) == 10
    )
    assert 0 <= h.ages[shard.shard_id] < 60


async def test_a_malformed_last_record_still_moves_the_position(streams):
    stream, shard = one_shard(streams)
    written = streams.put(shard, 3)
    shard.records.append({"eventName": "MODIFY"})  # no dynamodb part at all
    streams.close(shard)
    h = Harness(streams, stream)
    reader = h.reader(shard)
    assert await reader.run() is True
    (records, last), *_ = h.pages.pages
    assert last == written[-1]  # the last well-formed sequence number
    assert len(records) == 4  # the malformed one goes on, to be dead-lettered
    assert reader.last_seen == written[-1]


async def test_a_last_record_with_a_malformed_dynamodb_part_is_passed_on(streams):
    stream, shard = one_shard(streams)
    written = streams.put(shard, 2)
    shard.records.append({"dynamodb": "garbage"})
    streams.close(shard)
    h = Harness(streams, stream)
    reader = h.reader(shard, skip_before=0.0)
    assert await reader.run() is True
    ((records, last),) = h.pages.pages
    assert (len(records), last) == (3, written[-1])
    assert reader.last_read == (0.0, None)


async def test_a_page_without_any_sequence_number_is_submitted_without_one(streams):
    stream, shard = one_shard(streams)
    shard.records.extend([{"eventName": "MODIFY"}, {"dynamodb": "garbage"}])
    written = streams.put(shard, 2)
    streams.close(shard)
    h = Harness(streams, stream)
    streams.page_size = 2
    assert await h.reader(shard).run() is True
    # The first page goes on so its records reach the dead-letter destinations; having no
    # sequence number, it leaves the checkpoint where it is.
    assert [last for _, last in h.pages.pages] == [None, written[-1]]
    assert len(h.pages.pages[0][0]) == 2
    assert h.pages.seqs == written


async def test_an_idle_caught_up_shard_backs_off_and_counts_as_progressing(streams):
    stream, shard = one_shard(streams)
    h = Harness(streams, stream, max_idle=0.001)
    reader = h.reader(shard)
    before = reader.progress.last_progress
    async with anyio.create_task_group() as tg:
        tg.start_soon(reader.run)
        with anyio.fail_after(5):
            while h.calls("empty") < 6:  # past the eager re-reads: backing off
                await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
    assert reader.progress.last_progress > before
    assert h.ages[shard.shard_id] == 0.0


async def test_records_before_the_starting_time_are_skipped_until_a_page_reaches_it(streams):
    stream, shard = one_shard(streams)
    now = time.time()
    old = streams.put(shard, 6, at=now - 7200)
    new = streams.put(shard, 6, at=now)
    streams.close(shard)
    h = Harness(streams, stream)
    reader = h.reader(shard, skip_before=now - 60)
    assert await reader.run() is True
    assert h.pages.seqs == new
    assert not set(old) & set(h.pages.seqs)
    assert h.pages.pages[0] == ([], old[3])  # a skipped page still settles
    assert reader.skip_before is None


async def test_a_checkpoint_wins_over_the_start_it_was_given(streams):
    stream, shard = one_shard(streams)
    written = streams.put(shard, 6)
    streams.close(shard)
    h = Harness(streams, stream)
    checkpoint = Checkpoint(stream.arn, shard.shard_id, written[1], False, time.time())
    reader = h.reader(shard, checkpoint, latest=True, skip_before=time.time())
    assert not reader.latest
    assert reader.skip_before is None
    assert await reader.run() is True
    assert h.pages.seqs == written[2:]
    assert streams.iterator_types(shard) == ["AFTER_SEQUENCE_NUMBER"]


async def test_a_trimmed_checkpoint_is_a_gap_dated_by_the_checkpoint(streams):
    stream, shard = one_shard(streams)
    written = streams.put(shard, 8)
    streams.close(shard)
    streams.trim(shard, 5)
    h = Harness(streams, stream)
    written_at = time.time() - 90000
    checkpoint = Checkpoint(stream.arn, shard.shard_id, written[1], False, written_at)
    assert await h.reader(shard, checkpoint).run() is True
    (gap,) = h.gaps
    assert (gap.after_seq, gap.before_seq, gap.records) == (written[1], written[5], 3)
    assert (gap.after_time, gap.after_time_basis) == (written_at, "checkpoint")
    assert h.pages.seqs == written[5:]


async def test_a_gap_found_by_get_records_is_measured_past_a_few_empty_pages(streams):
    stream, shard = one_shard(streams)
    written = streams.put(shard, 8)
    h = Harness(streams, stream)
    reader = h.reader(shard)
    async with anyio.create_task_group() as tg:
        tg.start_soon(reader.run)
        while len(h.pages.seqs) < 8:
            await anyio.sleep(0.001)
        more = streams.put(shard, 8)
        streams.trim(shard, 12)
        streams.empty_pages(shard, 2, at=12)
        while len(h.pages.seqs) < 12:
            await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
    (gap,) = h.gaps
    assert (gap.after_seq, gap.before_seq, gap.records) == (written[-1], more[4], 4)
    assert gap.after_time_basis == "record"
    assert gap.count_basis == "sequence_spacing"


async def test_a_data_loss_the_policy_rejects_ends_the_reader(streams):
    stream, shard = one_shard(streams)
    written = streams.put(shard, 6)
    streams.close(shard)
    streams.trim(shard, 4)
    h = Harness(streams, stream)

    def fail(gap: Gap) -> None:
        raise DataLossError("lost")

    h.context = ReaderContext(**{**_fields(h.context), "record_loss": fail})
    checkpoint = Checkpoint(stream.arn, shard.shard_id, written[0], False, time.time())
    with pytest.raises(DataLossError):
        await h.reader(shard, checkpoint).run()
    assert h.pages.pages == []


def _fields(context: ReaderContext) -> dict[str, Any]:
    return {name: getattr(context, name) for name in ReaderContext.__slots__}


async def test_a_vanished_stream_stops_the_reader_unfinished_and_asks_for_a_listing(streams):
    stream, shard = one_shard(streams)
    streams.put(shard, 3)
    h = Harness(streams, stream)
    streams.delete_stream(stream)
    assert await h.reader(shard).run() is False
    assert h.relists == 1
    assert h.gaps == []


async def test_iterator_failures_are_retried_until_one_is_given(streams):
    stream, shard = one_shard(streams)
    written = streams.put(shard, 2)
    streams.close(shard)
    streams.fail("GetShardIterator", lambda: SourceError("GetShardIterator: odd"), times=4)
    h = Harness(streams, stream)
    assert await h.reader(shard).run() is True
    assert h.pages.seqs == written
    assert streams.iterator_types(shard) == ["TRIM_HORIZON"] * 5


def test_ttl_identities_are_spelled_as_lambda_spells_them() -> None:
    from fanout.stream.reader import lambda_identity

    record = {"userIdentity": {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}}
    lambda_identity(record)
    assert record["userIdentity"] == {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    already = {"userIdentity": {"type": "Service", "principalId": "x"}}
    lambda_identity(already)
    assert already["userIdentity"] == {"type": "Service", "principalId": "x"}
    odd = {"userIdentity": "not an object"}
    lambda_identity(odd)
    assert odd["userIdentity"] == "not an object"
