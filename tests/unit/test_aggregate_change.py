from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Any

import pytest

from sinks.aggregate.change import (
    MARKER,
    Contribution,
    Decoder,
    RecordError,
    item_id,
    number,
    stamp_text,
)
from sinks.aggregate.config import AggregateSinkConfig
from sinks.aggregate.plan import (
    ITEMS,
    Move,
    RowDelta,
    State,
    Writer,
    pack,
    parse_state,
)

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2026-01-01T00:00:00.000"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def config(**options: Any) -> AggregateSinkConfig:
    return AggregateSinkConfig.model_validate(
        {
            "type": "aggregate",
            "table": "Totals",
            "group_by": ["customer", "region"],
            "measures": {
                "orders": "count",
                "revenue": {"sum": "amount"},
                "smallest": {"min": "amount"},
                "status": {"latest": "status"},
            },
        }
        | options
    )


def record(
    event: str,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    *,
    created: float = T0,
    seq: int = 100,
    key: str = "o1",
    view: str = "NEW_AND_OLD_IMAGES",
) -> dict[str, Any]:
    ddb: dict[str, Any] = {
        "ApproximateCreationDateTime": created,
        "Keys": {"pk": {"S": key}},
        "SequenceNumber": f"{seq:021d}",
        "StreamViewType": view,
    }
    if new is not None:
        ddb["NewImage"] = new
    if old is not None:
        ddb["OldImage"] = old
    return {"eventID": f"e{seq}", "eventName": event, "eventSourceARN": ARN, "dynamodb": ddb}


def image(customer: str = "c1", region: str = "eu", amount: Any = "12.50") -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": {"S": "o1"},
        "customer": {"S": customer},
        "region": {"S": region},
        "status": {"S": "NEW"},
    }
    if amount is not None:
        item["amount"] = amount if isinstance(amount, dict) else {"N": amount}
    return item


def test_an_insert_contributes_its_row_and_values():
    change = Decoder(config(), "agg").decode(record("INSERT", image()))
    assert change.contribution == Contribution(
        ("c1#eu", "all"), {"orders": Decimal(1), "revenue": Decimal("12.50")}
    )
    assert change.hint is None
    assert not change.has_old
    assert change.stamp == (T0, 100)
    assert change.item == 'Orders|{"pk":{"S":"o1"}}'
    extremes = [(e.measure, e.kind) for e in change.extremes]
    assert extremes == [("smallest", "min"), ("status", "latest")]


def test_a_modify_hints_at_the_old_row_and_a_remove_contributes_nothing():
    decoder = Decoder(config(), "agg")
    change = decoder.decode(record("MODIFY", image("c2"), image("c1")))
    assert change.contribution is not None
    assert change.contribution.row == ("c2#eu", "all")
    assert change.hint is not None
    assert change.hint.row == ("c1#eu", "all")
    assert change.has_old
    gone = decoder.decode(record("REMOVE", old=image()))
    assert gone.contribution is None
    assert gone.extremes == ()
    assert not gone.ungrouped


def test_the_window_is_the_start_of_the_changes_own_window():
    decoder = Decoder(config(window="1h"), "agg")
    change = decoder.decode(record("INSERT", image(), created=T0 + 3599.9))
    assert change.contribution is not None
    assert change.contribution.row == ("c1#eu", str(T0))
    later = decoder.decode(record("MODIFY", image(), image(), created=T0 + 3600))
    assert later.contribution is not None
    assert later.contribution.row[1] == str(T0 + 3600)


@pytest.mark.parametrize(
    ("amount", "revenue", "non_numeric"),
    [
        (None, "0", 0),
        ({"NULL": True}, "0", 0),
        ({"S": "12"}, "0", 1),
        ({"SS": ["1"]}, "0", 1),
        ("-0.000000000000000000000000000000000001", "-1E-36", 0),
        ("99999999999999999999999999999999999999", "99999999999999999999999999999999999999", 0),
    ],
)
def test_sums_take_numbers_exactly_and_anything_else_as_zero(amount, revenue, non_numeric):
    change = Decoder(config(), "agg").decode(record("INSERT", image(amount=amount)))
    assert change.contribution is not None
    assert change.contribution.values["revenue"] == Decimal(revenue)
    assert change.non_numeric == non_numeric


def test_an_image_without_a_group_value_counts_nowhere():
    decoder = Decoder(config(), "agg")
    missing = image()
    del missing["region"]
    change = decoder.decode(record("MODIFY", missing, image()))
    assert change.contribution is None
    assert change.ungrouped
    nested = image()
    nested["region"] = {"M": {}}
    assert decoder.decode(record("INSERT", nested)).ungrouped


def test_group_values_of_every_scalar_type_are_joined_with_hashes():
    decoder = Decoder(config(group_by=["a", "b", "c", "d"]), "agg")
    new = {"a": {"S": "x"}, "b": {"N": "1.5"}, "c": {"BOOL": False}, "d": {"B": "AAE="}}
    change = decoder.decode(record("INSERT", new))
    assert change.contribution is not None
    assert change.contribution.row[0] == "x#1.5#false#AAE="


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda r: r["dynamodb"].update(StreamViewType="NEW_IMAGE"), "NEW_IMAGE stream"),
        (lambda r: r["dynamodb"].pop("ApproximateCreationDateTime"), "ApproximateCreation"),
        (lambda r: r["dynamodb"].update(SequenceNumber="x"), "SequenceNumber"),
        (lambda r: r.update(eventName="TOUCH"), "unknown eventName"),
        (lambda r: r["dynamodb"].pop("NewImage"), "without NewImage"),
        (
            lambda r: r["dynamodb"]["NewImage"].update(customer={"S": "c" * 3000}),
            "2048-byte",
        ),
        (
            lambda r: r["dynamodb"]["NewImage"].update(amount={"N": "1" * 39}),
            "cannot hold",
        ),
    ],
)
def test_records_the_aggregate_cannot_apply_are_refused_with_the_reason(mutate, words):
    bad = record("MODIFY", image(), image())
    mutate(bad)
    with pytest.raises(RecordError, match=words):
        Decoder(config(), "agg").decode(bad)


def test_the_sinks_own_rows_are_recognised_by_their_marker():
    decoder = Decoder(config(), "agg")
    own = {"group": {"S": "c1"}, "window": {"S": "all"}, MARKER: {"S": "agg"}}
    assert decoder.own_write(record("INSERT", own))
    assert decoder.own_write(record("REMOVE", old=own))
    assert not decoder.own_write(record("INSERT", {**own, MARKER: {"S": "other"}}))
    assert not decoder.own_write(record("INSERT", image()))


def test_stamps_sort_as_text_as_they_sort_as_numbers():
    stamps = [(T0, 5), (T0, 40), (T0 + 1, 1), (T0, 10**39), (T0 + 1, 10**39 + 7)]
    assert sorted(stamps) == sorted(stamps, key=stamp_text)
    assert len({len(stamp_text(s)) for s in stamps}) == 1


def test_long_keys_are_hashed_into_the_item_id():
    long = record("INSERT", image(), key="k" * 2000)
    assert item_id(long).startswith("Orders|sha256:")
    assert len(item_id(long)) < 100
    assert item_id(record("INSERT", image())) != item_id(record("INSERT", image(), key="o2"))


def test_numbers_are_exact_or_refused():
    assert number("0.1") + number("0.2") == Decimal("0.3")
    with pytest.raises(decimal.DecimalException):
        number("1" * 39)
    with pytest.raises(decimal.DecimalException):
        number("NaN")


# -- planning ------------------------------------------------------------------------------


def move(item: str, new: tuple[str, str] | None, old: tuple[str, str] | None, amount="1"):
    decoder = Decoder(config(group_by=["g"], window=None), "agg")
    rec = record("INSERT", {"g": {"S": new[0]}, "amount": {"N": amount}} if new else None)
    rec["eventName"] = "INSERT" if new else "REMOVE"
    rec["dynamodb"]["Keys"] = {"pk": {"S": item}}
    change = decoder.decode(rec)
    before = None
    if old is not None:
        contribution = Contribution(old, {"orders": Decimal(1), "revenue": Decimal("2")})
        before = State(stamp_text((T0, 1)), contribution)
    return Move(change, before)


def test_pack_keeps_transactions_within_the_action_limit():
    moves = [move(f"i{n}", (f"g{n % 7}", "all"), (f"g{(n + 1) % 7}", "all")) for n in range(50)]
    transactions = pack(moves, 20)
    assert sum(len(tx.moves) for tx in transactions) == 50
    for tx in transactions:
        assert len(tx.moves) + len(tx.rows) <= 20
    # the row deltas of a transaction add up to what its moves move
    for tx in transactions:
        assert sum(delta.items for delta in tx.rows.values()) == 0
    assert len(pack(moves, 100)) == 1


def test_a_row_that_loses_every_item_it_holds_is_deleted_on_condition():
    writer = Writer("agg", "Totals", "State", ["orders", "revenue"])
    (tx,) = pack([move("a", ("g2", "all"), ("g1", "all")), move("b", None, ("g1", "all"))], 100)
    writer.build(tx, {("g1", "all"): Decimal(2)})
    actions = {next(iter(a)): a for a in tx.actions}
    assert set(actions) == {"Put", "Delete", "Update"}
    delete = actions["Delete"]["Delete"]
    assert delete["Key"] == {"group": {"S": "g1"}, "window": {"S": "all"}}
    assert delete["ConditionExpression"] == "#n = :n"
    assert delete["ExpressionAttributeValues"][":n"] == {"N": "2"}
    assert tx.deletes == {("g1", "all")}
    update = actions["Update"]["Update"]
    assert update["Key"]["group"] == {"S": "g2"}
    assert "ConditionExpression" not in update  # a growing row needs none


def test_a_row_that_keeps_items_shrinks_on_the_condition_that_it_holds_more():
    writer = Writer("agg", "Totals", "State", ["orders", "revenue"])
    (tx,) = pack([move("a", None, ("g1", "all"))], 100)
    writer.build(tx, {("g1", "all"): Decimal(5)})
    update = tx.actions[1]["Update"]
    assert update["ConditionExpression"] == "#n > :t"
    values = update["ExpressionAttributeValues"]
    assert values[":t"] == {"N": "1"}
    assert values[":n"] == {"N": "-1"}
    assert values[":m0"] == {"N": "-1"}
    assert values[":m1"] == {"N": "-2"}
    assert update["ExpressionAttributeNames"]["#n"] == ITEMS
    # a stale read that shows too few items still asks for the condition (never goes negative)
    writer.build(tx, {("g1", "all"): Decimal(0)})
    assert tx.actions[1]["Update"]["ConditionExpression"] == "#n > :t"


def test_state_puts_are_conditional_on_the_state_that_was_read():
    writer = Writer("agg", "Totals", "State", ["orders", "revenue"])
    fresh = writer.state_put(move("a", ("g1", "all"), None))["Put"]
    assert fresh["ConditionExpression"] == "attribute_not_exists(#i)"
    assert fresh["Item"][MARKER] == {"S": "agg"}
    moved = writer.state_put(move("a", ("g1", "all"), ("g0", "all")))["Put"]
    assert moved["ConditionExpression"] == "#s = :s"
    assert moved["ExpressionAttributeValues"][":s"] == {"S": stamp_text((T0, 1))}
    tombstone = writer.state_put(move("a", None, ("g0", "all")))["Put"]["Item"]
    assert "group" not in tombstone
    assert tombstone["stamp"]["S"] == stamp_text((T0, 100))
    assert parse_state(tombstone) == State(stamp_text((T0, 100)), None)
    assert parse_state(fresh["Item"]).contribution == Contribution(
        ("g1", "all"), {"orders": Decimal(1), "revenue": Decimal(1)}
    )


def test_a_move_that_changes_nothing_in_its_row_writes_no_row():
    writer = Writer("agg", "Totals", "State", ["orders", "revenue"])
    assert writer.row_action(("g", "all"), RowDelta(), None) == (None, False)


def test_extreme_updates_never_create_a_row():
    writer = Writer("agg", "Totals", "State", ["orders"])
    low = writer.extreme_update(("g", "all"), "low", "min", {"N": "3"}, "s")
    assert low["ConditionExpression"].startswith("attribute_exists(#n) AND")
    assert "#m > :v" in low["ConditionExpression"]
    high = writer.extreme_update(("g", "all"), "high", "max", {"N": "3"}, "s")
    assert "#m < :v" in high["ConditionExpression"]
    last = writer.extreme_update(("g", "all"), "last", "latest", {"S": "x"}, "s")
    assert "#t < :t" in last["ConditionExpression"]
    assert last["ExpressionAttributeNames"]["#t"] == "fanout:stamp:last"
