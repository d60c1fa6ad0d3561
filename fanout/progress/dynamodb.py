"""The DynamoDB checkpoint store: one table shared by many applications and hosts.

Layout (``docs/leases.md`` has it with the cost): partition key ``pk`` = ``app#<application>``,
sort key ``sk``:

* ``shard#<stream arn>#<shard id>``: ``seq``, ``finished``, ``updated_at`` (the checkpoint),
  ``owner``, ``counter``, ``taken_at``, ``handoff_to`` (the lease);
* ``worker#<worker id>``: ``heartbeat``, ``heartbeat_at``, ``started_at``, ``host``, ``pid``,
  ``sinks``, ``leases``;
* ``stream#<stream arn>``: ``start_timestamp``, ``created_at`` (LATEST / AT_TIMESTAMP);
* ``meta``: ``sinks``, ``updated_at`` (the application's sink set).

So one ``Query`` on the application's partition reads everything a lease cycle needs.
Conditional writes are ``UpdateItem`` with a ``ConditionExpression``; a take of an expired
lease is a ``TransactWriteItems`` of that update and a ``ConditionCheck`` on the owner's
worker row (its heartbeat unchanged). Calls go through the process's aiobotocore clients.

The store is put together from its parts:

* ``fanout.progress.dynamodb_table``: the client, calls, paged queries, table creation and
  request counts (``DynamoDBTable``);
* ``fanout.progress.dynamodb_items``: attribute values and rows read from items;
* ``fanout.progress.dynamodb_windows``: window states of ``tumbling_window`` sinks, in their
  own partition ``windows#<application>``;
* ``fanout.progress.dynamodb_backfill``: backfill progress, in the partition
  ``app#<application>#backfill``;
* this module: checkpoints, leases and worker rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from fanout.errors import CheckpointError
from fanout.progress.dynamodb_backfill import DynamoDBBackfills
from fanout.progress.dynamodb_items import (
    checkpoint_from_item,
    heartbeat_update,
    n,
    s,
    shard_sk,
    string,
    worker_from_item,
)
from fanout.progress.dynamodb_table import Rejected, counted
from fanout.progress.dynamodb_windows import DynamoDBWindows
from fanout.progress.store import (
    NO_WORKER_ROW,
    Checkpoint,
    CheckpointRow,
    Claim,
    LeaseToken,
    Release,
    Snapshot,
    WorkerRow,
)


class DynamoDBCheckpointStore(DynamoDBWindows, DynamoDBBackfills):
    """Checkpoints and leases of one application in a DynamoDB table (its arguments are
    ``DynamoDBTable``'s: the table, the application, the AWS clients, where the table is and
    whether to create it)."""

    # -- checkpoints ------------------------------------------------------------------------

    @counted
    async def load(self, stream_arn: str) -> dict[str, Checkpoint]:
        items = await self._query(f"shard#{stream_arn}#")
        rows = [checkpoint_from_item(i) for i in items]
        return {r.shard_id: r for r in rows}

    async def _save_one(self, row: CheckpointRow, now: float) -> CheckpointRow | None:
        sets = ["#upd = :now", "#cnt = if_not_exists(#cnt, :zero)"]
        values: dict[str, Any] = {":now": n(now), ":zero": n(0)}
        names = {"#upd": "updated_at", "#cnt": "counter"}
        removes: list[str] = []
        if row.sequence is not None:
            sets.append("#seq = :seq")
            values[":seq"] = s(row.sequence)
            names["#seq"] = "seq"
        if row.finished:
            sets.append("#fin = :true")
            values[":true"] = {"BOOL": True}
            names["#fin"] = "finished"
        else:
            sets.append("#fin = if_not_exists(#fin, :false)")
            values[":false"] = {"BOOL": False}
            names["#fin"] = "finished"
        kwargs: dict[str, Any] = {}
        lease = row.lease
        if lease is not None:
            names["#own"] = "owner"
            values[":owner"] = s(lease.owner)
            values[":counter"] = n(lease.counter)
            kwargs["ConditionExpression"] = "#own = :owner AND #cnt = :counter"
            if row.finished:  # a finished row releases its lease
                sets[1] = "#cnt = :next"
                values[":next"] = n(lease.counter + 1)
                del values[":zero"]
                names.update({"#tkn": "taken_at", "#hnd": "handoff_to"})
                removes = ["#own", "#tkn", "#hnd"]
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": self._key(shard_sk(row.stream_arn, row.shard_id)),
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            **kwargs,
        }
        try:
            if row.windows and not row.finished:
                await self._save_with_windows(row, update)
            else:
                await self._call("update_item", **update)
        except Rejected:
            return row
        if row.finished:  # a finished shard is never read again: its windows go
            await self._drop_windows(row.stream_arn, row.shard_id)
        return None

    @counted
    async def save(self, rows: Sequence[CheckpointRow]) -> list[CheckpointRow]:
        """Write every row (one conditional update each); returns those whose lease moved."""
        now = time.time()
        results = await self._each([partial(self._save_one, row, now) for row in rows])
        return [r for r in results if r is not None]

    @counted
    async def stream_start(self, stream_arn: str, timestamp: float) -> tuple[float, bool]:
        try:
            answer = await self._call(
                "update_item",
                TableName=self.table,
                Key=self._key(f"stream#{stream_arn}"),
                UpdateExpression="SET start_timestamp = if_not_exists(start_timestamp, :t), "
                "created_at = if_not_exists(created_at, :now)",
                ExpressionAttributeValues={":t": n(float(timestamp)), ":now": n(time.time())},
                ReturnValues="ALL_OLD",
            )
        except Rejected as exc:  # no condition
            raise CheckpointError(str(exc)) from exc
        old = answer.get("Attributes") or {}
        if "start_timestamp" in old:
            return float(old["start_timestamp"]["N"]), False
        return float(timestamp), True

    @counted
    async def prune(self, stream_arn: str, keep: Sequence[str]) -> int:
        kept = set(keep)
        rows = await self.load(stream_arn)
        gone = [r for r in rows.values() if r.finished and r.shard_id not in kept]

        async def delete(row: Checkpoint) -> int:
            try:
                await self._call(
                    "delete_item",
                    TableName=self.table,
                    Key=self._key(shard_sk(row.stream_arn, row.shard_id)),
                    ConditionExpression="#fin = :true",
                    ExpressionAttributeNames={"#fin": "finished"},
                    ExpressionAttributeValues={":true": {"BOOL": True}},
                )
            except Rejected:
                return 0
            return 1

        return sum(await self._each([partial(delete, row) for row in gone]))

    @counted
    async def all(self) -> list[Checkpoint]:
        rows = [checkpoint_from_item(i) for i in await self._query("shard#")]
        return sorted(rows, key=lambda r: (r.stream_arn, r.shard_id))

    # -- leases -----------------------------------------------------------------------------

    @counted
    async def scan(self) -> Snapshot:
        shards: list[Checkpoint] = []
        workers: list[WorkerRow] = []
        sinks: str | None = None
        for item in await self._query(""):
            sk = str(item["sk"]["S"])
            if sk.startswith("shard#"):
                shards.append(checkpoint_from_item(item))
            elif sk.startswith("worker#"):
                workers.append(worker_from_item(item))
            elif sk == "meta":
                sinks = string(item, "sinks")
        shards.sort(key=lambda r: (r.stream_arn, r.shard_id))
        return Snapshot(shards, workers, sinks)

    @counted
    async def ensure(self, stream_arn: str, shard_ids: Sequence[str]) -> dict[str, Checkpoint]:
        now = time.time()

        async def one(sid: str) -> Checkpoint:
            try:
                answer = await self._call(
                    "update_item",
                    TableName=self.table,
                    Key=self._key(shard_sk(stream_arn, sid)),
                    UpdateExpression="SET #cnt = if_not_exists(#cnt, :zero), "
                    "#upd = if_not_exists(#upd, :now), #fin = if_not_exists(#fin, :false)",
                    ExpressionAttributeNames={
                        "#cnt": "counter",
                        "#upd": "updated_at",
                        "#fin": "finished",
                    },
                    ExpressionAttributeValues={
                        ":zero": n(0),
                        ":now": n(now),
                        ":false": {"BOOL": False},
                    },
                    ReturnValues="ALL_NEW",
                )
            except Rejected as exc:  # no condition
                raise CheckpointError(str(exc)) from exc
            return checkpoint_from_item(answer["Attributes"])

        rows = await self._each([partial(one, sid) for sid in shard_ids])
        return {r.shard_id: r for r in rows}

    def _take_update(self, claim: Claim, owner: str, now: float) -> dict[str, Any]:
        names = {
            "#own": "owner",
            "#cnt": "counter",
            "#tkn": "taken_at",
            "#hnd": "handoff_to",
            "#fin": "finished",
        }
        values: dict[str, Any] = {
            ":me": s(owner),
            ":counter": n(claim.counter),
            ":next": n(claim.counter + 1),
            ":now": n(now),
            ":true": {"BOOL": True},
        }
        if claim.owner is None:
            owned = "attribute_not_exists(#own)"
        else:
            owned = "#own = :owner"
            values[":owner"] = s(claim.owner)
        return {
            "TableName": self.table,
            "Key": self._key(shard_sk(claim.stream_arn, claim.shard_id)),
            "UpdateExpression": "SET #own = :me, #cnt = :next, #tkn = :now REMOVE #hnd",
            "ConditionExpression": f"#cnt = :counter AND {owned} AND NOT #fin = :true",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    async def _take_one(self, claim: Claim, owner: str, now: float) -> Checkpoint | None:
        update = self._take_update(claim, owner, now)
        try:
            if claim.heartbeat is None or claim.owner is None:
                answer = await self._call("update_item", ReturnValues="ALL_NEW", **update)
                return checkpoint_from_item(answer["Attributes"])
            # An expired lease: only while its owner's heartbeat is still the one seen.
            if claim.heartbeat == NO_WORKER_ROW:
                check: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
            else:
                check = {
                    "ConditionExpression": "heartbeat = :beat",
                    "ExpressionAttributeValues": {":beat": n(claim.heartbeat)},
                }
            await self._call(
                "transact_write_items",
                TransactItems=[
                    {"Update": update},
                    {
                        "ConditionCheck": {
                            "TableName": self.table,
                            "Key": self._key(f"worker#{claim.owner}"),
                            **check,
                        }
                    },
                ],
            )
        except Rejected:
            return None
        # The checkpoint is read back: the old owner may have moved it after the scan.
        answer = await self._call(
            "get_item",
            TableName=self.table,
            Key=self._key(shard_sk(claim.stream_arn, claim.shard_id)),
            ConsistentRead=True,
        )
        item = answer.get("Item")
        return checkpoint_from_item(item) if item else None

    @counted
    async def take(self, claims: Sequence[Claim], owner: str) -> list[Checkpoint | None]:
        now = time.time()
        return await self._each([partial(self._take_one, claim, owner, now) for claim in claims])

    async def _release_one(self, rel: Release, now: float) -> bool:
        names = {"#own": "owner", "#cnt": "counter", "#tkn": "taken_at", "#hnd": "handoff_to"}
        values: dict[str, Any] = {
            ":owner": s(rel.lease.owner),
            ":counter": n(rel.lease.counter),
            ":next": n(rel.lease.counter + 1),
        }
        if rel.to is None:
            expression = "SET #cnt = :next REMOVE #own, #tkn, #hnd"
        else:
            expression = "SET #cnt = :next, #own = :to, #tkn = :now REMOVE #hnd"
            values[":to"] = s(rel.to)
            values[":now"] = n(now)
        try:
            await self._call(
                "update_item",
                TableName=self.table,
                Key=self._key(shard_sk(rel.stream_arn, rel.shard_id)),
                UpdateExpression=expression,
                ConditionExpression="#own = :owner AND #cnt = :counter",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except Rejected:
            return False
        return True

    @counted
    async def release(self, releases: Sequence[Release]) -> list[bool]:
        now = time.time()
        return await self._each([partial(self._release_one, rel, now) for rel in releases])

    @counted
    async def request_handoff(
        self, stream_arn: str, shard_id: str, lease: LeaseToken, to: str
    ) -> bool:
        try:
            await self._call(
                "update_item",
                TableName=self.table,
                Key=self._key(shard_sk(stream_arn, shard_id)),
                UpdateExpression="SET #hnd = :to",
                ConditionExpression="#own = :owner AND #cnt = :counter AND NOT #fin = :true",
                ExpressionAttributeNames={
                    "#own": "owner",
                    "#cnt": "counter",
                    "#hnd": "handoff_to",
                    "#fin": "finished",
                },
                ExpressionAttributeValues={
                    ":to": s(to),
                    ":owner": s(lease.owner),
                    ":counter": n(lease.counter),
                    ":true": {"BOOL": True},
                },
            )
        except Rejected:
            return False
        return True

    @counted
    async def heartbeat(self, worker: WorkerRow) -> None:
        try:
            await self._call(
                "update_item",
                TableName=self.table,
                Key=self._key(f"worker#{worker.worker_id}"),
                **heartbeat_update(worker),
            )
        except Rejected as exc:  # no condition
            raise CheckpointError(str(exc)) from exc

    def heartbeat_sync(self, worker: WorkerRow) -> None:
        """A heartbeat from the heartbeat thread, through a botocore client of its own (the
        aiobotocore clients belong to the event loop)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._sync_client is None:
            import botocore.session
            from botocore.config import Config

            timeout = max(1.0, self.heartbeat_timeout)
            self._sync_client = botocore.session.get_session().create_client(
                "dynamodb",
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                config=Config(
                    retries={"mode": "standard", "max_attempts": 2},
                    connect_timeout=timeout,
                    read_timeout=timeout,
                ),
            )
        self.requests[("heartbeat", "update_item")] += 1
        try:
            self._sync_client.update_item(
                TableName=self.table,
                Key=self._key(f"worker#{worker.worker_id}"),
                **heartbeat_update(worker),
            )
        except (BotoCoreError, ClientError) as exc:
            raise CheckpointError(f"checkpoint store {self.describe}: heartbeat: {exc}") from exc

    @counted
    async def remove_worker(self, worker_id: str, heartbeat: int | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if heartbeat is not None:
            kwargs = {
                "ConditionExpression": "heartbeat = :beat",
                "ExpressionAttributeValues": {":beat": n(heartbeat)},
            }
        try:
            await self._call(
                "delete_item", TableName=self.table, Key=self._key(f"worker#{worker_id}"), **kwargs
            )
        except Rejected:
            return

    @counted
    async def record_sinks(self, sinks: str) -> None:
        try:
            await self._call(
                "update_item",
                TableName=self.table,
                Key=self._key("meta"),
                UpdateExpression="SET sinks = :sinks, updated_at = :now",
                ExpressionAttributeValues={":sinks": s(sinks), ":now": n(time.time())},
            )
        except Rejected as exc:  # no condition
            raise CheckpointError(str(exc)) from exc
