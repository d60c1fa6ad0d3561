"""The DynamoDB checkpoint store: one table shared by many applications and hosts.

Layout (``docs/leases.md`` has it with the cost): partition key ``pk`` = ``app#<application>``,
sort key ``sk``:

* ``shard#<stream arn>#<shard id>``: ``seq``, ``finished``, ``updated_at`` (the checkpoint),
  ``owner``, ``counter``, ``taken_at``, ``handoff_to`` (the lease);
* ``worker#<worker id>``: ``heartbeat``, ``heartbeat_at``, ``started_at``, ``host``, ``pid``,
  ``sinks``, ``leases``;
* ``stream#<stream arn>``: ``start_timestamp``, ``created_at`` (LATEST / AT_TIMESTAMP);
* ``meta``: ``sinks``, ``updated_at`` (the application's sink set).

Window states of ``tumbling_window`` sinks are in their own partition,
``windows#<application>`` (``fanout.progress.dynamodb_windows``).

So one ``Query`` on the application's partition reads everything a lease cycle needs.
Backfills live in a partition of their own, ``app#<application>#backfill``, so lease scans
never read them: ``backfill#<id>`` (what it loads, its version time, its owner) and
``backfill#<id>#<segment>`` (how far the segment is settled).
Conditional writes are ``UpdateItem`` with a ``ConditionExpression``; a take of an expired
lease is a ``TransactWriteItems`` of that update and a ``ConditionCheck`` on the owner's
worker row (its heartbeat unchanged). Calls go through the process's aiobotocore clients.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any, ParamSpec, TypeVar

import anyio

from fanout.aws.clients import AwsClients
from fanout.errors import CheckpointError
from fanout.progress.dynamodb_windows import assemble, shard_prefix, window_puts, windows_pk
from fanout.progress.store import (
    NO_WORKER_ROW,
    BackfillRow,
    BackfillState,
    Checkpoint,
    CheckpointRow,
    Claim,
    LeaseToken,
    Release,
    SegmentRow,
    Snapshot,
    WindowState,
    WorkerRow,
)

log = logging.getLogger("fanout.checkpoint")

T = TypeVar("T")
P = ParamSpec("P")

# Which store operation a request serves (for the request counts of ``requests``).
_PURPOSE: contextvars.ContextVar[str] = contextvars.ContextVar("purpose", default="other")


def _counted(
    fn: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Count the requests of a store operation under its name."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        token = _PURPOSE.set(fn.__name__)
        try:
            return await fn(*args, **kwargs)
        finally:
            _PURPOSE.reset(token)

    return wrapper


# Per-row writes of one call run this many at a time.
_CONCURRENCY = 16
_CREATE_WAIT_S = 120.0


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _num(item: dict[str, Any], name: str, default: float = 0.0) -> float:
    value = item.get(name)
    return float(value["N"]) if value else default


def _str(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value else None


class _Rejected(Exception):
    """A condition failed."""


class DynamoDBCheckpointStore:
    """Checkpoints and leases of one application in a DynamoDB table.

    Args:
        table: the table name (key ``pk`` and ``sk``, both strings).
        application: whose rows this store reads and writes.
        aws: the process's AWS clients.
        region: the table's region (default: the environment's).
        endpoint_url: e.g. DynamoDB Local's.
        create_table: create the table (on-demand capacity) if it does not exist.
    """

    def __init__(
        self,
        table: str,
        application: str,
        aws: AwsClients,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        create_table: bool = False,
    ) -> None:
        self.table = table
        self._application = application
        self.aws = aws
        self.region = region
        self.endpoint_url = endpoint_url
        self.create_table = create_table
        self.pk = f"app#{application}"
        self.backfill_pk = f"app#{application}#backfill"
        self._client: Any = None
        self._sync_client: Any = None
        # Seconds a heartbeat request may take (connect and read) before it counts as failed.
        self.heartbeat_timeout = 3.0
        # Requests by (store operation, DynamoDB call), for the cost accounting of
        # docs/leases.md (what a renewal, a checkpoint or a take costs).
        self.requests: Counter[tuple[str, str]] = Counter()

    @property
    def application(self) -> str:
        return self._application

    @property
    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"dynamodb table {self.table}{where}"

    # -- plumbing ---------------------------------------------------------------------------

    async def _call(self, op: str, **kwargs: Any) -> Any:
        """One DynamoDB call; a failed condition raises ``_Rejected``, anything else that
        fails ``CheckpointError``."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._client is None:
            raise CheckpointError(f"checkpoint store {self.describe}: not open")
        self.requests[(_PURPOSE.get(), op)] += 1
        try:
            return await getattr(self._client, op)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code == "ConditionalCheckFailedException":
                raise _Rejected(code) from exc
            if code == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or []
                codes = {r.get("Code") for r in reasons}
                if "ConditionalCheckFailed" in codes and codes <= {
                    "ConditionalCheckFailed",
                    "None",
                    None,
                }:
                    raise _Rejected(code) from exc
            message = error.get("Message", str(exc))
            raise CheckpointError(
                f"checkpoint store {self.describe}: {op}: {code}: {message}"
            ) from exc
        except BotoCoreError as exc:
            raise CheckpointError(f"checkpoint store {self.describe}: {op}: {exc}") from exc

    async def _each(self, calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run ``calls`` at most ``_CONCURRENCY`` at a time; results in order."""
        results: list[T | None] = [None] * len(calls)
        limit = anyio.Semaphore(_CONCURRENCY)
        errors: list[BaseException] = []

        async def one(i: int) -> None:
            async with limit:
                try:
                    results[i] = await calls[i]()
                except CheckpointError as exc:
                    errors.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(len(calls)):
                tg.start_soon(one, i)
        if errors:
            raise errors[0]
        return results  # type: ignore[return-value]

    def _key(self, sk: str) -> dict[str, Any]:
        return {"pk": _s(self.pk), "sk": _s(sk)}

    @staticmethod
    def _shard_sk(stream_arn: str, shard_id: str) -> str:
        return f"shard#{stream_arn}#{shard_id}"

    def _shard(self, item: dict[str, Any]) -> Checkpoint:
        arn, _, sid = str(item["sk"]["S"]).removeprefix("shard#").rpartition("#")
        fin = item.get("finished")
        taken = item.get("taken_at")
        return Checkpoint(
            stream_arn=arn,
            shard_id=sid,
            sequence=_str(item, "seq"),
            finished=bool(fin["BOOL"]) if fin else False,
            updated_at=_num(item, "updated_at"),
            owner=_str(item, "owner"),
            counter=int(_num(item, "counter")),
            taken_at=float(taken["N"]) if taken else None,
            handoff_to=_str(item, "handoff_to"),
        )

    async def _query(self, prefix: str, *, consistent: bool = True) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "ConsistentRead": consistent,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": _s(self.pk), ":prefix": _s(prefix)},
        }
        if not prefix:
            kwargs["KeyConditionExpression"] = "pk = :pk"
            del kwargs["ExpressionAttributeValues"][":prefix"]
        while True:
            try:
                page = await self._call("query", **kwargs)
            except _Rejected as exc:  # a query has no condition
                raise CheckpointError(str(exc)) from exc
            items.extend(page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last:
                return items
            kwargs["ExclusiveStartKey"] = last

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._client = await self.aws.client(
                "dynamodb", region=self.region, endpoint_url=self.endpoint_url
            )
        except Exception as exc:
            raise CheckpointError(f"cannot open checkpoint store {self.describe}: {exc}") from exc
        if self.create_table:
            await self._create_if_missing()

    async def _create_if_missing(self) -> None:
        try:
            answer = await self._call("describe_table", TableName=self.table)
            status = answer["Table"]["TableStatus"]
        except CheckpointError as exc:
            if "ResourceNotFoundException" not in str(exc):
                raise
            try:
                await self._call(
                    "create_table",
                    TableName=self.table,
                    KeySchema=[
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                    AttributeDefinitions=[
                        {"AttributeName": "pk", "AttributeType": "S"},
                        {"AttributeName": "sk", "AttributeType": "S"},
                    ],
                    BillingMode="PAY_PER_REQUEST",
                )
                log.warning("lease_table_created", extra={"table": self.table})
            except CheckpointError as create:
                if "ResourceInUseException" not in str(create):  # another worker made it
                    raise
            status = "CREATING"
        deadline = time.monotonic() + _CREATE_WAIT_S
        while status != "ACTIVE":
            if time.monotonic() > deadline:
                raise CheckpointError(f"{self.describe} is not ACTIVE after {_CREATE_WAIT_S:g}s")
            await anyio.sleep(1.0)
            answer = await self._call("describe_table", TableName=self.table)
            status = answer["Table"]["TableStatus"]

    async def aclose(self) -> None:
        self._client = None  # the client belongs to the process's AwsClients
        if self._sync_client is not None:
            client, self._sync_client = self._sync_client, None
            client.close()

    # -- checkpoints ------------------------------------------------------------------------

    @_counted
    async def load(self, stream_arn: str) -> dict[str, Checkpoint]:
        items = await self._query(f"shard#{stream_arn}#")
        rows = [self._shard(i) for i in items]
        return {r.shard_id: r for r in rows}

    async def _save_one(self, row: CheckpointRow, now: float) -> CheckpointRow | None:
        sets = ["#upd = :now", "#cnt = if_not_exists(#cnt, :zero)"]
        values: dict[str, Any] = {":now": _n(now), ":zero": _n(0)}
        names = {"#upd": "updated_at", "#cnt": "counter"}
        removes: list[str] = []
        if row.sequence is not None:
            sets.append("#seq = :seq")
            values[":seq"] = _s(row.sequence)
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
            values[":owner"] = _s(lease.owner)
            values[":counter"] = _n(lease.counter)
            kwargs["ConditionExpression"] = "#own = :owner AND #cnt = :counter"
            if row.finished:  # a finished row releases its lease
                sets[1] = "#cnt = :next"
                values[":next"] = _n(lease.counter + 1)
                del values[":zero"]
                names.update({"#tkn": "taken_at", "#hnd": "handoff_to"})
                removes = ["#own", "#tkn", "#hnd"]
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": self._key(self._shard_sk(row.stream_arn, row.shard_id)),
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
        except _Rejected:
            return row
        if row.finished:  # a finished shard is never read again: its windows go
            await self._drop_windows(row.stream_arn, row.shard_id)
        return None

    # -- window states (fanout.progress.dynamodb_windows) -----------------------------------

    async def _save_with_windows(self, row: CheckpointRow, update: dict[str, Any]) -> None:
        puts = window_puts(self.table, self._application, row.stream_arn, row.shard_id, row.windows)
        await self._call("transact_write_items", TransactItems=[{"Update": update}, *puts])

    async def _window_items(self, stream_arn: str, shard_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {
                ":pk": _s(windows_pk(self._application)),
                ":prefix": _s(shard_prefix(stream_arn, shard_id)),
            },
        }
        while True:
            try:
                page = await self._call("query", **kwargs)
            except _Rejected as exc:  # a query has no condition
                raise CheckpointError(str(exc)) from exc
            items.extend(page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last:
                return items
            kwargs["ExclusiveStartKey"] = last

    async def _drop_windows(self, stream_arn: str, shard_id: str) -> None:
        for item in await self._window_items(stream_arn, shard_id):
            await self._call(
                "delete_item", TableName=self.table, Key={"pk": item["pk"], "sk": item["sk"]}
            )

    @_counted
    async def load_windows(self, stream_arn: str, shard_id: str) -> dict[str, WindowState]:
        """The window states stored for one shard, by sink name."""
        items = await self._window_items(stream_arn, shard_id)
        return assemble(shard_prefix(stream_arn, shard_id), items)

    @_counted
    async def save(self, rows: Sequence[CheckpointRow]) -> list[CheckpointRow]:
        """Write every row (one conditional update each); returns those whose lease moved."""
        now = time.time()
        results = await self._each([partial(self._save_one, row, now) for row in rows])
        return [r for r in results if r is not None]

    @_counted
    async def stream_start(self, stream_arn: str, timestamp: float) -> tuple[float, bool]:
        try:
            answer = await self._call(
                "update_item",
                TableName=self.table,
                Key=self._key(f"stream#{stream_arn}"),
                UpdateExpression="SET start_timestamp = if_not_exists(start_timestamp, :t), "
                "created_at = if_not_exists(created_at, :now)",
                ExpressionAttributeValues={":t": _n(float(timestamp)), ":now": _n(time.time())},
                ReturnValues="ALL_OLD",
            )
        except _Rejected as exc:  # no condition
            raise CheckpointError(str(exc)) from exc
        old = answer.get("Attributes") or {}
        if "start_timestamp" in old:
            return float(old["start_timestamp"]["N"]), False
        return float(timestamp), True

    @_counted
    async def prune(self, stream_arn: str, keep: Sequence[str]) -> int:
        kept = set(keep)
        rows = await self.load(stream_arn)
        gone = [r for r in rows.values() if r.finished and r.shard_id not in kept]

        async def delete(row: Checkpoint) -> int:
            try:
                await self._call(
                    "delete_item",
                    TableName=self.table,
                    Key=self._key(self._shard_sk(row.stream_arn, row.shard_id)),
                    ConditionExpression="#fin = :true",
                    ExpressionAttributeNames={"#fin": "finished"},
                    ExpressionAttributeValues={":true": {"BOOL": True}},
                )
            except _Rejected:
                return 0
            return 1

        return sum(await self._each([partial(delete, row) for row in gone]))

    @_counted
    async def all(self) -> list[Checkpoint]:
        rows = [self._shard(i) for i in await self._query("shard#")]
        return sorted(rows, key=lambda r: (r.stream_arn, r.shard_id))

    # -- leases -----------------------------------------------------------------------------

    @_counted
    async def scan(self) -> Snapshot:
        shards: list[Checkpoint] = []
        workers: list[WorkerRow] = []
        sinks: str | None = None
        for item in await self._query(""):
            sk = str(item["sk"]["S"])
            if sk.startswith("shard#"):
                shards.append(self._shard(item))
            elif sk.startswith("worker#"):
                workers.append(
                    WorkerRow(
                        worker_id=sk.removeprefix("worker#"),
                        heartbeat=int(_num(item, "heartbeat")),
                        heartbeat_at=_num(item, "heartbeat_at"),
                        started_at=_num(item, "started_at"),
                        host=_str(item, "host") or "",
                        pid=int(_num(item, "pid")),
                        sinks=_str(item, "sinks") or "",
                        leases=int(_num(item, "leases")),
                    )
                )
            elif sk == "meta":
                sinks = _str(item, "sinks")
        shards.sort(key=lambda r: (r.stream_arn, r.shard_id))
        return Snapshot(shards, workers, sinks)

    @_counted
    async def ensure(self, stream_arn: str, shard_ids: Sequence[str]) -> dict[str, Checkpoint]:
        now = time.time()

        async def one(sid: str) -> Checkpoint:
            try:
                answer = await self._call(
                    "update_item",
                    TableName=self.table,
                    Key=self._key(self._shard_sk(stream_arn, sid)),
                    UpdateExpression="SET #cnt = if_not_exists(#cnt, :zero), "
                    "#upd = if_not_exists(#upd, :now), #fin = if_not_exists(#fin, :false)",
                    ExpressionAttributeNames={
                        "#cnt": "counter",
                        "#upd": "updated_at",
                        "#fin": "finished",
                    },
                    ExpressionAttributeValues={
                        ":zero": _n(0),
                        ":now": _n(now),
                        ":false": {"BOOL": False},
                    },
                    ReturnValues="ALL_NEW",
                )
            except _Rejected as exc:  # no condition
                raise CheckpointError(str(exc)) from exc
            return self._shard(answer["Attributes"])

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
            ":me": _s(owner),
            ":counter": _n(claim.counter),
            ":next": _n(claim.counter + 1),
            ":now": _n(now),
            ":true": {"BOOL": True},
        }
        if claim.owner is None:
            owned = "attribute_not_exists(#own)"
        else:
            owned = "#own = :owner"
            values[":owner"] = _s(claim.owner)
        return {
            "TableName": self.table,
            "Key": self._key(self._shard_sk(claim.stream_arn, claim.shard_id)),
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
                return self._shard(answer["Attributes"])
            # An expired lease: only while its owner's heartbeat is still the one seen.
            if claim.heartbeat == NO_WORKER_ROW:
                check: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
            else:
                check = {
                    "ConditionExpression": "heartbeat = :beat",
                    "ExpressionAttributeValues": {":beat": _n(claim.heartbeat)},
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
        except _Rejected:
            return None
        # The checkpoint is read back: the old owner may have moved it after the scan.
        answer = await self._call(
            "get_item",
            TableName=self.table,
            Key=self._key(self._shard_sk(claim.stream_arn, claim.shard_id)),
            ConsistentRead=True,
        )
        item = answer.get("Item")
        return self._shard(item) if item else None

    @_counted
    async def take(self, claims: Sequence[Claim], owner: str) -> list[Checkpoint | None]:
        now = time.time()
        return await self._each([partial(self._take_one, claim, owner, now) for claim in claims])

    async def _release_one(self, rel: Release, now: float) -> bool:
        names = {"#own": "owner", "#cnt": "counter", "#tkn": "taken_at", "#hnd": "handoff_to"}
        values: dict[str, Any] = {
            ":owner": _s(rel.lease.owner),
            ":counter": _n(rel.lease.counter),
            ":next": _n(rel.lease.counter + 1),
        }
        if rel.to is None:
            expression = "SET #cnt = :next REMOVE #own, #tkn, #hnd"
        else:
            expression = "SET #cnt = :next, #own = :to, #tkn = :now REMOVE #hnd"
            values[":to"] = _s(rel.to)
            values[":now"] = _n(now)
        try:
            await self._call(
                "update_item",
                TableName=self.table,
                Key=self._key(self._shard_sk(rel.stream_arn, rel.shard_id)),
                UpdateExpression=expression,
                ConditionExpression="#own = :owner AND #cnt = :counter",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except _Rejected:
            return False
        return True

    @_counted
    async def release(self, releases: Sequence[Release]) -> list[bool]:
        now = time.time()
        return await self._each([partial(self._release_one, rel, now) for rel in releases])

    @_counted
    async def request_handoff(
        self, stream_arn: str, shard_id: str, lease: LeaseToken, to: str
    ) -> bool:
        try:
            await self._call(
                "update_item",
                TableName=self.table,
                Key=self._key(self._shard_sk(stream_arn, shard_id)),
                UpdateExpression="SET #hnd = :to",
                ConditionExpression="#own = :owner AND #cnt = :counter AND NOT #fin = :true",
                ExpressionAttributeNames={
                    "#own": "owner",
                    "#cnt": "counter",
                    "#hnd": "handoff_to",
                    "#fin": "finished",
                },
                ExpressionAttributeValues={
                    ":to": _s(to),
                    ":owner": _s(lease.owner),
                    ":counter": _n(lease.counter),
                    ":true": {"BOOL": True},
                },
            )
        except _Rejected:
            return False
        return True

    @staticmethod
    def _heartbeat_update(worker: WorkerRow) -> dict[str, Any]:
        return {
            "UpdateExpression": "SET heartbeat = :beat, heartbeat_at = :at, "
            "started_at = :started, host = :host, pid = :pid, sinks = :sinks, "
            "leases = :leases",
            "ExpressionAttributeValues": {
                ":beat": _n(worker.heartbeat),
                ":at": _n(worker.heartbeat_at),
                ":started": _n(worker.started_at),
                ":host": _s(worker.host),
                ":pid": _n(worker.pid),
                ":sinks": _s(worker.sinks),
                ":leases": _n(worker.leases),
            },
        }

    @_counted
    async def heartbeat(self, worker: WorkerRow) -> None:
        try:
            await self._call(
                "update_item",
                TableName=self.table,
                Key=self._key(f"worker#{worker.worker_id}"),
                **self._heartbeat_update(worker),
            )
        except _Rejected as exc:  # no condition
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
                **self._heartbeat_update(worker),
            )
        except (BotoCoreError, ClientError) as exc:
            raise CheckpointError(f"checkpoint store {self.describe}: heartbeat: {exc}") from exc

    @_counted
    async def remove_worker(self, worker_id: str, heartbeat: int | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if heartbeat is not None:
            kwargs = {
                "ConditionExpression": "heartbeat = :beat",
                "ExpressionAttributeValues": {":beat": _n(heartbeat)},
            }
        try:
            await self._call(
                "delete_item", TableName=self.table, Key=self._key(f"worker#{worker_id}"), **kwargs
            )
        except _Rejected:
            return

    @_counted
    async def record_sinks(self, sinks: str) -> None:
        try:
            await self._call(
                "update_item",
                TableName=self.table,
                Key=self._key("meta"),
                UpdateExpression="SET sinks = :sinks, updated_at = :now",
                ExpressionAttributeValues={":sinks": _s(sinks), ":now": _n(time.time())},
            )
        except _Rejected as exc:  # no condition
            raise CheckpointError(str(exc)) from exc

    # -- backfills --------------------------------------------------------------------------

    def _backfill_key(self, sk: str) -> dict[str, Any]:
        return {"pk": _s(self.backfill_pk), "sk": _s(sk)}

    @staticmethod
    def _backfill_row(item: dict[str, Any]) -> BackfillRow:
        done = item.get("done")
        return BackfillRow(
            backfill_id=str(item["sk"]["S"]).removeprefix("backfill#"),
            stream=_str(item, "stream") or "",
            table=_str(item, "table_name") or "",
            sinks=_str(item, "sinks") or "",
            segments=int(_num(item, "segments")),
            version_time=int(_num(item, "version_time")),
            created_at=_num(item, "created_at"),
            origin=_str(item, "origin") or "",
            done=bool(done["BOOL"]) if done else False,
            owner=_str(item, "owner"),
            owner_at=_num(item, "owner_at"),
        )

    @_counted
    async def backfills(self) -> list[BackfillState]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": _s(self.backfill_pk), ":prefix": _s("backfill#")},
        }
        items: list[dict[str, Any]] = []
        while True:
            try:
                page = await self._call("query", **kwargs)
            except _Rejected as exc:  # a query has no condition
                raise CheckpointError(str(exc)) from exc
            items.extend(page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last:
                break
            kwargs["ExclusiveStartKey"] = last
        states: dict[str, BackfillState] = {}
        segments: list[SegmentRow] = []
        for item in items:
            rest = str(item["sk"]["S"]).removeprefix("backfill#")
            backfill_id, _, segment = rest.partition("#")
            if not segment:
                states[backfill_id] = BackfillState(self._backfill_row(item))
                continue
            done = item.get("done")
            segments.append(
                SegmentRow(
                    backfill_id,
                    int(segment),
                    _str(item, "position"),
                    int(_num(item, "items")),
                    bool(done["BOOL"]) if done else False,
                )
            )
        for seg in segments:
            state = states.get(seg.backfill_id)
            if state is not None:
                state.segments[seg.segment] = seg
        return [states[key] for key in sorted(states)]

    @_counted
    async def claim_backfill(
        self, row: BackfillRow, expected: BackfillRow | None
    ) -> BackfillRow | None:
        names = {"#own": "owner", "#at": "owner_at"}
        values: dict[str, Any] = {":at": _n(float(row.owner_at))}
        sets = ["#at = :at"]
        removes: list[str] = []
        if row.owner is None:
            removes.append("#own")
        else:
            sets.append("#own = :own")
            values[":own"] = _s(row.owner)
        if expected is None:
            condition = "attribute_not_exists(pk)"
            fields = {
                "stream": _s(row.stream),
                "table_name": _s(row.table),
                "sinks": _s(row.sinks),
                "segments": _n(row.segments),
                "version_time": _n(row.version_time),
                "created_at": _n(float(row.created_at)),
                "origin": _s(row.origin),
                "done": {"BOOL": row.done},
            }
            for i, (name, value) in enumerate(fields.items()):
                names[f"#f{i}"] = name
                values[f":f{i}"] = value
                sets.append(f"#f{i} = :f{i}")
        else:
            values[":was_at"] = _n(float(expected.owner_at))
            if expected.owner is None:
                condition = "attribute_not_exists(#own) AND #at = :was_at"
            else:
                condition = "#own = :was AND #at = :was_at"
                values[":was"] = _s(expected.owner)
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        try:
            answer = await self._call(
                "update_item",
                TableName=self.table,
                Key=self._backfill_key(f"backfill#{row.backfill_id}"),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except _Rejected:
            return None
        return self._backfill_row(answer["Attributes"])

    @_counted
    async def save_backfill(
        self,
        backfill_id: str,
        owner: str,
        segments: Sequence[SegmentRow],
        *,
        done: bool = False,
        release: bool = False,
        now: float | None = None,
    ) -> bool:
        when = time.time() if now is None else now
        sets = ["#at = :at"]
        values: dict[str, Any] = {":at": _n(float(when)), ":me": _s(owner)}
        names = {"#own": "owner", "#at": "owner_at"}
        if done:
            sets.append("#done = :true")
            values[":true"] = {"BOOL": True}
            names["#done"] = "done"
        expression = "SET " + ", ".join(sets) + (" REMOVE #own" if release else "")
        job = {
            "Update": {
                "TableName": self.table,
                "Key": self._backfill_key(f"backfill#{backfill_id}"),
                "UpdateExpression": expression,
                "ConditionExpression": "#own = :me",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }
        rows = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": self._backfill_key(f"backfill#{backfill_id}#{seg.segment:07d}"),
                    "UpdateExpression": "SET #items = :items, #done = :done"
                    + (", #pos = :pos" if seg.position is not None else " REMOVE #pos"),
                    "ExpressionAttributeNames": {
                        "#items": "items",
                        "#done": "done",
                        "#pos": "position",
                    },
                    "ExpressionAttributeValues": {
                        ":items": _n(seg.items),
                        ":done": {"BOOL": seg.done},
                        **({":pos": _s(seg.position)} if seg.position is not None else {}),
                    },
                }
            }
            for seg in segments
        ]
        # One transaction per 99 segments, each conditional on the owner: a save that
        # returned True was written while this owner ran the backfill. The job row goes
        # last, so a release or done is written with the last segments.
        chunks = [rows[i : i + 99] for i in range(0, len(rows), 99)] or [[]]
        try:
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1
                head = job if last else _condition_only(job)
                await self._call("transact_write_items", TransactItems=[*chunk, head])
        except _Rejected:
            return False
        return True


def _condition_only(job: dict[str, Any]) -> dict[str, Any]:
    """The owner condition of a backfill's row, refreshing only its ``owner_at``."""
    update = job["Update"]
    return {
        "Update": {
            **update,
            "UpdateExpression": "SET #at = :at",
            "ExpressionAttributeNames": {"#own": "owner", "#at": "owner_at"},
            "ExpressionAttributeValues": {
                ":at": update["ExpressionAttributeValues"][":at"],
                ":me": update["ExpressionAttributeValues"][":me"],
            },
        }
    }
