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
* from SQS, a message is deleted once its record was delivered (and its overflow file
  removed); messages that could not be delivered become visible again at the end.

A crash between a delivery and its bookkeeping can deliver that one batch again (at least
once, never lost). Records that fail again stay in the destination, untouched.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson

from fanout.cli.loader import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    add_config_option,
    load,
)
from fanout.config import Config, SinkConfig
from fanout.delivery.deadletter import Entry, entry_key, read_entries
from fanout.errors import ConfigError, DeadLetterError, FanoutError

log = logging.getLogger("fanout.dlqcli")

SIDECAR_SUFFIX = ".redriven"
_RECEIVE_WAIT_S = 1
_VISIBILITY_S = 300


def add_parser(subparsers: Any) -> None:
    """Add the ``dlq`` command (with ``inspect`` and ``redrive``) to ``subparsers``."""
    dlq = subparsers.add_parser("dlq", help="inspect and redrive dead-lettered records")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)
    inspect = sub.add_parser("inspect", help="summarise dead-lettered records per sink")
    add_config_option(inspect)
    inspect.add_argument("--sink", help="only this sink")
    inspect.add_argument("--from", dest="source", choices=["file", "sqs"], help="destination")
    inspect.add_argument("--path", help="dead-letter file (default: the sink's)")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    redrive = sub.add_parser("redrive", help="deliver a sink's dead-lettered records again")
    add_config_option(redrive)
    redrive.add_argument("--sink", required=True, help="whose dead-lettered records")
    redrive.add_argument("--from", dest="source", choices=["file", "sqs"], help="destination")
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
        raise CommandError(f"{type(exc).__name__}: {exc}", EXIT_FAILED) from exc


# -- where a sink's dead letters are ----------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a sink's dead letters are read from."""

    kind: str  # "file" or "sqs"
    path: Path | None = None
    queue_url: str | None = None
    region: str | None = None
    endpoint_url: str | None = None

    def describe(self) -> str:
        return str(self.path) if self.kind == "file" else str(self.queue_url)


def source_of(config: Config, sink: str, kind: str | None, path: str | None) -> Source:
    """The destination to read, from the options or the sink's ``dead_letter`` config."""
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
        if not dl.queue_url:
            raise ConfigError("--from", f"sink {sink!r} has no dead_letter.queue_url")
        return Source("sqs", queue_url=dl.queue_url, region=dl.region, endpoint_url=dl.endpoint_url)
    return Source("file", path=Path(path) if path else config.dead_letter_path(sink))


# -- the redrive bookkeeping of a file ------------------------------------------------------


class Sidecar:
    """``<dead-letter file>.redriven``: one JSON line per redriven record key, fsynced."""

    def __init__(self, dlq_path: Path) -> None:
        self.path = dlq_path.with_name(dlq_path.name + SIDECAR_SUFFIX)

    def keys(self) -> set[str]:
        """Keys of every record redriven so far."""
        if not self.path.exists():
            return set()
        done: set[str] = set()
        for line in self.path.read_bytes().splitlines():
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # cut short by a crash: that batch counts as not recorded
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                done.add(item["key"])
        return done

    def _append(self, data: bytes) -> None:
        with self.path.open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    async def add(self, keys: Iterable[str], target: str) -> None:
        """Record ``keys`` as redriven to ``target``."""
        now = time.time()
        data = b"".join(orjson.dumps({"key": k, "to": target, "at": now}) + b"\n" for k in keys)
        if data:
            await anyio.to_thread.run_sync(self._append, data)


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


def file_summary(sink: str, path: Path) -> Summary:
    """Summarise the entries of ``sink`` in a dead-letter file (minus the redriven ones)."""
    summary = Summary(sink, str(path))
    if not path.exists():
        summary.note = "no dead-letter file (nothing dead-lettered)"
        return summary
    done = Sidecar(path).keys()
    seen: set[str] = set()
    for item in read_entries(path):
        if item.get("sink") != sink:
            continue
        key = entry_key(item)
        if key in seen:
            continue
        seen.add(key)
        if key in done:
            summary.redriven += 1
        else:
            summary.add(item)
    return summary


async def _sqs_summary(sink: str, source: Source) -> Summary:
    summary = Summary(sink, str(source.queue_url), approximate=True)
    async with _sqs_client(source) as client:
        answer = await client.get_queue_attributes(
            QueueUrl=source.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attrs = answer.get("Attributes", {})
        total = int(attrs.get("ApproximateNumberOfMessages", 0))
        hidden = int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
        # A peek (visibility 0 leaves the messages where they are) for the error classes.
        seen: set[str] = set()
        for _ in range(5):
            got = await client.receive_message(
                QueueUrl=source.queue_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=0,
                WaitTimeSeconds=0,
            )
            messages = got.get("Messages", [])
            fresh = [m for m in messages if m["MessageId"] not in seen]
            if not fresh:
                break
            for message in fresh:
                seen.add(message["MessageId"])
                try:
                    item = orjson.loads(message["Body"])
                except orjson.JSONDecodeError:
                    continue
                if isinstance(item, dict) and item.get("sink") == sink:
                    summary.add(item)
    sampled = summary.pending
    summary.pending = total + hidden
    summary.note = (
        f"queue holds about {total} visible and {hidden} in-flight messages (every sink "
        f"sending to it); error classes and times from a sample of {sampled}"
    )
    return summary


async def _inspect(config: Config, args: argparse.Namespace) -> int:
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
        source = source_of(config, name, args.source, args.path)
        if source.kind == "sqs":
            summaries.append(await _sqs_summary(name, source))
        else:
            assert source.path is not None
            summaries.append(file_summary(name, source.path))
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
        self.records: set[int] = set()
        self.errors: list[str] = []

    async def write(self, entries: list[Entry]) -> None:
        for item in entries:
            self.records.add(id(item["record"]))
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
        from fanout.delivery.lane import Lane, Route
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
        return [id(item["record"]) not in self.collector.records for item in items]


async def _redrive(config: Config, args: argparse.Namespace) -> int:
    sink = args.sink
    source = source_of(config, sink, args.source, args.path)
    target = args.target or sink
    report = Report(sink, target, source.describe())
    async with Redriver(config, target, args.attempts) as redriver:
        if source.kind == "sqs":
            await _redrive_sqs(source, sink, redriver, report)
        else:
            await _redrive_file(source, sink, redriver, report)
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


async def _redrive_file(source: Source, sink: str, redriver: Redriver, report: Report) -> None:
    assert source.path is not None
    if not source.path.exists():
        return
    sidecar = Sidecar(source.path)
    done = sidecar.keys()
    todo: list[Entry] = []
    keys: set[str] = set()
    for item in read_entries(source.path):
        if item.get("sink") != sink:
            report.other_sinks += 1
            continue
        report.found += 1
        key = entry_key(item)
        if key in done:
            report.already_redriven += 1
        elif key in keys:
            report.duplicates += 1
        else:
            keys.add(key)
            todo.append(item)
    size = max(1, redriver.config.batch_size)
    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        outcome = await redriver.deliver(chunk)
        delivered = [entry_key(item) for item, ok in zip(chunk, outcome, strict=True) if ok]
        await sidecar.add(delivered, redriver.target)
        report.delivered += len(delivered)
        report.failed += len(chunk) - len(delivered)


def _sqs_client(source: Source) -> Any:
    from aiobotocore.session import get_session

    return get_session().create_client(
        "sqs", region_name=source.region, endpoint_url=source.endpoint_url
    )


async def _redrive_sqs(source: Source, sink: str, redriver: Redriver, report: Report) -> None:
    from fanout.delivery.deadletter.sqs import load_body

    url = source.queue_url
    release: list[str] = []  # receipt handles to make visible again at the end
    seen: set[str] = set()
    delivered_keys: set[str] = set()
    async with _sqs_client(source) as client:
        while True:
            got = await client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=_VISIBILITY_S,
                WaitTimeSeconds=_RECEIVE_WAIT_S,
            )
            messages = [m for m in got.get("Messages", []) if m["MessageId"] not in seen]
            if not messages:
                break
            ours: list[tuple[dict[str, Any], Entry, Path | None]] = []
            finished: list[tuple[dict[str, Any], Path | None]] = []
            for message in messages:
                seen.add(message["MessageId"])
                try:
                    item, overflow = load_body(message["Body"])
                except DeadLetterError as exc:
                    report.unreadable += 1
                    log.error("dead_letter_unreadable", extra={"error": str(exc)})
                    release.append(message["ReceiptHandle"])
                    continue
                if item.get("sink") != sink:
                    report.other_sinks += 1
                    release.append(message["ReceiptHandle"])
                    continue
                report.found += 1
                if entry_key(item) in delivered_keys:
                    report.duplicates += 1
                    finished.append((message, overflow))
                else:
                    ours.append((message, item, overflow))
            if ours:
                outcome = await redriver.deliver([item for _, item, _ in ours])
                for (message, item, overflow), ok in zip(ours, outcome, strict=True):
                    if ok:
                        report.delivered += 1
                        delivered_keys.add(entry_key(item))
                        finished.append((message, overflow))
                    else:
                        report.failed += 1
                        release.append(message["ReceiptHandle"])
            if finished:
                await _delete(client, url, finished)
        await _release(client, url, release)


async def _delete(
    client: Any, url: str | None, done: list[tuple[dict[str, Any], Path | None]]
) -> None:
    for start in range(0, len(done), 10):
        part = done[start : start + 10]
        answer = await client.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, (m, _) in enumerate(part)
            ],
        )
        failed = {f["Id"] for f in answer.get("Failed") or []}
        for i, (_, overflow) in enumerate(part):
            if str(i) not in failed and overflow is not None:
                overflow.unlink(missing_ok=True)
        if failed:
            log.warning("dead_letter_delete_failed", extra={"queue": url, "failed": len(failed)})


async def _release(client: Any, url: str | None, handles: list[str]) -> None:
    for start in range(0, len(handles), 10):
        part = handles[start : start + 10]
        await client.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                for i, h in enumerate(part)
            ],
        )
