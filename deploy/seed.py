"""Demo traffic for deploy/compose.yaml: create the Orders table (with a stream), then write.

Runs in the fanout image (botocore is installed there)::

    python seed.py --endpoint-url http://dynamodb-local:8000 --table Orders --rate 2

Waits for DynamoDB Local, creates the table if it is missing, then inserts orders and moves
them through their statuses, ``--rate`` writes a second, ``--count`` writes in all (default:
forever).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import botocore.session
from botocore.exceptions import BotoCoreError, ClientError

STATUSES = ("NEW", "PAID", "PACKED", "SHIPPED")


def client(endpoint_url: str, region: str) -> Any:
    session = botocore.session.get_session()
    return session.create_client("dynamodb", region_name=region, endpoint_url=endpoint_url)


def create_table(ddb: Any, table: str, wait_s: float = 60.0) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            ddb.describe_table(TableName=table)
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            ddb.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
                StreamSpecification={
                    "StreamEnabled": True,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            )
            print(f"created table {table}", flush=True)
            return
        except BotoCoreError as exc:  # DynamoDB Local not up yet
            if time.monotonic() > deadline:
                raise SystemExit(f"DynamoDB is unreachable: {exc}") from exc
            time.sleep(1)


def write(ddb: Any, table: str, rate: float, count: int | None) -> int:
    rng = random.Random(7)
    orders: dict[str, int] = {}
    written = 0
    while count is None or written < count:
        if orders and rng.random() < 0.6:
            key = rng.choice(sorted(orders))
            orders[key] = min(orders[key] + 1, len(STATUSES) - 1)
        else:
            key = f"order-{written:06d}"
            orders[key] = 0
        ddb.put_item(
            TableName=table,
            Item={
                "pk": {"S": key},
                "status": {"S": STATUSES[orders[key]]},
                "total": {"N": str(rng.randint(5, 500))},
            },
        )
        if orders[key] == len(STATUSES) - 1:
            del orders[key]
        written += 1
        if rate > 0:
            time.sleep(1 / rate)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint-url", default="http://dynamodb-local:8000")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--table", default="Orders")
    parser.add_argument("--rate", type=float, default=2.0, help="writes a second (0: no pause)")
    parser.add_argument("--count", type=int, default=None, help="writes in all (default: forever)")
    args = parser.parse_args(argv)
    ddb = client(args.endpoint_url, args.region)
    try:
        create_table(ddb, args.table)
        written = write(ddb, args.table, args.rate, args.count)
    finally:
        ddb.close()
    print(f"wrote {written} changes to {args.table}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
