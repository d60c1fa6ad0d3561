"""The ``aggregate`` sink: counts and sums per group (and window) in a DynamoDB table, exact
under INSERT, MODIFY and REMOVE and under any replay (docs/aggregate.md).

One ``send()``:

1. decodes each record into a change of its item; the sink's own rows are skipped; an item's
   earlier changes in the batch are folded into its last one (they share its outcome);
2. reads the items' state rows (consistent reads), and the group rows they may shrink;
3. drops changes that are not newer than the item's stored one (replays, absorbed);
4. applies the others in transactions of at most ``max_transaction_actions`` actions, each
   conditional on the state and rows it read; a cancelled transaction's reasons carry the
   current items, so the next round is built from them without reading again;
5. raises min, max and latest measures with conditional updates (append-only measures).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import anyio
from botocore.exceptions import ClientError

from fanout.errors import SinkUnavailable
from fanout.records import Record
from fanout.sink import Failure, Failures, SinkContext
from sinks.aggregate.change import (
    DECIMAL,
    Change,
    Decoder,
    RecordError,
    RowKey,
    stamp_text,
)
from sinks.aggregate.config import AggregateSinkConfig
from sinks.aggregate.extremes import raise_extremes
from sinks.aggregate.metrics import SinkMetrics
from sinks.aggregate.plan import (
    ITEM,
    Move,
    Owner,
    State,
    Transaction,
    Writer,
    pack,
    parse_state,
    row_items,
    row_key,
    state_key,
)
from sinks.aggregate.tables import (
    NETWORK_ERRORS,
    THROTTLE_CODES,
    Tables,
    Unreachable,
    check_sources,
    describe,
    error_code,
    unreachable,
)

MAX_ROUNDS = 8  # transaction rounds per send() before the rest is left to the retry policy
THROTTLED_PAUSE_S = 1.0  # retry_after asked for when DynamoDB throttles
UNREACHABLE_MEMORY_S = 1.0  # a failed preparation is not tried again sooner by other lanes
BATCH_GET_KEYS = 100  # DynamoDB's BatchGetItem limit
_REASON_LIMIT = 500


class _Outage(Exception):
    """DynamoDB cannot be asked now (network, 5xx, throttling)."""

    def __init__(self, message: str, *, throttled: bool) -> None:
        super().__init__(message)
        self.throttled = throttled


class _Refused(Exception):
    """DynamoDB refused a transaction of several moves as invalid: split it."""


class AggregateSink:
    """Maintains declarative aggregates in a DynamoDB table (see the module docstring)."""

    ordered = False  # an item's stamp decides; the order in which changes land does not

    def __init__(self, name: str, config: AggregateSinkConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.log = context.logger
        self.decoder = Decoder(config, name)
        self.writer = Writer(
            name, config.table, config.state_table_name, self.decoder.measures.additive
        )
        self.metrics = SinkMetrics(context.metrics, name)
        self.tables = Tables(name, config, self.log)
        self._client: Any = None
        self._ready = False
        self._lock = anyio.Lock()
        self._unreachable: tuple[float, Unreachable] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await check_sources(self.name, self.context.streams, self.context.aws, self.log)
        try:
            await self._prepare()
        except Unreachable as exc:
            # A DynamoDB that cannot be reached must not keep the worker (and its other
            # sinks) from starting: the tables are checked before the first write instead.
            self.log.warning("aggregate_unreachable", extra={"sink": self.name, "error": str(exc)})

    async def stop(self) -> None:
        # The AWS clients belong to the worker; nothing else is open.
        return None

    async def _prepare(self) -> None:
        """Check (or create) the tables once. While DynamoDB cannot be reached, lanes
        waiting for the lock fail with the last lane's error instead of asking again."""
        async with self._lock:
            if self._ready:
                return
            if self._unreachable is not None:
                when, error = self._unreachable
                if anyio.current_time() - when < UNREACHABLE_MEMORY_S:
                    raise error
            if self._client is None:
                self._client = await self.context.aws.client(
                    "dynamodb", region=self.config.region, endpoint_url=self.config.endpoint_url
                )
            try:
                await self.tables.prepare(self._client)
            except Unreachable as exc:
                self._unreachable = (anyio.current_time(), exc)
                raise
            self._ready = True
            self.log.info(
                "aggregate_ready",
                extra={
                    "sink": self.name,
                    "table": self.config.table,
                    "state_table": self.config.state_table_name,
                },
            )

    # -- sending --------------------------------------------------------------------------

    async def send(self, batch: Sequence[Record]) -> Failures:
        failures: Failures = {}
        entries: dict[str, list[tuple[int, Change]]] = {}
        for index, record in enumerate(batch):
            if self.decoder.own_write(record):
                self.metrics.own_writes.inc()
                continue
            try:
                change = self.decoder.decode(record)
            except (RecordError, KeyError, TypeError) as exc:
                failures[index] = Failure(False, f"{type(exc).__name__}: {exc}")
                continue
            entries.setdefault(change.item, []).append((index, change))
        if not entries:
            return failures
        try:
            await self._prepare()
        except Unreachable as exc:
            raise SinkUnavailable(f"DynamoDB is unreachable: {exc}") from exc

        latest = {item: self._latest(changes) for item, changes in entries.items()}
        outcome = await self._apply(latest)
        done = [
            (item, c)
            for item, changes in entries.items()
            if item not in outcome
            for _, c in changes
        ]
        outcome.update(await raise_extremes(self._client, self.writer, self.metrics, done))
        for item, failure in outcome.items():
            for index, _ in entries[item]:
                failures[index] = failure
        return failures

    def _latest(self, changes: list[tuple[int, Change]]) -> Change:
        """The change that decides an item's state: the newest of the batch."""
        latest = changes[0][1]
        for _, change in changes[1:]:
            if change.stamp < latest.stamp:
                self.metrics.anomalies["order"].inc()
            else:
                latest = change
        return latest

    async def _apply(self, changes: dict[str, Change]) -> dict[str, Failure]:
        """Apply each item's change unless its stored change is as new; the items whose
        change could not be applied, with why."""
        failed: dict[str, Failure] = {}
        states: dict[str, State | None] = {}
        counts: dict[RowKey, Decimal] = {}
        pending = dict(changes)
        committed = False
        try:
            hints = {c.hint.row for c in pending.values() if c.hint is not None}
            await self._read(list(pending), hints, states, counts)
            for round_ in range(MAX_ROUNDS):
                moves = self._moves(pending, states)
                if not moves:
                    return failed
                transactions = pack(moves, self.config.max_transaction_actions)
                shrinking = {key for tx in transactions for key in tx.shrinking()}
                await self._read([], shrinking - counts.keys(), states, counts)
                while transactions:
                    tx = transactions.pop(0)
                    unknown = set(tx.shrinking()) - counts.keys()
                    if unknown:  # a half of a split transaction can shrink a row alone
                        await self._read([], unknown, states, counts)
                    try:
                        if await self._commit(tx, states, counts, pending, failed):
                            committed = True
                    except _Refused:
                        # One of its changes is refused: halve it until that one is alone.
                        half = len(tx.moves) // 2
                        transactions[:0] = [
                            Transaction(tx.moves[:half]),
                            Transaction(tx.moves[half:]),
                        ]
                if not pending:
                    return failed
                self.metrics.conflicts.inc()
                await anyio.sleep(random.uniform(0, min(1.0, 0.02 * 2**round_)))
        except _Outage as exc:
            pause = None
            if exc.throttled:
                self.metrics.throttles.inc()
                pause = THROTTLED_PAUSE_S
            if not committed:
                raise SinkUnavailable(str(exc), retry_after=pause) from exc
            failure = Failure(True, str(exc), retry_after=pause)
            failed.update(dict.fromkeys(pending, failure))
            return failed
        failure = Failure(True, f"still conflicting after {MAX_ROUNDS} transaction rounds")
        failed.update(dict.fromkeys(pending, failure))
        return failed

    def _moves(self, pending: dict[str, Change], states: dict[str, State | None]) -> list[Move]:
        """The moves still to make; changes not newer than their item's state are absorbed."""
        moves = []
        for item, change in list(pending.items()):
            before = states.get(item)
            if before is not None and before.stamp >= stamp_text(change.stamp):
                self.metrics.replays.inc()
                del pending[item]
                continue
            moves.append(Move(change, before))
        return moves

    async def _commit(
        self,
        tx: Transaction,
        states: dict[str, State | None],
        counts: dict[RowKey, Decimal],
        pending: dict[str, Change],
        failed: dict[str, Failure],
    ) -> bool:
        """Run one transaction; True if it committed. A cancelled one updates ``states``
        and ``counts`` from its reasons, so the next round starts from what is stored."""
        self.writer.build(tx, counts)
        try:
            await self._client.transact_write_items(TransactItems=tx.actions)
        except ClientError as exc:
            code = error_code(exc)
            if code == "TransactionCanceledException":
                self._cancelled(tx, exc, states, counts, pending, failed)
                return False
            if unreachable(exc):
                raise _Outage(describe(exc), throttled=code in THROTTLE_CODES) from exc
            if code == "ValidationException":
                # DynamoDB refuses a change of the transaction (a sum beyond 38 digits, say)
                if len(tx.moves) > 1:
                    raise _Refused from exc
                self._refuse(tx, Owner(move=0), describe(exc), pending, failed)
                return False
            raise
        except NETWORK_ERRORS as exc:
            raise _Outage(describe(exc), throttled=False) from exc
        self.metrics.transactions.inc()
        anomalies = self.metrics.anomalies
        for move in tx.moves:
            change = move.change
            states[change.item] = State(stamp_text(change.stamp), change.contribution)
            pending.pop(change.item, None)
            if move.before is None and change.has_old:
                anomalies["unseen_item"].inc()
            if change.non_numeric:
                anomalies["non_numeric"].inc(change.non_numeric)
            if change.ungrouped:
                anomalies["ungrouped"].inc()
        self.metrics.writes.inc(len(tx.moves))
        for key, delta in tx.rows.items():
            if key in tx.deletes:
                counts[key] = Decimal(0)
            elif key in counts:
                counts[key] = DECIMAL.add(counts[key], delta.items)
        return True

    def _cancelled(
        self,
        tx: Transaction,
        exc: ClientError,
        states: dict[str, State | None],
        counts: dict[RowKey, Decimal],
        pending: dict[str, Change],
        failed: dict[str, Failure],
    ) -> None:
        reasons = exc.response.get("CancellationReasons") or []
        throttled = False
        stale_states = False
        short_rows: list[RowKey] = []
        for owner, reason in zip(tx.owners, reasons, strict=False):
            code = reason.get("Code", "None")
            if code in ("None", "TransactionConflict"):
                continue
            if code == "ConditionalCheckFailed":
                item = reason.get("Item")
                if owner.move is not None:
                    stale_states = True
                    change = tx.moves[owner.move].change
                    states[change.item] = parse_state(item) if item else None
                elif owner.row is not None:
                    counts[owner.row] = row_items(item)
                    if counts[owner.row] < -tx.rows[owner.row].items:
                        short_rows.append(owner.row)
            elif code in THROTTLE_CODES:
                throttled = True
            else:
                # A refused action (e.g. a sum beyond 38 digits): its items are refused.
                self._refuse(tx, owner, f"{code}: {reason.get('Message', '')}", pending, failed)
        if throttled:
            self.metrics.throttles.inc()
        if not stale_states:
            # Every item is where its state row says, yet the row holds fewer items than
            # leave it: something else changed the table. Refuse rather than go negative.
            for key in short_rows:
                self.metrics.anomalies["inconsistent_row"].inc()
                self.log.error(
                    "aggregate_inconsistent_row",
                    extra={"sink": self.name, "group": key[0], "window": key[1]},
                )
                why = (
                    f"row (group={key[0]!r}, window={key[1]!r}) holds {counts[key]} items, fewer "
                    "than its state rows count in it: the table was changed by something else"
                )
                self._refuse(tx, Owner(row=key), why, pending, failed)

    @staticmethod
    def _refuse(
        tx: Transaction,
        owner: Owner,
        reason: str,
        pending: dict[str, Change],
        failed: dict[str, Failure],
    ) -> None:
        """Refuse (dead-letter) the items behind one action of a transaction."""
        if owner.move is not None:
            moves = [owner.move]
        else:
            assert owner.row is not None
            moves = tx.rows[owner.row].moves
        failure = Failure(False, reason[:_REASON_LIMIT])
        for index in moves:
            item = tx.moves[index].change.item
            failed[item] = failure
            pending.pop(item, None)

    async def _read(
        self,
        items: Iterable[str],
        rows: Iterable[RowKey],
        states: dict[str, State | None],
        counts: dict[RowKey, Decimal],
    ) -> None:
        """Read state rows and group rows (consistently) into ``states`` and ``counts``; what
        does not exist is None and 0."""
        keys: list[tuple[str, Any]] = [(ITEM, i) for i in items]
        keys += [("row", r) for r in rows]
        for start in range(0, len(keys), BATCH_GET_KEYS):
            chunk = keys[start : start + BATCH_GET_KEYS]
            for kind, key in chunk:
                if kind == ITEM:
                    states[key] = None
                else:
                    counts[key] = Decimal(0)
            request: dict[str, Any] = {}
            state_keys = [state_key(k) for kind, k in chunk if kind == ITEM]
            row_keys = [row_key(k) for kind, k in chunk if kind != ITEM]
            if state_keys:
                request[self.config.state_table_name] = {"Keys": state_keys, "ConsistentRead": True}
            if row_keys:
                request[self.config.table] = {"Keys": row_keys, "ConsistentRead": True}
            for found_table, found in await self._batch_get(request):
                if found_table == self.config.state_table_name:
                    states[found[ITEM]["S"]] = parse_state(found)
                else:
                    counts[(found["group"]["S"], found["window"]["S"])] = row_items(found)

    async def _batch_get(self, request: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        for attempt in range(8):
            try:
                answer = await self._client.batch_get_item(RequestItems=request)
            except ClientError as exc:
                if unreachable(exc):
                    throttled = error_code(exc) in THROTTLE_CODES
                    raise _Outage(describe(exc), throttled=throttled) from exc
                raise
            except NETWORK_ERRORS as exc:
                raise _Outage(describe(exc), throttled=False) from exc
            for table, items in answer.get("Responses", {}).items():
                found.extend((table, item) for item in items)
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                return found
            self.metrics.throttles.inc()
            await anyio.sleep(random.uniform(0, min(1.0, 0.05 * 2**attempt)))
        raise _Outage("BatchGetItem left keys unprocessed 8 times", throttled=True)


def build(name: str, config: AggregateSinkConfig, context: SinkContext) -> AggregateSink:
    return AggregateSink(name, config, context)
