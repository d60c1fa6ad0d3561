"""The byte budget of buffered records: page weights, waiting for room, the default budget,
what shards hold, and giving weight back when a page is settled."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from fanout.config.types import parse_size
from fanout.observe.metrics import Metrics
from fanout.progress.tracker import ShardProgress
from fanout.stream.budget import (
    DEFAULT_BUDGET_BYTES,
    FIRST_PAGE_BYTES,
    MIB,
    MIN_PAGE_BYTES,
    MIN_SCALED_BYTES,
    PER_SHARD_BYTES,
    MemoryBudget,
    ShardBytes,
    container_memory_limit,
    default_budget,
    parsed_size,
)


def page(records: int, attributes: int, width: int) -> bytes:
    """A GetRecords answer of ``records`` items, each ``attributes`` strings of ``width``."""
    items = []
    for i in range(records):
        image: dict[str, Any] = {"pk": {"S": f"item-{i}"}}
        for j in range(attributes):
            image[f"a{j}"] = {"S": "x" * width}
        items.append(
            {
                "eventID": f"id-{i}",
                "eventName": "MODIFY",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1.7e9,
                    "Keys": {"pk": {"S": f"item-{i}"}},
                    "NewImage": image,
                    "SequenceNumber": str(10**20 + i),
                    "SizeBytes": 100,
                },
            }
        )
    return orjson.dumps({"Records": items, "NextShardIterator": "it"})


@pytest.mark.parametrize(
    ("records", "attributes", "width"),
    [(3, 50, 1000), (20, 500, 80), (1000, 5, 20), (3, 1, 50_000)],
    ids=["wide", "many-attributes", "small-items", "one-long-string"],
)
def test_a_page_is_weighed_at_no_less_than_what_its_records_take_parsed(
    records: int, attributes: int, width: int
) -> None:
    raw = page(records, attributes, width)
    tracemalloc.start()
    try:
        parsed = orjson.loads(raw)
        actual, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed["Records"]
    estimate = parsed_size(raw)
    assert 0.9 * actual <= estimate <= 1.5 * actual, (estimate, actual)


def test_the_container_memory_limit_is_read_from_cgroup_v2_then_v1(tmp_path: Path) -> None:
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert container_memory_limit((v2, v1)) is None  # neither file
    v1.write_text("268435456\n")
    assert container_memory_limit((v2, v1)) == 256 * MIB
    v2.write_text("max\n")
    assert container_memory_limit((v2, v1)) is None  # v2 says unlimited
    v2.write_text("1073741824\n")
    assert container_memory_limit((v2, v1)) == 1024 * MIB
    v2.unlink()
    v1.write_text("9223372036854771712\n")  # v1's "no limit"
    assert container_memory_limit((v2, v1)) is None
    v1.write_text("garbage\n")
    assert container_memory_limit((v2, v1)) is None


def test_the_default_budget_is_half_the_container_limit_else_a_fixed_amount() -> None:
    assert default_budget(1024 * MIB) == 512 * MIB
    assert default_budget(100) == MIN_PAGE_BYTES  # never less than one small page
    assert DEFAULT_BUDGET_BYTES == 512 * MIB


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512MiB", 512 * MIB),
        ("64MB", 64_000_000),
        ("1Gi", 1024 * MIB),
        ("2k", 2048),
        ("100", 100),
        (" 1.5 MiB ", int(1.5 * MIB)),
        (4096, 4096),
        (1e6, 1_000_000),
    ],
)
def test_sizes_are_read_in_bytes_or_with_units(text: Any, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["12 parsecs", "MiB", "-1MiB", True])
def test_a_size_that_is_not_one_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


# -- waiting for room --------------------------------------------------------------------------


async def test_acquirers_wait_for_room_in_order_and_count_the_wait() -> None:
    metrics = Metrics()
    waited = metrics.budget_wait.labels("orders")
    budget = MemoryBudget(100)
    await budget.acquire(60)
    order: list[str] = []

    async def take(name: str, size: int) -> None:
        await budget.acquire(size, waited)
        order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "big", 80)
        await anyio.sleep(0.01)
        tg.start_soon(take, "small", 10)  # would fit now, but waits behind "big"
        await anyio.sleep(0.05)
        assert (order, budget.waiting, budget.used) == ([], 2, 60)
        budget.release(60)
    assert order == ["big", "small"]
    assert budget.used == 90
    assert budget.waited_s >= 0.05
    value = metrics.registry.get_sample_value(
        "fanout_budget_wait_seconds_total", {"stream": "orders"}
    )
    assert value is not None
    assert value >= 0.05


async def test_a_page_larger_than_the_whole_budget_is_admitted_alone() -> None:
    budget = MemoryBudget(100)
    await budget.acquire(500)  # nothing held: it goes, or nothing would ever move
    assert budget.used == 500
    admitted = anyio.Event()

    async def second() -> None:
        await budget.acquire(500)
        admitted.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.sleep(0.02)
        assert not admitted.is_set()
        budget.release(500)
        await admitted.wait()
    assert budget.used == 500


async def test_a_cancelled_waiter_leaves_the_queue_and_lets_the_next_in() -> None:
    budget = MemoryBudget(100)
    await budget.acquire(50)
    got: list[str] = []
    big_scope = anyio.CancelScope()

    async def take(name: str, size: int) -> None:
        await budget.acquire(size)
        got.append(name)

    async def big() -> None:
        with big_scope:
            await take("big", 90)

    async with anyio.create_task_group() as tg:
        tg.start_soon(big)
        await anyio.sleep(0.01)
        tg.start_soon(take, "small", 40)
        await anyio.sleep(0.01)
        assert got == []  # "small" fits but waits behind "big"
        big_scope.cancel()
    assert got == ["small"]
    assert (budget.used, budget.waiting) == (90, 0)


# -- what a shard holds --------------------------------------------------------------------------


async def test_a_shard_reserves_room_for_its_next_page_then_holds_the_pages_weight() -> None:
    budget = MemoryBudget(64 * MIB)
    held = ShardBytes(budget)
    reserved = await held.reserve()
    assert reserved == FIRST_PAGE_BYTES
    assert budget.used == FIRST_PAGE_BYTES
    held.settle_page(reserved, 300_000)
    assert (held.held, budget.used, held.expected) == (300_000, 300_000, 300_000)
    reserved = await held.reserve()  # the next page is expected to be like the last one
    assert reserved == 300_000
    held.settle_page(reserved, 0)  # an empty page: the reservation only goes back
    assert (held.held, budget.used, held.expected) == (300_000, 300_000, 300_000)
    held.release(300_000)  # settled by every sink
    assert (held.held, budget.used) == (0, 0)
    held.release(300_000)  # never given back twice
    assert budget.used == 0


async def test_a_shard_that_stops_being_read_gives_back_all_it_holds() -> None:
    budget = MemoryBudget(64 * MIB)
    other = ShardBytes(budget)
    held = ShardBytes(budget)
    for weight in (100_000, 200_000):
        held.settle_page(await held.reserve(), weight)
    other.settle_page(await other.reserve(), 50_000)
    assert budget.used == 350_000
    held.release_all()
    assert (held.held, budget.used) == (0, 50_000)
    held.release(100_000)  # a lane settling afterwards gives nothing back twice
    assert budget.used == 50_000


async def test_the_default_budget_follows_the_shards_being_read_up_to_its_ceiling() -> None:
    budget = MemoryBudget(100 * MIB, per_shard=PER_SHARD_BYTES)
    assert budget.limit == MIN_SCALED_BYTES  # no shard yet: two full pages' room
    for _ in range(4):
        ShardBytes(budget)
    assert budget.limit == 4 * PER_SHARD_BYTES
    more = [ShardBytes(budget) for _ in range(4)]
    assert budget.limit == 100 * MIB  # never above the ceiling
    for held in more:
        held.release_all()
        held.release_all()  # a shard is counted out once
    assert (budget.shards, budget.limit) == (4, 4 * PER_SHARD_BYTES)


async def test_a_budget_that_grows_lets_a_waiting_reader_in_at_once() -> None:
    budget = MemoryBudget(None, per_shard=PER_SHARD_BYTES)
    first = ShardBytes(budget)
    first.settle_page(await first.reserve(), MIN_SCALED_BYTES - MIB)  # a big page held
    second = ShardBytes(budget)
    assert budget.limit == MIN_SCALED_BYTES  # 2 shards: still the least room
    reserved: list[int] = []

    async def read() -> None:
        reserved.append(await second.reserve())

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        assert reserved == []
        assert budget.waiting == 1
        third = ShardBytes(budget)  # 3 shards: 48 MiB, room for the waiting page
        await anyio.wait_all_tasks_blocked()
        assert reserved == [FIRST_PAGE_BYTES]
    assert budget.limit == 3 * PER_SHARD_BYTES
    third.release_all()
    first.release_all()
    # what is held stays held when the budget shrinks; the next reader waits for it
    assert (budget.limit, budget.used) == (MIN_SCALED_BYTES, FIRST_PAGE_BYTES)


async def test_a_fixed_budget_does_not_follow_the_shards() -> None:
    budget = MemoryBudget(10 * MIB)
    shards = [ShardBytes(budget) for _ in range(8)]
    assert budget.limit == 10 * MIB
    shards[0].release_all()
    assert budget.limit == 10 * MIB


async def test_a_settled_page_gives_its_weight_back_through_its_ticket() -> None:
    budget = MemoryBudget(64 * MIB)
    held = ShardBytes(budget)
    progress = ShardProgress("orders", "arn", "shardId-1", None, held=held)
    held.settle_page(await held.reserve(), 1000)
    held.settle_page(await held.reserve(), 2000)
    first, second = progress.open("10", 1000), progress.open("20", 2000)
    first.pending += 2  # two sinks got the page
    first.settle(1)  # the reader's hold
    second.settle(1)  # filtered out everywhere: settled at once
    assert budget.used == 1000
    assert progress.frontier is None
    first.settle(2)
    assert budget.used == 0
    assert progress.frontier == "20"


async def test_a_page_without_a_sequence_number_settles_without_moving_the_frontier() -> None:
    progress = ShardProgress("orders", "arn", "shardId-1", "5")
    progress.open(None).settle(1)
    assert progress.frontier == "5"
    progress.open("9").settle(1)
    assert progress.frontier == "9"
