"""The sink contract as executable checks, for fanout's sink types and third-party ones.

Describe the sink type and its destination with a ``ContractTarget``, then run every check
(``await check_sink(target)``) or one test per check, e.g. with pytest and pytest-asyncio::

    from fanout.testing.contract import CHECKS, ContractTarget, NotApplicable

    @pytest.fixture
    def target(tmp_path):
        return ContractTarget(
            MY_SINK_TYPE,
            {"type": "my-sink", "url": server.url},
            arrived=server.event_ids,  # eventIDs that reached the destination so far
        )

    @pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
    async def test_my_sink_keeps_the_contract(check, target):
        try:
            await check(target)
        except NotApplicable as exc:
            pytest.skip(str(exc))

What is checked (``fanout.sink.Sink`` states the contract):

* lifecycle: ``start()``, ``send()``, ``stop()``; ``stop()`` is idempotent, works without
  ``start()`` and after a failed ``start()``;
* per-record outcomes: ``send()`` returns a mapping whose keys are indexes within the batch
  and whose values are ``Failure``; every record without a failure has arrived; a record
  the destination refuses is a ``Failure`` at its index, not an exception;
* an empty batch is handled;
* exceptions are for whole-batch failures only: ``send()`` to a healthy destination never
  raises;
* concurrent ``send()`` calls for different shards all land;
* the records given are never mutated.

Every check builds its own sink with its own ``SinkContext`` (closed after the sink's
``stop()``) and sends records with eventIDs unique to the check, so checks can share one
destination.
"""

from __future__ import annotations

import copy
import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from fanout.records import Record
from fanout.sink import Failure, Sink, SinkContext, SinkType

_REGION = "us-east-1"
_STREAM_ARN = (
    "arn:aws:dynamodb:us-east-1:123456789012:table/Contract/stream/2026-01-01T00:00:00.000"
)


class ContractViolation(AssertionError):
    """The sink does not keep the contract; the message says how."""


class NotApplicable(Exception):
    """The check needs something the target does not provide (e.g. ``poison``)."""


@dataclass(frozen=True)
class ContractTarget:
    """A sink type, its options and a way to see what reached its destination.

    Attributes:
        sink_type: the sink type under test (as its entry point names it).
        options: the sink's configuration as written under its name in the YAML file
            (``type`` included), validated by ``sink_type.config``.
        arrived: returns (or resolves to) the eventIDs of every record that has reached
            the destination so far, in any order, duplicates allowed. Called after a
            ``send()`` returned, before ``stop()``: what ``send()`` reports as delivered
            must be there by then.
        broken_options: options with which ``start()`` fails (e.g. an unwritable path);
            without them the check of ``stop()`` after a failed ``start()`` is not
            applicable.
        poison: turns a record into one the destination refuses; without it the check
            of a refused record is not applicable.
        context: makes the ``SinkContext`` for a sink name; default
            ``SinkContext.standalone``. The suite closes each context it gets.
        name: the sink's name.
        concurrency: ``send()`` calls at once in the concurrency check (one shard each).
        batch_size: records per batch.
    """

    sink_type: SinkType[Any]
    options: Mapping[str, Any]
    arrived: Callable[[], Awaitable[Iterable[str]] | Iterable[str]]
    broken_options: Mapping[str, Any] | None = None
    poison: Callable[[Record], Record] | None = None
    context: Callable[[str], SinkContext] = field(default=SinkContext.standalone)
    name: str = "contract"
    concurrency: int = 20
    batch_size: int = 10


def make_records(count: int, *, tag: str = "", shard: int = 0) -> list[Record]:
    """Records of one shard in the Lambda event shape, with nested and binary attributes.

    eventIDs are ``<tag>-<shard>-<n>`` (``tag`` defaults to a random one).
    """
    tag = tag or uuid.uuid4().hex[:12]
    records: list[Record] = []
    for n in range(count):
        key = {"pk": {"S": f"item#{shard}-{n}"}, "sk": {"N": str(n)}}
        new = {
            **key,
            "status": {"S": "PAID" if n % 2 else "NEW"},
            "total": {"N": f"{n}.25"},
            "tags": {"SS": ["a", "b"]},
            "lines": {"L": [{"M": {"sku": {"S": f"sku-{n}"}, "qty": {"N": "2"}}}]},
            "blob": {"B": "AAEC"},
            "gift": {"BOOL": n % 3 == 0},
            "note": {"NULL": True},
        }
        old = {**key, "status": {"S": "NEW"}, "total": {"N": "0"}}
        records.append(
            {
                "eventID": f"{tag}-{shard}-{n}",
                "eventName": "MODIFY" if n % 2 else "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": _REGION,
                "eventSourceARN": _STREAM_ARN,
                "dynamodb": {
                    "ApproximateCreationDateTime": 1767225600 + n,
                    "Keys": key,
                    "NewImage": new,
                    **({"OldImage": old} if n % 2 else {}),
                    "SequenceNumber": f"{(shard + 1) * 10**12 + n:021d}",
                    "SizeBytes": 180 + n,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            }
        )
    return records


# -- helpers -----------------------------------------------------------------------------


class _Run:
    """One sink under test, with its context, closed by ``aclose()``."""

    def __init__(self, sink: Sink, context: SinkContext) -> None:
        self.sink = sink
        self.context = context

    @classmethod
    async def build(
        cls, target: ContractTarget, options: Mapping[str, Any], *, check: bool
    ) -> _Run:
        """Validate ``options`` (and ``check`` them), build the sink, check its attributes."""
        sink_type = target.sink_type
        path = f"sinks.{target.name}"
        try:
            config = sink_type.config.model_validate(dict(options))
        except Exception as exc:
            raise ContractViolation(f"{path}: options are not valid: {exc}") from exc
        if check:
            sink_type.check(target.name, config, path)
        context = target.context(target.name)
        try:
            sink: Sink = sink_type.build(target.name, config, context)
            if getattr(sink, "name", None) != target.name:
                raise ContractViolation(
                    f"sink.name is {getattr(sink, 'name', None)!r}, not {target.name!r}"
                )
            if not isinstance(getattr(sink, "ordered", None), bool):
                raise ContractViolation("sink.ordered must be a bool")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await context.aclose()
            raise
        return cls(sink, context)

    async def send(self, batch: Sequence[Record]) -> dict[int, Failure]:
        try:
            result = await self.sink.send(batch)
        except Exception as exc:
            raise ContractViolation(
                f"send() of {len(batch)} records to a healthy destination raised "
                f"{type(exc).__name__}: {exc}; exceptions are for whole-batch failures only"
            ) from exc
        return _validated(result, batch)

    async def stop_twice(self) -> None:
        for attempt in ("first", "second"):
            try:
                await self.sink.stop()
            except Exception as exc:
                raise ContractViolation(
                    f"the {attempt} stop() raised {type(exc).__name__}: {exc}; stop() must be "
                    "idempotent"
                ) from exc

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.context.aclose()


def _validated(result: object, batch: Sequence[Record]) -> dict[int, Failure]:
    if not isinstance(result, Mapping):
        raise ContractViolation(
            f"send() returned {type(result).__name__}, not a mapping of index to Failure"
        )
    for index, failure in result.items():
        if isinstance(index, bool) or not isinstance(index, int):
            raise ContractViolation(f"send() returned key {index!r}: keys are batch indexes")
        if not 0 <= index < len(batch):
            raise ContractViolation(
                f"send() returned index {index} for a batch of {len(batch)} records"
            )
        if not isinstance(failure, Failure):
            raise ContractViolation(
                f"send() returned {type(failure).__name__} for index {index}, not a Failure"
            )
        if not isinstance(failure.retryable, bool) or not isinstance(failure.reason, str):
            raise ContractViolation(f"Failure for index {index} is malformed: {failure!r}")
        if failure.retry_after is not None and not failure.retry_after >= 0:
            raise ContractViolation(f"Failure for index {index} has retry_after < 0")
    return dict(result)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a task group's failure (the others are the same story)."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def _arrived(target: ContractTarget) -> set[str]:
    found = target.arrived()
    if inspect.isawaitable(found):
        found = await found
    return set(found)


def _delivered(batch: Sequence[Record], failures: Mapping[int, Failure]) -> set[str]:
    return {r["eventID"] for i, r in enumerate(batch) if i not in failures}


async def _expect_arrived(
    target: ContractTarget, tag: str, delivered: set[str], sent: set[str]
) -> None:
    arrived = await _arrived(target)
    missing = delivered - arrived
    if missing:
        raise ContractViolation(
            f"{len(missing)} of {len(delivered)} records reported delivered have not arrived, "
            f"e.g. {sorted(missing)[:3]}"
        )
    invented = {e for e in arrived if e.startswith(f"{tag}-")} - sent
    if invented:
        raise ContractViolation(f"records that were never sent arrived: {sorted(invented)[:3]}")


# -- the checks --------------------------------------------------------------------------


async def lifecycle(target: ContractTarget) -> None:
    """start(), send() a batch, stop() twice: every record arrives, stop() is idempotent."""
    tag = uuid.uuid4().hex[:12]
    batch = make_records(target.batch_size, tag=tag)
    run = await _Run.build(target, target.options, check=True)
    try:
        try:
            await run.sink.start()
            failures = await run.send(batch)
            await _expect_arrived(
                target, tag, _delivered(batch, failures), {r["eventID"] for r in batch}
            )
            if failures:
                raise ContractViolation(
                    f"a healthy destination refused records: {sorted(failures.items())[:3]}"
                )
        finally:
            await run.stop_twice()
    finally:
        await run.aclose()


async def stop_without_start(target: ContractTarget) -> None:
    """stop() of a sink that was never started does nothing, twice."""
    run = await _Run.build(target, target.options, check=True)
    try:
        await run.stop_twice()
    finally:
        await run.aclose()


async def stop_after_failed_start(target: ContractTarget) -> None:
    """stop() after start() raised does not raise, twice."""
    if target.broken_options is None:
        raise NotApplicable("the target has no broken_options that make start() fail")
    run = await _Run.build(target, target.broken_options, check=False)
    try:
        failed = False
        try:
            await run.sink.start()
        except Exception:  # noqa: BLE001 - any failure of start() is what is wanted here
            failed = True
        if not failed:
            raise ContractViolation("start() with broken_options did not fail")
        await run.stop_twice()
    finally:
        await run.aclose()


async def empty_batch(target: ContractTarget) -> None:
    """send([]) returns no failures (the core never sends one, but a sink must cope)."""
    run = await _Run.build(target, target.options, check=True)
    try:
        try:
            await run.sink.start()
            await run.send([])
        finally:
            await run.stop_twice()
    finally:
        await run.aclose()


async def refused_record(target: ContractTarget) -> None:
    """A record the destination refuses is a Failure at its index, not an exception;
    every record not reported failed has arrived."""
    if target.poison is None:
        raise NotApplicable("the target has no poison to make a record the destination refuses")
    tag = uuid.uuid4().hex[:12]
    batch = make_records(max(3, target.batch_size), tag=tag)
    bad = len(batch) // 2
    batch[bad] = target.poison(batch[bad])
    run = await _Run.build(target, target.options, check=True)
    try:
        try:
            await run.sink.start()
            failures = await run.send(batch)
            if bad not in failures:
                raise ContractViolation(
                    f"the refused record (index {bad}) is not reported as a Failure: "
                    f"{sorted(failures)}"
                )
            await _expect_arrived(
                target, tag, _delivered(batch, failures), {r["eventID"] for r in batch}
            )
        finally:
            await run.stop_twice()
    finally:
        await run.aclose()


async def concurrent_sends(target: ContractTarget) -> None:
    """``concurrency`` send() calls at once, one shard each, all land."""
    tag = uuid.uuid4().hex[:12]
    batches = [
        make_records(target.batch_size, tag=tag, shard=shard) for shard in range(target.concurrency)
    ]
    delivered: set[str] = set()
    run = await _Run.build(target, target.options, check=True)
    try:
        try:
            await run.sink.start()

            async def send(batch: list[Record]) -> None:
                failures = await run.send(batch)
                if failures:
                    raise ContractViolation(
                        f"a healthy destination refused records: {sorted(failures.items())[:3]}"
                    )
                delivered.update(_delivered(batch, failures))

            try:
                async with anyio.create_task_group() as tg:
                    for batch in batches:
                        tg.start_soon(send, batch)
            except BaseExceptionGroup as group:
                raise _first(group) from None
            sent = {r["eventID"] for b in batches for r in b}
            await _expect_arrived(target, tag, delivered, sent)
        finally:
            await run.stop_twice()
    finally:
        await run.aclose()


async def records_not_mutated(target: ContractTarget) -> None:
    """send() leaves the records it is given exactly as they were (other sinks get the
    same objects), unless the sink says it may change them (``mutates_records``: the
    worker then gives it records of its own)."""
    tag = uuid.uuid4().hex[:12]
    batch = make_records(target.batch_size, tag=tag)
    if target.poison is not None:
        batch[0] = target.poison(batch[0])
    before = copy.deepcopy(batch)
    run = await _Run.build(target, target.options, check=True)
    if getattr(run.sink, "mutates_records", False):
        await run.aclose()
        raise NotApplicable("the sink says it may change its records (mutates_records)")
    try:
        try:
            await run.sink.start()
            await run.send(batch)
            if batch != before:
                changed = [i for i, (a, b) in enumerate(zip(batch, before, strict=True)) if a != b]
                raise ContractViolation(f"send() changed the records at {changed[:5]}")
        finally:
            await run.stop_twice()
        if batch != before:
            raise ContractViolation("the records changed after send() returned")
    finally:
        await run.aclose()


CHECKS: tuple[Callable[[ContractTarget], Awaitable[None]], ...] = (
    lifecycle,
    stop_without_start,
    stop_after_failed_start,
    empty_batch,
    refused_record,
    concurrent_sends,
    records_not_mutated,
)
"""Every check, in a sensible order; each takes a ``ContractTarget``."""


async def check_sink(target: ContractTarget) -> list[str]:
    """Run every check; returns the names of the checks that were not applicable.

    Raises:
        ContractViolation: the first check the sink fails.
    """
    skipped: list[str] = []
    for check in CHECKS:
        try:
            await check(target)
        except NotApplicable:
            skipped.append(check.__name__)
    return skipped
