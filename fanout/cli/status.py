"""``fanout status``: shards, checkpoints, leases, workers and dead-letter counts, offline.

Everything comes from the checkpoint store and the dead-letter files named in the config;
nothing reads the stream, so it works next to running workers (SQLite in WAL mode lets a
reader in while they write) and when the stream is unreachable. With the DynamoDB store it
reads the lease table (one Query).

The age of a shard's checkpoint is how long ago it last moved. It bounds the lag from
above: on a busy shard a large age means the worker is behind or stuck, on a quiet shard
it grows while nothing is pending (checkpoints are written only when they move).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fanout.cli.loader import EXIT_FAILED, EXIT_OK, CommandError, add_config_option, load_offline
from fanout.errors import FanoutError

if TYPE_CHECKING:
    from fanout.config import Config
    from fanout.progress.store import Checkpoint, Snapshot

EXIT_NO_STORE = EXIT_FAILED


@dataclass(frozen=True, slots=True)
class ShardStatus:
    stream: str
    stream_arn: str
    shard_id: str
    state: str  # "open" (being read or to be read) or "finished"
    sequence_number: str | None
    updated_at: float
    checkpoint_age_s: float
    owner: str | None  # the worker holding its lease
    lease_age_s: float | None  # since the owner took it
    handoff_to: str | None  # a worker that asked for it


@dataclass(frozen=True, slots=True)
class StreamStatus:
    stream: str
    source: str  # table name or stream ARN from the config
    shards: int
    open_shards: int
    finished_shards: int
    max_checkpoint_age_s: float | None  # over open shards
    held_shards: int  # open shards whose lease a live worker holds


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    worker_id: str
    host: str
    pid: int
    leases: int  # held at its last heartbeat
    heartbeat_age_s: float  # by this host's clock
    started_at: float
    live: bool  # beat within two lease durations (by this host's clock)
    sinks: str


@dataclass(frozen=True, slots=True)
class DeadLetterStatus:
    sink: str
    type: str
    destination: str
    records: int | None  # None where it cannot be counted offline (sqs, sink)
    last_written_at: float | None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``status`` sub-command to ``fanout``'s sub-parsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="show shards, checkpoints, checkpoint age and dead-letter counts",
        description="Read the checkpoint store and dead-letter files of a config and print "
        "shards, checkpoints, checkpoint age and dead-letter counts. Makes no AWS calls.",
    )
    add_config_option(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser


def _stream_of(arn: str, config: Config) -> str | None:
    for name, stream in config.streams.items():
        if stream.stream_arn is not None and stream.stream_arn == arn:
            return name
        if stream.table is not None and f":table/{stream.table}/stream/" in arn:
            return name
    return None


def count_lines(path: Path) -> int:
    """The entries of a dead-letter file, counted as ``fanout dlq`` reads them: whole lines
    that parse (a line cut short by a crash is not an entry)."""
    from fanout.delivery.deadletter.file import count_entries

    return count_entries(path)


def dead_letters(config: Config) -> list[DeadLetterStatus]:
    """Every sink's dead-letter destination, with the number of entries where countable."""
    result = []
    for name, cfg in config.sinks.items():
        dl = cfg.dead_letter
        if dl.type == "file":
            path = config.dead_letter_path(name)
            try:
                records: int | None = count_lines(path)
                last: float | None = path.stat().st_mtime
            except FileNotFoundError:
                records, last = 0, None
            result.append(DeadLetterStatus(name, "file", str(path), records, last))
        elif dl.type == "sqs":
            result.append(
                DeadLetterStatus(
                    name, "sqs", _without_credentials(dl.queue_url or dl.queue_name), None, None
                )
            )
        else:
            result.append(DeadLetterStatus(name, "sink", f"sink:{dl.sink}", None, None))
    return result


def _without_credentials(url: str | None) -> str:
    from fanout.observe.logs import REDACTOR

    return REDACTOR.redact(url or "")


def collect(config: Config, now: float | None = None) -> dict[str, Any]:
    """The whole status as plain data (what ``--json`` prints).

    Raises:
        FileNotFoundError: there is no checkpoint store yet.
        CheckpointError: the store cannot be read.
    """
    import anyio

    from fanout.aws.clients import AwsClients
    from fanout.progress.open import open_store

    now = time.time() if now is None else now
    cp = config.settings.checkpoints
    if cp.store == "sqlite" and not Path(cp.path).exists():
        raise FileNotFoundError(cp.path)
    aws = AwsClients()
    store = open_store(config, aws)

    async def read() -> Snapshot:
        try:
            await store.open()
            return await store.scan()
        finally:
            await store.aclose()
            await aws.aclose()

    snapshot = anyio.run(read)
    rows: list[Checkpoint] = snapshot.shards
    lease = cp.lease_duration
    workers = [
        WorkerStatus(
            worker_id=w.worker_id,
            host=w.host,
            pid=w.pid,
            leases=w.leases,
            heartbeat_age_s=round(max(0.0, now - w.heartbeat_at), 3),
            started_at=w.started_at,
            live=now - w.heartbeat_at < 2 * lease,
            sinks=w.sinks,
        )
        for w in snapshot.workers
    ]
    live = {w.worker_id for w in workers if w.live}
    shards = []
    for row in rows:
        arn, shard_id, seq, finished, updated_at = (
            row.stream_arn,
            row.shard_id,
            row.sequence,
            row.finished,
            row.updated_at,
        )
        stream = _stream_of(arn, config) or "(not configured)"
        shards.append(
            ShardStatus(
                stream=stream,
                stream_arn=arn,
                shard_id=shard_id,
                state="finished" if finished else "open",
                sequence_number=seq,
                updated_at=updated_at,
                checkpoint_age_s=round(max(0.0, now - updated_at), 3),
                owner=row.owner,
                lease_age_s=round(max(0.0, now - row.taken_at), 3)
                if row.owner and row.taken_at
                else None,
                handoff_to=row.handoff_to,
            )
        )
    order = {name: i for i, name in enumerate(config.streams)}
    shards.sort(key=lambda s: (order.get(s.stream, len(order)), s.stream_arn, s.shard_id))
    streams = []
    for name, cfg in config.streams.items():
        mine = [s for s in shards if s.stream == name]
        open_ages = [s.checkpoint_age_s for s in mine if s.state == "open"]
        streams.append(
            StreamStatus(
                stream=name,
                source=cfg.stream_arn or f"table {cfg.table}",
                shards=len(mine),
                open_shards=len(open_ages),
                finished_shards=len(mine) - len(open_ages),
                max_checkpoint_age_s=max(open_ages) if open_ages else None,
                held_shards=sum(1 for s in mine if s.state == "open" and s.owner in live),
            )
        )
    return {
        "checkpoint_store": store.describe,
        "application": config.application,
        "lease_duration_s": lease,
        "generated_at": now,
        "streams": [asdict(s) for s in streams],
        "shards": [asdict(s) for s in shards],
        "workers": [asdict(w) for w in workers],
        "dead_letters": [asdict(d) for d in dead_letters(config)],
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def render(status: dict[str, Any]) -> str:
    """The status as text tables."""
    out = [
        f"checkpoint store: {status['checkpoint_store']}",
        f"application: {status['application']}  lease duration: {_age(status['lease_duration_s'])}",
        "",
    ]
    out.append(
        _table(
            ["STREAM", "SOURCE", "SHARDS", "OPEN", "FINISHED", "MAX CHECKPOINT AGE", "HELD"],
            [
                [
                    s["stream"],
                    s["source"],
                    str(s["shards"]),
                    str(s["open_shards"]),
                    str(s["finished_shards"]),
                    _age(s["max_checkpoint_age_s"]),
                    str(s["held_shards"]),
                ]
                for s in status["streams"]
            ],
        )
    )
    out.append("")
    out.append(
        _table(
            ["STREAM", "SHARD", "STATE", "SEQUENCE NUMBER", "CHECKPOINT AGE", "OWNER", "LEASE AGE"],
            [
                [
                    s["stream"],
                    s["shard_id"],
                    s["state"],
                    s["sequence_number"] or "-",
                    _age(s["checkpoint_age_s"]),
                    (s["owner"] or "-") + (f" (to {s['handoff_to']})" if s["handoff_to"] else ""),
                    _age(s["lease_age_s"]),
                ]
                for s in status["shards"]
            ],
        )
    )
    out.append("")
    out.append(
        _table(
            ["WORKER", "HOST", "PID", "LEASES", "HEARTBEAT", "STATE"],
            [
                [
                    w["worker_id"],
                    w["host"],
                    str(w["pid"]),
                    str(w["leases"]),
                    _age(w["heartbeat_age_s"]) + " ago",
                    "live" if w["live"] else "stale",
                ]
                for w in status["workers"]
            ],
        )
    )
    out.append("")
    out.append(
        _table(
            ["SINK", "DEAD LETTERS", "RECORDS", "LAST WRITTEN"],
            [
                [
                    d["sink"],
                    d["destination"],
                    "n/a" if d["records"] is None else str(d["records"]),
                    "-"
                    if d["last_written_at"] is None
                    else _age(status["generated_at"] - d["last_written_at"]) + " ago",
                ]
                for d in status["dead_letters"]
            ],
        )
    )
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> int:
    """Print the status of the config in ``args.config`` (or ``$FANOUT_CONFIG``).

    Raises:
        CommandError: no config file, or an invalid one.
    """
    config, path = load_offline(args)  # no handler imports, no unused ${VAR}
    from fanout.observe.logs import REDACTOR, config_secrets

    REDACTOR.add(*config_secrets(config, path))  # destinations are printed masked like logs
    try:
        status = collect(config)
    except FileNotFoundError as exc:
        raise CommandError(
            f"no checkpoint store at {exc}: no worker has run with this config yet",
            EXIT_NO_STORE,
        ) from exc
    except FanoutError as exc:
        raise CommandError(f"cannot read the checkpoint store: {exc}", EXIT_NO_STORE) from exc
    if args.json:
        sys.stdout.write(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(status))
    return EXIT_OK
