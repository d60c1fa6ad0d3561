"""``backfill: on_first_start``: a sink's backfill, run inside the worker the first time the
application sees the sink.

Before the worker records its sink set (``LeaseCoordinator.start``), ``plan`` creates, for
every such sink the recorded set lacks (or every one, at the application's first start), a
backfill row per stream feeding it (id ``first-start.<stream>.<sink>``, no owner) and fixes
the stream's position at the backfill's version time. So a worker that dies in between
leaves a row that the next start runs. After the sinks started, ``run_pending`` runs every
unfinished worker backfill nobody runs, through the worker's own routes; one that fails is
logged and left for the next start.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fanout.aws.clients import AwsClients
from fanout.backfill.records import version_time
from fanout.backfill.runner import Backfill, BackfillError, owner_gone, table_of
from fanout.config import Config
from fanout.delivery.route import Route
from fanout.observe.metrics import Metrics
from fanout.progress.store import BackfillRow, CheckpointStore

log = logging.getLogger("fanout.backfill")

ORIGIN = "worker"


def first_start_id(stream: str, sink: str) -> str:
    return f"first-start.{stream}.{sink}"


def wanted(config: Config, previous: dict[str, str] | None) -> list[tuple[str, str]]:
    """(stream, sink) pairs to backfill: sinks with ``backfill: on_first_start`` that the
    application's recorded sink set lacks (with that type)."""
    names = list(config.settings.streams)
    pairs: list[tuple[str, str]] = []
    for sink, cfg in config.sinks.items():
        if cfg.backfill != "on_first_start":
            continue
        if previous is not None and previous.get(sink) == cfg.type:
            continue
        pairs.extend((stream, sink) for stream in cfg.streams or names)
    return pairs


async def plan(
    config: Config, store: CheckpointStore, aws: AwsClients, previous: dict[str, str] | None
) -> None:
    """Create the backfill rows of sinks new to the application, fixing each stream's
    position first."""
    existing = {state.row.backfill_id for state in await store.backfills()}
    for stream, sink in wanted(config, previous):
        backfill_id = first_start_id(stream, sink)
        if backfill_id in existing:
            continue
        now = time.time()
        created = version_time(now)
        table, arn = await _table_stream(config, aws, stream)
        await store.stream_start(arn, float(created))
        row = BackfillRow(
            backfill_id, stream, table, sink, config.settings.backfill.segments,
            created, now, ORIGIN,
        )  # fmt: skip
        if await store.claim_backfill(row, None) is not None:
            log.info(
                "backfill_planned",
                extra={"backfill": backfill_id, "stream": stream, "sink": sink},
            )


async def _table_stream(config: Config, aws: AwsClients, stream: str) -> tuple[str, str]:
    cfg = config.settings.streams[stream]
    table = table_of(config, stream)
    if cfg.stream_arn:
        return table, cfg.stream_arn
    ddb: Any = await aws.client("dynamodb", region=cfg.region, endpoint_url=cfg.endpoint_url)
    described = (await ddb.describe_table(TableName=table))["Table"]
    arn = described.get("LatestStreamArn")
    if not arn:
        raise BackfillError(f"table {table} has no stream to stitch the backfill to")
    return table, str(arn)


async def run_pending(
    config: Config,
    store: CheckpointStore,
    aws: AwsClients,
    routes: list[Route],
    owner: str,
    metrics: Metrics | None = None,
) -> None:
    """Run every unfinished worker backfill that nobody runs, one after the other."""
    for state in await store.backfills():
        row = state.row
        if row.origin != ORIGIN or row.done or not owner_gone(row, time.time()):
            continue
        if any(name not in config.sinks for name in row.sink_names):
            continue  # a sink since removed from the config
        try:
            backfill = Backfill(
                config,
                row.sink_names,
                stream=row.stream,
                origin=ORIGIN,
                store=store,
                aws=aws,
                owner=owner,
                routes=routes,
                backfill_id=row.backfill_id,
                metrics=metrics,
            )
            outcome = await backfill.run()
        except Exception as exc:  # noqa: BLE001 - the worker goes on; the next start retries
            log.error(
                "backfill_failed",
                extra={"backfill": row.backfill_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            continue
        log.info("backfill_done", extra=outcome.as_dict())
