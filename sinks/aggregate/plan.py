"""The writes of an aggregate: per source item a state row, per group and window a row, and
the transactions that move an item's contribution from one row to another.

A *state row* (state table, key ``item``) holds the stamp of the item's last applied change
and the contribution it made: row (``group``, ``window``) and measure values; after a REMOVE
it is a tombstone (a stamp, no contribution). A *group row* (target table, keys ``group`` and
``window``) holds each count and sum measure and ``fanout:items``, the number of items that
count in it.

Applying a change is one transaction (``Move``): put the item's new state row, on the
condition that its stored stamp is still the one that was read (or that there is none);
subtract the stored contribution from its row; add the new one to its row. Several items'
moves share a transaction, with the deltas of one row added up into one action. A row whose
``fanout:items`` falls to 0 is deleted in the same transaction, on the condition that it holds
exactly what was read; a row that only shrinks is updated on the condition that it holds more
than it loses. docs/aggregate.md argues why this is exact under any replay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sinks.aggregate.change import (
    DECIMAL,
    MARKER,
    ZERO,
    Change,
    Contribution,
    RowKey,
    number,
    stamp_text,
    wire,
)
from sinks.aggregate.config import GROUP, WINDOW

ITEM = "item"  # the state table's key
ITEMS = "fanout:items"  # a group row's number of contributing items
STAMP = "stamp"
EVENT = "event"
VALUES = "values"
LATEST_STAMP = "fanout:stamp:"  # + measure: the stamp of a latest measure's value


@dataclass(frozen=True, slots=True)
class State:
    """A state row as read: the stamp text of the item's last applied change, and the
    contribution it made (None for a tombstone)."""

    stamp: str
    contribution: Contribution | None


def parse_state(item: Mapping[str, Any]) -> State:
    """A state row from its DynamoDB item."""
    contribution = None
    if GROUP in item and WINDOW in item:
        values = {
            name: number(value["N"])
            for name, value in item.get(VALUES, {}).get("M", {}).items()
            if "N" in value
        }
        contribution = Contribution((item[GROUP]["S"], item[WINDOW]["S"]), values)
    return State(item[STAMP]["S"], contribution)


def row_items(item: Mapping[str, Any] | None) -> Decimal:
    """A group row's ``fanout:items`` (0 for a row that does not exist)."""
    if not item or ITEMS not in item:
        return ZERO
    return number(item[ITEMS]["N"])


def row_key(key: RowKey) -> dict[str, Any]:
    return {GROUP: {"S": key[0]}, WINDOW: {"S": key[1]}}


def state_key(item: str) -> dict[str, Any]:
    return {ITEM: {"S": item}}


@dataclass(slots=True)
class Move:
    """One item's change to apply: from the stored state ``before`` (None: no state row)."""

    change: Change
    before: State | None

    @property
    def rows(self) -> set[RowKey]:
        """The rows the move touches."""
        touched = set()
        if self.before is not None and self.before.contribution is not None:
            touched.add(self.before.contribution.row)
        if self.change.contribution is not None:
            touched.add(self.change.contribution.row)
        return touched


@dataclass(slots=True)
class RowDelta:
    """What one transaction changes in one group row."""

    items: Decimal = ZERO
    values: dict[str, Decimal] = field(default_factory=dict)
    moves: list[int] = field(default_factory=list)  # indexes in the transaction's moves

    def add(self, contribution: Contribution, sign: int, move: int) -> None:
        op = DECIMAL.add if sign > 0 else DECIMAL.subtract
        self.items = op(self.items, Decimal(1))
        for name, value in contribution.values.items():
            self.values[name] = op(self.values.get(name, ZERO), value)
        if move not in self.moves:
            self.moves.append(move)


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose action an action of a transaction is: a move's state row, or a group row."""

    move: int | None = None
    row: RowKey | None = None


@dataclass(slots=True)
class Transaction:
    """Moves applied together, and their actions once built."""

    moves: list[Move]
    rows: dict[RowKey, RowDelta] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    owners: list[Owner] = field(default_factory=list)
    deletes: set[RowKey] = field(default_factory=set)

    def __post_init__(self) -> None:
        for index, move in enumerate(self.moves):
            before = move.before.contribution if move.before is not None else None
            if before is not None:
                self.rows.setdefault(before.row, RowDelta()).add(before, -1, index)
            if move.change.contribution is not None:
                new = move.change.contribution
                self.rows.setdefault(new.row, RowDelta()).add(new, +1, index)

    def shrinking(self) -> list[RowKey]:
        """Rows that lose items: their ``fanout:items`` must be known to build the actions."""
        return [key for key, delta in self.rows.items() if delta.items < 0]


def pack(moves: Sequence[Move], limit: int) -> list[Transaction]:
    """Moves in transactions of at most ``limit`` actions (one per move for its state row,
    one per distinct group row), in the order given."""
    batches: list[list[Move]] = []
    current: list[Move] = []
    rows: set[RowKey] = set()
    for move in moves:
        needed = move.rows
        fresh = needed - rows
        if current and len(current) + 1 + len(rows) + len(fresh) > limit:
            batches.append(current)
            current, rows, fresh = [], set(), needed
        current.append(move)
        rows |= fresh
    if current:
        batches.append(current)
    return [Transaction(batch) for batch in batches]


class Writer:
    """Builds the DynamoDB actions of one sink's transactions.

    Args:
        name: the sink's name, written as ``fanout:sink`` on every row (loop safety).
        table: the target table.
        state_table: the state table.
        additive: the count and sum measures, each written on every row update, so that
            every row has all of them.
    """

    def __init__(self, name: str, table: str, state_table: str, additive: Iterable[str]) -> None:
        self.name = name
        self.table = table
        self.state_table = state_table
        self.additive = list(additive)

    def state_put(self, move: Move) -> dict[str, Any]:
        change = move.change
        item: dict[str, Any] = {
            ITEM: {"S": change.item},
            STAMP: {"S": stamp_text(change.stamp)},
            EVENT: {"S": change.event_id},
            MARKER: {"S": self.name},
        }
        if change.contribution is not None:
            group, window = change.contribution.row
            item[GROUP] = {"S": group}
            item[WINDOW] = {"S": window}
            item[VALUES] = {"M": {k: wire(v) for k, v in change.contribution.values.items()}}
        put: dict[str, Any] = {
            "TableName": self.state_table,
            "Item": item,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if move.before is None:
            put["ConditionExpression"] = "attribute_not_exists(#i)"
            put["ExpressionAttributeNames"] = {"#i": ITEM}
        else:
            put["ConditionExpression"] = "#s = :s"
            put["ExpressionAttributeNames"] = {"#s": STAMP}
            put["ExpressionAttributeValues"] = {":s": {"S": move.before.stamp}}
        return {"Put": put}

    def row_action(
        self, key: RowKey, delta: RowDelta, stored_items: Decimal | None
    ) -> tuple[dict[str, Any] | None, bool]:
        """The action for one row (None when nothing changes), and whether it deletes it.

        A row that loses items is deleted if exactly that many were read in it, else updated
        on the condition that it holds more; either condition fails if the read is stale (a
        BatchGetItem is no snapshot), and the failure returns what is stored now.
        """
        if delta.items < 0:
            assert stored_items is not None, "a shrinking row's items must be read first"
            taken = -delta.items
            if stored_items == taken:
                return self._delete(key, taken), True
            return self._update(key, delta, condition=taken), False
        if delta.items == 0 and all(v == 0 for v in delta.values.values()):
            return None, False
        return self._update(key, delta, condition=None), False

    def _delete(self, key: RowKey, items: Decimal) -> dict[str, Any]:
        return {
            "Delete": {
                "TableName": self.table,
                "Key": row_key(key),
                "ConditionExpression": "#n = :n",
                "ExpressionAttributeNames": {"#n": ITEMS},
                "ExpressionAttributeValues": {":n": wire(items)},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _update(self, key: RowKey, delta: RowDelta, condition: Decimal | None) -> dict[str, Any]:
        names = {"#n": ITEMS, "#k": MARKER}
        values: dict[str, Any] = {":n": wire(delta.items), ":k": {"S": self.name}}
        adds = ["#n :n"]
        for i, measure in enumerate(self.additive):
            names[f"#m{i}"] = measure
            values[f":m{i}"] = wire(delta.values.get(measure, ZERO))
            adds.append(f"#m{i} :m{i}")
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": row_key(key),
            "UpdateExpression": f"ADD {', '.join(adds)} SET #k = :k",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if condition is not None:
            update["ConditionExpression"] = "#n > :t"
            update["ExpressionAttributeValues"][":t"] = wire(condition)
            update["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return {"Update": update}

    def build(self, tx: Transaction, stored: Mapping[RowKey, Decimal]) -> None:
        """Fill ``tx.actions`` (and their owners) from the moves and the rows' stored items."""
        tx.actions, tx.owners, tx.deletes = [], [], set()
        for index, move in enumerate(tx.moves):
            tx.actions.append(self.state_put(move))
            tx.owners.append(Owner(move=index))
        for key, delta in tx.rows.items():
            action, deletes = self.row_action(key, delta, stored.get(key))
            if deletes:
                tx.deletes.add(key)
            if action is not None:
                tx.actions.append(action)
                tx.owners.append(Owner(row=key))

    def extreme_update(
        self, row: RowKey, measure: str, kind: str, value: dict[str, Any], stamp: str
    ) -> dict[str, Any]:
        """A conditional UpdateItem that raises a min, max or latest measure of an existing
        row, and does nothing otherwise."""
        names = {"#n": ITEMS, "#m": measure}
        values: dict[str, Any] = {":v": value}
        if kind == "latest":
            names["#t"] = LATEST_STAMP + measure
            values[":t"] = {"S": stamp}
            condition = "attribute_exists(#n) AND (attribute_not_exists(#t) OR #t < :t)"
            update = "SET #m = :v, #t = :t"
        else:
            better = ">" if kind == "min" else "<"
            condition = f"attribute_exists(#n) AND (attribute_not_exists(#m) OR #m {better} :v)"
            update = "SET #m = :v"
        return {
            "TableName": self.table,
            "Key": row_key(row),
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
