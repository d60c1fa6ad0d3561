"""Micro-benchmark of compiled filters: matches per second on wire-shaped DynamoDB records.

Run with ``python -m bench.bench_filters``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.scenarios import FILTERED_SINKS
from fanout.filters import compile_filters, compile_split

STATUSES = ["NEW", "PAID", "SHIPPED", "DELIVERED", "CANCELLED"]
EVENT_NAMES = ["INSERT", "MODIFY", "REMOVE"]


def make_record(i: int, rng: random.Random) -> dict[str, Any]:
    """A record shaped like a Lambda DynamoDB event record, as parsed from the wire."""
    event_name = rng.choice(EVENT_NAMES)
    pk = f"order#{i:08d}"
    image = {
        "pk": {"S": pk},
        "sk": {"S": "meta"},
        "status": {"S": rng.choice(STATUSES)},
        "amount": {"N": str(rng.randint(1, 50_000) / 100)},
        "customer": {"S": f"customer#{rng.randint(1, 5000):05d}"},
        "region": {"S": rng.choice(["eu-west-1", "us-east-1", "ap-south-1"])},
        "tags": {"SS": rng.sample(["gift", "express", "fragile", "bulk"], k=2)},
    }
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": 1_700_000_000 + i,
        "Keys": {"pk": {"S": pk}, "sk": {"S": "meta"}},
        "SequenceNumber": str(100_000_000_000_000_000_000 + i),
        "SizeBytes": 180,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if event_name != "REMOVE":
        dynamodb["NewImage"] = image
    if event_name != "INSERT":
        dynamodb["OldImage"] = dict(image, status={"S": "NEW"})
    record = {
        "eventID": f"{i:032x}",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "eventSourceARN": "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2024",
        "dynamodb": dynamodb,
    }
    # Round-trip through JSON so the objects are exactly what a parser hands to sinks.
    parsed: dict[str, Any] = orjson.loads(orjson.dumps(record))
    return parsed


SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "eventName + one NewImage attribute": [
        {
            "eventName": ["INSERT", "MODIFY"],
            "dynamodb": {"NewImage": {"status": {"S": ["SHIPPED"]}}},
        }
    ],
    "5-pattern OR list": [
        {"eventName": ["REMOVE"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "invoice#"}]}}}},
        {
            "dynamodb": {
                "NewImage": {"status": {"S": ["CANCELLED"]}, "region": {"S": ["us-east-1"]}}
            }
        },
        {"dynamodb": {"NewImage": {"amount": {"N": [{"fanout-numeric": [">=", 450]}]}}}},
        {"dynamodb": {"NewImage": {"tags": {"SS": ["fragile"]}, "status": {"S": ["PAID"]}}}},
        {
            "eventName": ["MODIFY"],
            "dynamodb": {"OldImage": {"status": {"S": [{"anything-but": ["NEW", "PAID"]}]}}},
        },
    ],
    "prefix + exists:false": [
        {
            "dynamodb": {
                "NewImage": {
                    "customer": {"S": [{"prefix": "customer#00"}]},
                    "deleted": [{"exists": False}],
                }
            }
        }
    ],
}


def measure(
    predicate: Callable[[Any], bool], records: list[dict[str, Any]], seconds: float
) -> tuple[float, float]:
    """Run the predicate over the records for about `seconds`; return (calls/s, match ratio)."""
    calls = matched = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for record in records:
            if predicate(record):
                matched += 1
        calls += len(records)
        now = time.perf_counter()
        if now >= deadline:
            break
    return calls / (now - start), matched / calls


def measure_sinks(
    sinks: list[list[dict[str, Any]]], pages: list[list[dict[str, Any]]], seconds: float
) -> tuple[float, float]:
    """Records per second through several sinks' filters: one pass per sink (each compiled
    pattern alone) against one pass for all (``compile_split``), alternating."""
    predicates = [compile_filters(patterns) for patterns in sinks]
    split = compile_split(tuple(predicates))

    def apart(page: list[dict[str, Any]]) -> object:
        return [list(filter(p, page)) for p in predicates]

    rates: dict[str, list[float]] = {"apart": [], "split": []}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or not rates["split"]:
        for name, fn in (("apart", apart), ("split", split)):
            start = time.perf_counter()
            for page in pages:
                fn(page)
            rates[name].append(sum(map(len, pages)) / (time.perf_counter() - start))
    return max(rates["apart"]), max(rates["split"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000, help="distinct records")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per scenario")
    args = parser.parse_args(argv)

    rng = random.Random(42)
    records = [make_record(i, rng) for i in range(args.records)]
    print(f"{len(records)} wire-shaped records, {args.seconds:.1f} s per scenario")
    for name, patterns in SCENARIOS.items():
        predicate = compile_filters(patterns)
        assert predicate is not None
        rate, ratio = measure(predicate, records, args.seconds)
        print(f"  {name:<38} {rate:>12,.0f} matches/s   ({ratio:.1%} pass)")
    pages = [records[i : i + 1000] for i in range(0, len(records), 1000)]
    sinks = [sink["filters"] for sink in FILTERED_SINKS.values()]  # python -m bench's
    apart, split = measure_sinks(sinks, pages, args.seconds)
    print(
        f"  the bench's three sinks, records/s: {apart:,.0f} one pass per sink,"
        f" {split:,.0f} in one pass (x{split / apart:.2f})"
    )


if __name__ == "__main__":
    main()
