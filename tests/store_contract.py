"""What every ``CheckpointStore`` must do, as checks run against each store (memory, SQLite,
DynamoDB Local). Each check gets a fresh, opened store of application ``app`` and, for
isolation checks, a second one of application ``other`` on the same backend."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fanout.progress.store import (
    NO_WORKER_ROW,
    BackfillRow,
    CheckpointRow,
    CheckpointStore,
    Claim,
    LeaseToken,
    Release,
    SegmentRow,
    WindowState,
    WorkerRow,
)

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-01-01T00:00:00.000"


async def checkpoints_keep_sequence_and_finished(
    store: CheckpointStore, other: CheckpointStore
) -> None:
    assert await store.save([CheckpointRow(ARN, "a", "100"), CheckpointRow(ARN, "b", "7")]) == []
    await store.save([CheckpointRow(ARN, "a", "150")])
    await store.save([CheckpointRow(ARN, "b", None, True)])
    await store.save([CheckpointRow(ARN, "b", "8")])  # finished never goes back
    rows = await store.load(ARN)
    assert (rows["a"].sequence, rows["a"].finished) == ("150", False)
    assert (rows["b"].sequence, rows["b"].finished) == ("8", True)
    assert [r.shard_id for r in await store.all()] == ["a", "b"]
    assert await other.load(ARN) == {}  # another application sees none of it
    assert await other.all() == []


async def stream_start_is_stored_once_per_application(
    store: CheckpointStore, other: CheckpointStore
) -> None:
    assert await store.stream_start(ARN, 10.0) == (10.0, True)
    assert await store.stream_start(ARN, 20.0) == (10.0, False)
    assert await other.stream_start(ARN, 30.0) == (30.0, True)


async def prune_deletes_finished_rows_not_kept(
    store: CheckpointStore, other: CheckpointStore
) -> None:
    await store.save(
        [
            CheckpointRow(ARN, "old", "1", True),
            CheckpointRow(ARN, "listed", "2", True),
            CheckpointRow(ARN, "open", "3"),
        ]
    )
    await other.save([CheckpointRow(ARN, "old", "1", True)])
    assert await store.prune(ARN, ["listed"]) == 1
    assert sorted(await store.load(ARN)) == ["listed", "open"]
    assert list(await other.load(ARN)) == ["old"]


async def ensure_creates_unowned_rows_once(store: CheckpointStore, other: CheckpointStore) -> None:
    await store.save([CheckpointRow(ARN, "b", "5")])
    rows = await store.ensure(ARN, ["a", "b"])
    assert (rows["a"].sequence, rows["a"].owner, rows["a"].counter) == (None, None, 0)
    assert rows["b"].sequence == "5"
    again = await store.ensure(ARN, ["a"])
    assert again["a"].counter == 0


async def takes_are_conditional_on_owner_and_counter(
    store: CheckpointStore, other: CheckpointStore
) -> None:
    await store.ensure(ARN, ["s"])
    first, second = await store.take(
        [Claim(ARN, "s", None, 0), Claim(ARN, "missing", None, 0)], "w1"
    )
    assert first is not None
    assert (first.owner, first.counter) == ("w1", 1)
    assert first.taken_at is not None
    assert second is None
    assert await store.take([Claim(ARN, "s", None, 0)], "w2") == [None]  # counter moved
    assert await store.take([Claim(ARN, "s", "w9", 1)], "w2") == [None]  # not its owner
    (stolen,) = await store.take([Claim(ARN, "s", "w1", 1)], "w2")
    assert stolen is not None
    assert (stolen.owner, stolen.counter) == ("w2", 2)
    await store.save([CheckpointRow(ARN, "s", "9", True)])  # finished: no more takes
    assert await store.take([Claim(ARN, "s", "w2", 2)], "w3") == [None]


async def an_expired_take_checks_the_owners_heartbeat(
    store: CheckpointStore, other: CheckpointStore
) -> None:
    await store.ensure(ARN, ["s", "t"])
    await store.take([Claim(ARN, "s", None, 0), Claim(ARN, "t", None, 0)], "w1")
    await store.heartbeat(WorkerRow("w1", 5, 1.0, 1.0, "host", 1, "a=file", 2))
    assert await store.take([Claim(ARN, "s", "w1", 1, 4)], "w2") == [None]
    (taken,) = await store.take([Claim(ARN, "s", "w1", 1, 5)], "w2")
    assert taken is not None
    assert taken.owner == "w2"
    # an owner without a worker row: the claim says it must still have none
    await store.remove_worker("w1")
    assert await store.take([Claim(ARN, "t", "w1", 1, 5)], "w2") == [None]
    (orphan,) = await store.take([Claim(ARN, "t", "w1", 1, NO_WORKER_ROW)], "w2")
    assert orphan is not None
    assert orphan.owner == "w2"


async def checkpoints_under_a_lease_are_conditional(
    store: CheckpointStore, other: CheckpointStore
) -> None:
    await store.ensure(ARN, ["s"])
    (row,) = await store.take([Claim(ARN, "s", None, 0)], "w1")
    assert row is not None
    lease = LeaseToken("w1", row.counter)
    assert await store.save([CheckpointRow(ARN, "s", "10", False, lease)]) == []
    stale = CheckpointRow(ARN, "s", "5", False, LeaseToken("w1", row.counter - 1))
    elsewhere = CheckpointRow(ARN, "s", "5", False, LeaseToken("w2", row.counter))
    unknown = CheckpointRow(ARN, "nope", "5", False, lease)
    rejected = await store.save([stale, elsewhere, unknown])
    assert sorted(r.shard_id + r.lease.owner for r in rejected if r.lease) == [
        "nopew1",
        "sw1",
        "sw2",
    ]
    assert (await store.load(ARN))["s"].sequence == "10"
    # finished under its lease: released with it
    assert await store.save([CheckpointRow(ARN, "s", "12", True, lease)]) == []
    final = (await store.load(ARN))["s"]
    assert (final.sequence, final.finished, final.owner, final.counter) == (
        "12",
        True,
        None,
        row.counter + 1,
    )


async def release_and_hand_over(store: CheckpointStore, other: CheckpointStore) -> None:
    await store.ensure(ARN, ["s"])
    (row,) = await store.take([Claim(ARN, "s", None, 0)], "w1")
    assert row is not None
    lease = LeaseToken("w1", row.counter)
    assert await store.request_handoff(ARN, "s", LeaseToken("w1", 99), "w2") is False
    assert await store.request_handoff(ARN, "s", lease, "w2") is True
    asked = (await store.load(ARN))["s"]
    assert (asked.owner, asked.handoff_to, asked.counter) == ("w1", "w2", row.counter)
    # the checkpoint still goes through while the owner hands over
    assert await store.save([CheckpointRow(ARN, "s", "3", False, lease)]) == []
    assert await store.release([Release(ARN, "s", LeaseToken("w1", 0), "w2")]) == [False]
    assert await store.release([Release(ARN, "s", lease, "w2")]) == [True]
    handed = (await store.load(ARN))["s"]
    assert (handed.owner, handed.counter, handed.handoff_to) == ("w2", row.counter + 1, None)
    assert await store.release([Release(ARN, "s", LeaseToken("w2", handed.counter))]) == [True]
    free = (await store.load(ARN))["s"]
    assert (free.owner, free.counter, free.sequence) == (None, row.counter + 2, "3")


async def scan_reads_rows_workers_and_sinks(store: CheckpointStore, other: CheckpointStore) -> None:
    await store.save([CheckpointRow(ARN, "a", "1")])
    await store.heartbeat(WorkerRow("w1", 1, 100.0, 90.0, "h1", 11, "a=file", 0))
    await store.heartbeat(WorkerRow("w1", 2, 101.0, 90.0, "h1", 11, "a=file", 3))
    await store.heartbeat(WorkerRow("w2", 1, 100.5, 95.0, "h2", 12, "a=file", 0))
    await store.record_sinks("a=file")
    await other.heartbeat(WorkerRow("x", 1, 1.0, 1.0, "h", 1, "b=file", 0))
    snap = await store.scan()
    assert [r.shard_id for r in snap.shards] == ["a"]
    assert [(w.worker_id, w.heartbeat, w.leases) for w in snap.workers] == [
        ("w1", 2, 3),
        ("w2", 1, 0),
    ]
    assert snap.workers[0].heartbeat_at == 101.0
    assert snap.workers[0].host == "h1"
    assert snap.sinks == "a=file"
    await store.remove_worker("w2", heartbeat=7)  # not its heartbeat: kept
    await store.remove_worker("w1", heartbeat=2)
    assert [w.worker_id for w in (await store.scan()).workers] == ["w2"]
    assert (await other.scan()).sinks is None


async def window_states_go_with_their_checkpoint(
    store: CheckpointStore, other: CheckpointStore
) -> None:
    sums = WindowState("sums", 120.0, {"total": 7, "nested": {"a": [1, 2]}}, "5", 60.0)
    counts = WindowState("counts", 120.0, {}, None, None)
    await store.save([CheckpointRow(ARN, "s", "5", windows=(sums, counts))])
    assert await store.load_windows(ARN, "s") == {"sums": sums, "counts": counts}
    assert await store.load_windows(ARN, "t") == {}
    assert await other.load_windows(ARN, "s") == {}  # another application sees none of it
    # A later write replaces the sink's state and keeps the others.
    later = WindowState("sums", 180.0, {}, "9", 180.0)
    await store.save([CheckpointRow(ARN, "s", "9", windows=(later,))])
    assert await store.load_windows(ARN, "s") == {"sums": later, "counts": counts}


async def window_states_are_written_only_with_their_checkpoint(
    store: CheckpointStore, other: CheckpointStore
) -> None:
    await store.ensure(ARN, ["s"])
    [row] = await store.take([Claim(ARN, "s", None, 0)], "w1")
    assert row is not None
    lease = LeaseToken("w1", row.counter)
    first = WindowState("sums", 0.0, {"total": 1}, "1")
    assert await store.save([CheckpointRow(ARN, "s", "1", lease=lease, windows=(first,))]) == []
    # A row whose lease moved is rejected, and its window state is not written either.
    stale = CheckpointRow(
        ARN,
        "s",
        "2",
        lease=LeaseToken("w1", row.counter + 5),
        windows=(WindowState("sums", 0.0, {"total": 99}, "2"),),
    )
    assert await store.save([stale]) == [stale]
    assert (await store.load_windows(ARN, "s"))["sums"] == first
    assert (await store.load(ARN))["s"].sequence == "1"


async def a_large_window_state_round_trips(store: CheckpointStore, other: CheckpointStore) -> None:
    big = WindowState("sums", 0.0, {f"k{i}": "x" * 90 for i in range(10_000)}, "3")
    assert len(big.to_json()) > 900_000  # more than a DynamoDB item holds
    await store.save([CheckpointRow(ARN, "s", "3", windows=(big,))])
    assert await store.load_windows(ARN, "s") == {"sums": big}
    smaller = WindowState("sums", 0.0, {"k": 1}, "4")
    await store.save([CheckpointRow(ARN, "s", "4", windows=(smaller,))])
    assert await store.load_windows(ARN, "s") == {"sums": smaller}


async def a_finished_shard_drops_its_window_states(
    store: CheckpointStore, other: CheckpointStore
) -> None:
    window = WindowState("sums", 0.0, {"total": 1}, "1")
    await store.save([CheckpointRow(ARN, "s", "1", windows=(window,))])
    await store.save([CheckpointRow(ARN, "s", "2", True)])
    assert await store.load_windows(ARN, "s") == {}


def _backfill(backfill_id: str, owner: str | None, owner_at: float) -> BackfillRow:
    return BackfillRow(
        backfill_id,
        "orders",
        "Orders",
        "search,totals",
        4,
        1_700_000_000,
        10.0,
        "cli",
        owner=owner,
        owner_at=owner_at,
    )


async def a_backfill_is_created_once_and_taken_over_on_condition(
    store: CheckpointStore, other: CheckpointStore
) -> None:
    first = _backfill("b1", "w1", 100.0)
    assert await store.claim_backfill(first, None) == first
    assert await store.claim_backfill(_backfill("b1", "w2", 101.0), None) is None
    # a take-over holds only while the stored owner and owner_at are the ones seen
    stale = _backfill("b1", "w1", 99.0)
    assert await store.claim_backfill(_backfill("b1", "w2", 102.0), stale) is None
    taken = await store.claim_backfill(_backfill("b1", "w2", 102.0), first)
    assert taken is not None
    assert (taken.owner, taken.owner_at, taken.sinks, taken.version_time) == (
        "w2",
        102.0,
        "search,totals",
        1_700_000_000,
    )
    assert taken.sink_names == ["search", "totals"]
    (state,) = await store.backfills()
    assert state.row == taken
    assert state.segments == {}
    assert await other.backfills() == []  # another application sees none of it
    assert await store.claim_backfill(_backfill("nope", "w3", 1.0), first) is None


async def only_a_backfills_owner_saves_its_progress(
    store: CheckpointStore, other: CheckpointStore
) -> None:
    row = _backfill("b2", "w1", 100.0)
    await store.claim_backfill(row, None)
    segments = [
        SegmentRow("b2", 0, '{"pk":{"S":"k7"}}', 120),
        SegmentRow("b2", 3, None, 0),
    ]
    assert await store.save_backfill("b2", "w1", segments, now=110.0)
    assert not await store.save_backfill("b2", "w9", [SegmentRow("b2", 0, None, 999)])
    assert not await store.save_backfill("missing", "w1", [SegmentRow("missing", 0, None, 1)])
    (state,) = await store.backfills()
    assert state.row.owner_at == 110.0
    assert state.segments == {0: segments[0], 3: segments[1]}
    done = SegmentRow("b2", 0, '{"pk":{"S":"k9"}}', 200, True)
    assert await store.save_backfill("b2", "w1", [done], done=True, release=True, now=120.0)
    (state,) = await store.backfills()
    assert (state.row.done, state.row.owner, state.row.owner_at) == (True, None, 120.0)
    assert state.segments[0] == done
    assert not await store.save_backfill("b2", "w1", [])  # released: nobody's to write
    # released: taken again from no owner, and done is never undone
    again = await store.claim_backfill(_backfill("b2", "w2", 130.0), state.row)
    assert again is not None
    assert (again.owner, again.done) == ("w2", True)
    assert await store.save_backfill("b2", "w2", [], done=False)
    assert (await store.backfills())[0].row.done
    await store.claim_backfill(_backfill("a0", None, 0.0), None)
    assert [s.row.backfill_id for s in await store.backfills()] == ["a0", "b2"]
    assert (await store.scan()).shards == []  # backfills are not shard rows


CHECKS: list[Callable[[CheckpointStore, CheckpointStore], Awaitable[None]]] = [
    checkpoints_keep_sequence_and_finished,
    stream_start_is_stored_once_per_application,
    prune_deletes_finished_rows_not_kept,
    ensure_creates_unowned_rows_once,
    takes_are_conditional_on_owner_and_counter,
    an_expired_take_checks_the_owners_heartbeat,
    checkpoints_under_a_lease_are_conditional,
    release_and_hand_over,
    scan_reads_rows_workers_and_sinks,
    window_states_go_with_their_checkpoint,
    window_states_are_written_only_with_their_checkpoint,
    a_large_window_state_round_trips,
    a_finished_shard_drops_its_window_states,
    a_backfill_is_created_once_and_taken_over_on_condition,
    only_a_backfills_owner_saves_its_progress,
]
