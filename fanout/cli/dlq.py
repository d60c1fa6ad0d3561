"""``fanout dlq inspect|redrive``: look at dead-lettered records and deliver them again.

``inspect`` summarises each sink's dead-letter destination: pending records, records already
redriven, counts per error class, the oldest and newest. ``redrive`` hands a sink's
dead-lettered records to that sink (or ``--to`` another one) with the usual delivery logic
(per-record answers, bisection, a few retries; ``max_record_age`` does not apply) and reports
how many went through.

A redrive is idempotent:

* from a file, every delivered record's key (sink, stream ARN, shard, sequence number) is
  appended, fsynced, to ``<file>.redriven`` after its batch was delivered; later runs skip
  those keys (and a record dead-lettered twice is delivered once);
* from SQS, a message is deleted once its record was delivered (and its overflow file or
  object removed); messages that could not be delivered become visible again at the end;
* from S3, an entry's object is deleted once its record was delivered.

A crash between a delivery and its bookkeeping can deliver that one batch again (at least
once, never lost). Records that fail again stay in the destination, untouched.

Destinations are read and acknowledged through the classes the worker writes with
(``fanout.delivery.deadletter``), SQS with the process's shared clients (``AwsClients``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from fanout.aws.clients import AwsClients
from fanout.cli.loader import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    add_config_option,
    describe,
    load,
)
from fanout.config import Config, SinkConfig
from fanout.delivery.deadletter import (
    Entry,
    FileDeadLetter,
    Letter,
    ReadableDeadLetter,
    entry_key,
)
from fanout.errors import ConfigError, FanoutError

if TYPE_CHECKING:
    from fanout.delivery.deadletter.s3 import S3DeadLetter
    from fanout.delivery.deadletter.sqs import SqsDeadLetter

log = logging.getLogger("fanout.dlqcli")

_S3_SAMPLE = 1000  # objects an S3 inspect reads for error classes (it counts them all)


def add_parser(subparsers: Any) -> None:
    """Add the ``dlq`` command (with ``inspect`` and ``redrive``) to ``subparsers``."""
    dlq = subparsers.add_parser("dlq", help="inspect and redrive dead-lettered records")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)
    inspect = sub.add_parser("inspect", help="summarise dead-lettered records per sink")
    add_config_option(inspect)
    inspect.add_argument("--sink", help="only this sink")
    inspect.add_argument("--from", dest="source", choices=["file", "sqs", "s3"], help="destination")
    inspect.add_argument("--path", help="dead-letter file (default: the sink's)")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    redrive = sub.add_parser("redrive", help="deliver a sink's dead-lettered records again")
    add_config_option(redrive)
    redrive.add_argument("--sink", required=True, help="whose dead-lettered records")
    redrive.add_argument("--from", dest="source", choices=["file", "sqs", "s3"], help="destination")
    redrive.add_argument("--to", dest="target", help="deliver to this sink instead")
    redrive.add_argument("--path", help="dead-letter file (default: the sink's)")
    redrive.add_argument(
        "--attempts", type=int, default=3, help="attempts per record before it stays (default 3)"
    )
    redrive.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``fanout dlq ...``; returns the exit code.

    Raises:
        CommandError: no config file, or an invalid one.
    """
    config, _ = load(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    try:
        if args.dlq_command == "inspect":
            return anyio.run(_inspect, config, args)
        return anyio.run(_redrive, config, args)
    except ConfigError as exc:
        raise CommandError(str(exc), EXIT_CONFIG) from exc
    except FanoutError as exc:
        raise CommandError(describe(exc) or f"{type(exc).__name__}: {exc}", EXIT_FAILED) from exc


# -- where a sink's dead letters are ----------------------------------------------------------


def destination(
    config: Config, sink: str, kind: str | None, path: str | None, clients: AwsClients
) -> ReadableDeadLetter:
    """The destination to read, from the options or the sink's ``dead_letter`` config: the
    classes (and, for SQS, the client settings) the worker writes with."""
    if sink not in config.sinks:
        raise ConfigError("--sink", f"unknown sink {sink!r}")
    dl = config.sinks[sink].dead_letter
    if kind is None:
        kind = "file" if path else dl.type
    if kind == "sink":
        raise ConfigError(
            "--from",
            f"sink {sink!r} dead-letters into sink {dl.sink!r}; read them from there "
            "(or pass --from file --path FILE)",
        )
    if kind == "sqs":
        from fanout.delivery.deadletter.sqs import SqsDeadLetter

        if not dl.queue_url and not dl.queue_name:
            raise ConfigError("--from", f"sink {sink!r} has no dead_letter.queue_url")
        return SqsDeadLetter.for_sink(config, sink, clients)
    if kind == "s3":
        from fanout.delivery.deadletter.s3 import S3DeadLetter

        if not dl.bucket:
            raise ConfigError("--from", f"sink {sink!r} has no dead_letter.bucket")
        return S3DeadLetter.for_sink(config, sink, clients)
    return FileDeadLetter(Path(path) if path else config.dead_letter_path(sink), mode=dl.file_mode)


# -- inspect --------------------------------------------------------------------------------


@dataclass
class Summary:
    """What one sink's dead-letter destination holds."""

    sink: str
    destination: str
    pending: int = 0
    redriven: int = 0
    approximate: bool = False
    errors: Counter[str] = field(default_factory=Counter)
    oldest: float | None = None
    newest: float | None = None
    note: str = ""

    def add(self, item: Entry) -> None:
        self.pending += 1
        error = item.get("error") or {}
        self.errors[str(error.get("class", "?"))] += 1
        at = item.get("dead_lettered_at")
        if isinstance(at, int | float):
            self.oldest = at if self.oldest is None else min(self.oldest, at)
            self.newest = at if self.newest is None else max(self.newest, at)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sink": self.sink,
            "destination": self.destination,
            "pending": self.pending,
            "approximate": self.approximate,
            "redriven": self.redriven,
            "errors": dict(self.errors.most_common()),
            "oldest": self.oldest,
            "newest": self.newest,
            "note": self.note,
        }


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


async def file_summary(sink: str, source: FileDeadLetter) -> Summary:
    """Summarise the entries of ``sink`` in a dead-letter file (minus the redriven ones)."""
    summary = Summary(sink, source.location)
    if not source.path.exists():
        summary.note = "no dead-letter file (nothing dead-lettered)"
        return summary
    seen: set[str] = set()
    async for letters in source.read():
        for letter in letters:
            item = letter.entry
            if item is None or item.get("sink") != sink:
                continue
            key = entry_key(item)
            if key in seen:
                continue
            seen.add(key)
            if letter.acknowledged:
                summary.redriven += 1
            else:
                summary.add(item)
    return summary


async def _s3_summary(sink: str, source: S3DeadLetter) -> Summary:
    """Every object counted; error classes and times from the first ``_S3_SAMPLE`` read."""
    summary = Summary(sink, source.location)
    count = 0
    sample: list[str] = []
    async for keys in source.keys():
        count += len(keys)
        sample.extend(keys[: max(0, _S3_SAMPLE - len(sample))])
    for letter in await source.letters(sample):
        if letter.entry is not None and letter.entry.get("sink") == sink:
            summary.add(letter.entry)
    if count > len(sample):
        summary.note = f"error classes and times from the oldest {len(sample)} of {count}"
    summary.pending = count
    return summary


async def _sqs_summary(sink: str, source: SqsDeadLetter) -> Summary:
    summary = Summary(sink, source.location, approximate=True)
    total, hidden = await source.approximate_counts()
    # A peek (the messages stay where they are) for the error classes.
    for item in await source.peek():
        if item.get("sink") == sink:
            summary.add(item)
    sampled = summary.pending
    summary.pending = total + hidden
    summary.note = (
        f"queue holds about {total} visible and {hidden} in-flight messages (every sink "
        f"sending to it); error classes and times from a sample of {sampled}"
    )
    return summary


async def _inspect(config: Config, args: argparse.Namespace) -> int:
    async with _aws() as clients:
        summaries = await _summaries(config, args, clients)
    if args.json:
        sys.stdout.write(orjson.dumps([s.as_dict() for s in summaries]).decode() + "\n")
        return EXIT_OK
    for s in summaries:
        about = "about " if s.approximate else ""
        print(f"sink {s.sink}: {about}{s.pending} dead-lettered, {s.redriven} redriven")
        print(f"  destination: {s.destination}")
        if s.pending and s.oldest is not None:
            print(f"  oldest: {_when(s.oldest)}  newest: {_when(s.newest)}")
        for error_class, count in s.errors.most_common():
            print(f"  {error_class}: {count}")
        if s.note:
            print(f"  note: {s.note}")
    return EXIT_OK


async def _summaries(
    config: Config, args: argparse.Namespace, clients: AwsClients
) -> list[Summary]:
    names = [args.sink] if args.sink else list(config.sinks)
    summaries: list[Summary] = []
    for name in names:
        if name not in config.sinks:
            raise ConfigError("--sink", f"unknown sink {name!r}")
        dl = config.sinks[name].dead_letter
        if dl.type == "sink" and not args.source and not args.path:
            summaries.append(
                Summary(name, f"sink:{dl.sink}", note=f"dead letters go to sink {dl.sink!r}")
            )
            continue
        source = destination(config, name, args.source, args.path, clients)
        if isinstance(source, FileDeadLetter):
            summaries.append(await file_summary(name, source))
            continue
        from fanout.delivery.deadletter.s3 import S3DeadLetter

        if isinstance(source, S3DeadLetter):
            summaries.append(await _s3_summary(name, source))
        else:
            from fanout.delivery.deadletter.sqs import SqsDeadLetter

            assert isinstance(source, SqsDeadLetter)
            summaries.append(await _sqs_summary(name, source))
    return summaries


@asynccontextmanager
async def _aws() -> AsyncIterator[AwsClients]:
    clients = AwsClients()
    try:
        yield clients
    finally:
        await clients.aclose()


# -- redrive --------------------------------------------------------------------------------


@dataclass
class Report:
    """What a redrive did."""

    sink: str
    target: str
    source: str
    found: int = 0
    already_redriven: int = 0
    duplicates: int = 0
    other_sinks: int = 0
    unreadable: int = 0
    delivered: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Collector:
    """A dead-letter destination that only remembers what the redrive gave up on."""

    name = "redrive"

    def __init__(self) -> None:
        self.records: set[tuple[str, object]] = set()
        self.errors: list[str] = []

    async def write(self, entries: list[Entry]) -> None:
        for item in entries:
            self.records.add(_given_up(str(item.get("shard_id")), item["record"]))
            self.errors.append(f"{item['sequence_number']}: {item['error']['message']}")

    async def aclose(self) -> None:
        return None


class Redriver:
    """Delivers entries to one sink with the delivery logic of the worker."""

    def __init__(self, config: Config, target: str, attempts: int) -> None:
        from fanout.observe.metrics import Metrics
        from fanout.retry import RetryPolicy
        from fanout.sink import SinkContext

        if target not in config.sinks:
            raise ConfigError("--to", f"unknown sink {target!r}")
        cfg: SinkConfig = config.sinks[target]
        retry = cfg.retry.model_copy(
            update={"max_attempts": max(1, attempts), "max_record_age": -1.0}
        )
        self.config = cfg.model_copy(update={"retry": retry, "parallelization_factor": 1})
        entry = config.sink_type(target)
        self.metrics = Metrics()
        self.context = SinkContext.standalone(target, metrics=self.metrics)
        self.sink = entry.build(target, cfg, self.context)
        self.target = target
        self.backoff = RetryPolicy(retry.initial_backoff, retry.max_backoff)
        self.collector = _Collector()

    async def __aenter__(self) -> Redriver:
        await self.sink.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.sink.stop()
        finally:
            # The context's HTTP session and AWS clients are the redrive's to close.
            await self.context.aclose()

    async def deliver(self, items: list[Entry]) -> list[bool]:
        """Deliver the records of ``items`` (in order); True for each that went through."""
        from fanout.delivery import Lane, Route
        from fanout.progress.tracker import ShardProgress

        route = Route(
            name=self.target,
            sink=self.sink,
            config=self.config,
            predicate=None,
            dead_letter=self.collector,
            backoff=self.backoff,
            metrics=self.metrics,
        )
        groups: dict[tuple[str, str, str], list[Entry]] = defaultdict(list)
        for item in items:
            key = (str(item.get("stream")), str(item.get("stream_arn")), str(item.get("shard_id")))
            groups[key].append(item)
        size = self.config.batch_size
        for (stream, arn, shard), group in groups.items():
            lane = Lane(route, ShardProgress(stream, arn, shard, None))
            for start in range(0, len(group), size):
                await lane.deliver([item["record"] for item in group[start : start + size]])
        given_up = self.collector.records
        return [
            _given_up(str(item.get("shard_id")), item["record"]) not in given_up for item in items
        ]


def _given_up(shard: str, record: Any) -> tuple[str, object]:
    """What identifies a redriven record among those given up on: its shard and sequence
    number (a sink that changes its records is retried, and gives up, on copies of them)."""
    dynamodb = record.get("dynamodb") if isinstance(record, dict) else None
    seq = dynamodb.get("SequenceNumber") if isinstance(dynamodb, dict) else None
    return shard, seq if isinstance(seq, str) else id(record)


async def _redrive(config: Config, args: argparse.Namespace) -> int:
    sink = args.sink
    target = args.target or sink
    async with _aws() as clients:
        source = destination(config, sink, args.source, args.path, clients)
        report = Report(sink, target, source.location)
        async with Redriver(config, target, args.attempts) as redriver:
            await redrive(source, sink, redriver, report)
    if args.json:
        sys.stdout.write(orjson.dumps(report.as_dict()).decode() + "\n")
    else:
        print(
            f"redrive {report.sink} -> {report.target} from {report.source}: "
            f"{report.delivered} delivered, {report.failed} failed, "
            f"{report.already_redriven} already redriven, {report.duplicates} duplicates"
            + (f", {report.unreadable} unreadable" if report.unreadable else "")
        )
        for line in redriver.collector.errors[:20]:
            print(f"  failed {line}")
    return EXIT_OK if report.failed == 0 and report.unreadable == 0 else EXIT_FAILED


async def redrive(
    source: ReadableDeadLetter, sink: str, redriver: Redriver, report: Report
) -> None:
    """Deliver the entries of ``sink`` in ``source`` once each, acknowledging each batch that
    went through; what stays (other sinks, failures, unreadable) is released at the end."""
    size = max(1, redriver.config.batch_size)
    queued: set[str] = set()  # keys handed to the sink in this run
    delivered: set[str] = set()
    stay: list[Letter] = []
    async for letters in source.read():
        ours: list[tuple[Letter, Entry]] = []
        copies: list[tuple[Letter, str]] = []
        for letter in letters:
            item = letter.entry
            if item is None:
                report.unreadable += 1
                log.error("dead_letter_unreadable", extra={"error": letter.error})
                stay.append(letter)
                continue
            if item.get("sink") != sink:
                report.other_sinks += 1
                stay.append(letter)
                continue
            report.found += 1
            key = entry_key(item)
            if letter.acknowledged:
                report.already_redriven += 1
            elif key in queued:
                report.duplicates += 1
                copies.append((letter, key))
            else:
                queued.add(key)
                ours.append((letter, item))
        for start in range(0, len(ours), size):
            chunk = ours[start : start + size]
            outcome = await redriver.deliver([item for _, item in chunk])
            done: list[Letter] = []
            for (letter, item), ok in zip(chunk, outcome, strict=True):
                if ok:
                    done.append(letter)
                    delivered.add(entry_key(item))
                else:
                    stay.append(letter)
            await source.acknowledge(done, target=redriver.target)
            report.delivered += len(done)
            report.failed += len(chunk) - len(done)
        # A record dead-lettered twice is delivered once: its copies go with it.
        await source.acknowledge(
            [letter for letter, key in copies if key in delivered], target=redriver.target
        )
        stay.extend(letter for letter, key in copies if key not in delivered)
    await source.release(stay)
