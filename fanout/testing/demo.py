"""The ``make run`` demo: DynamoDB Local, a table with a stream, a trickle of changes, fanout.

``python -m fanout.testing.demo [--config config/demo.yaml] [--rate 5]`` starts DynamoDB Local on a
free port, creates ``DemoOrders`` (stream NEW_AND_OLD_IMAGES), writes inserts, updates and
deletes at a steady rate, and runs the worker until Ctrl-C, SIGINT or SIGTERM; then it stops
the worker and DynamoDB Local and exits 0.

``--stop-with-parent`` (what ``make run`` passes) also stops it when the parent process exits
or starts handling SIGINT, SIGTERM or SIGHUP: make does not pass SIGINT on to what it runs
(it expects the terminal to have sent it to the whole process group) and waits for it, so
without this ``kill -INT <make>`` would leave the demo running.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import anyio

TABLE = "DemoOrders"
STATUSES = ("NEW", "PAID", "PACKED", "SHIPPED")


def show(event: dict[str, Any], context: Any) -> None:
    """A Lambda-style handler: one line per change."""
    for record in event["Records"]:
        ddb = record["dynamodb"]
        key = ddb["Keys"]["pk"]["S"]
        image = ddb.get("NewImage") or ddb.get("OldImage") or {}
        status = image.get("status", {}).get("S", "-")
        total = image.get("total", {}).get("N", "-")
        print(
            f"[{context.function_name}] {record['eventName']:<6} {key:<10} status={status:<8} "
            f"total={total:<7} seq={ddb['SequenceNumber']}",
            flush=True,
        )


async def _create_table(client: Any) -> None:
    await client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


async def _trickle(client: Any, rate: float) -> None:
    """Insert orders, move them through their statuses, delete some when shipped."""
    try:
        await _write_changes(client, rate)
    except Exception as exc:  # noqa: BLE001 - the demo writer must not take the worker down
        print(f"demo writer stopped: {exc}", file=sys.stderr)


async def _write_changes(client: Any, rate: float) -> None:
    rng = random.Random(7)
    orders: dict[str, int] = {}
    n = 0
    while True:
        if len(orders) < 5 or rng.random() < 0.3:
            n += 1
            key = f"order-{n}"
            orders[key] = 0
        else:
            key = rng.choice(list(orders))
            orders[key] += 1
        step = orders[key]
        if step >= len(STATUSES):
            await client.delete_item(TableName=TABLE, Key={"pk": {"S": key}})
            del orders[key]
        else:
            await client.put_item(
                TableName=TABLE,
                Item={
                    "pk": {"S": key},
                    "status": {"S": STATUSES[step]},
                    "total": {"N": str(10 + (int(key.rsplit("-", 1)[1]) * 37) % 500)},
                    "items": {"L": [{"S": "book"}, {"S": "pen"}][: 1 + step % 2]},
                },
            )
        await anyio.sleep(1 / rate)


async def _run(config_path: str, rate: float, endpoint: str) -> int:
    from aiobotocore.session import get_session

    from fanout.app import Worker
    from fanout.config import load_config

    config = load_config(config_path)
    session = get_session()
    async with session.create_client(
        "dynamodb", region_name="us-east-1", endpoint_url=endpoint
    ) as client:
        await _create_table(client)
        # The demo takes the signals itself for as long as the worker runs: a second signal
        # (make's Ctrl-C reaches the demo twice: from the terminal and from --stop-with-parent)
        # must not cut the worker's shutdown short.
        worker = Worker(config, handle_signals=False)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signals, worker)
            tg.start_soon(_trickle, client, rate)
            code = await worker.run()
            tg.cancel_scope.cancel()
    return code


async def _stop_on_signals(worker: Any) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            worker.stop()


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def parent_stopping(pid: int) -> bool:
    """True when process ``pid`` is gone or is handling SIGINT, SIGTERM or SIGHUP (Linux: the
    signal is blocked while its handler runs, which ``/proc/<pid>/status`` shows)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigBlk:"):
            blocked = int(line.split()[1], 16)
            return any(blocked & (1 << (int(sig) - 1)) for sig in _STOP_SIGNALS)
    return False


def _stop_with_parent(interval: float = 0.2) -> None:
    """Send ourselves SIGINT once the parent exits or starts stopping."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent and not parent_stopping(parent):
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    _ignore_signals()  # the first one stops the demo; the cleanup is not interrupted
    raise KeyboardInterrupt


def _ignore_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fanout.testing.demo", description=__doc__)
    parser.add_argument("--config", default="config/demo.yaml")
    parser.add_argument("--rate", type=float, default=5.0, help="changes per second")
    parser.add_argument(
        "--stop-with-parent",
        action="store_true",
        help="stop when the parent process (make) exits or is being stopped",
    )
    args = parser.parse_args(argv)
    # Until the worker runs (it handles both itself), SIGTERM stops the demo as Ctrl-C does,
    # so DynamoDB Local is stopped on the way out either way.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    if args.stop_with_parent:
        _stop_with_parent()
    try:
        return _main(args)
    except KeyboardInterrupt:
        return 0


def _main(args: argparse.Namespace) -> int:
    from fanout.errors import ConfigError
    from fanout.observe import logs
    from fanout.testing.dynamodb_local import DynamoDBLocal, fetch

    logs.setup("text", "INFO")
    # DynamoDB Local needs credentials of some kind; it accepts any.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    shutil.rmtree(Path("demo-out"), ignore_errors=True)  # DynamoDB Local runs in memory
    fetch()
    with DynamoDBLocal() as ddb:
        os.environ["FANOUT_DEMO_ENDPOINT"] = ddb.endpoint_url
        print(f"DynamoDB Local at {ddb.endpoint_url}; metrics at http://127.0.0.1:9090/metrics")
        print("writing changes to DemoOrders; Ctrl-C stops everything\n", flush=True)
        try:
            return anyio.run(_run, args.config, args.rate, ddb.endpoint_url)
        except ConfigError as exc:
            print(f"fanout: invalid configuration:\n{exc}", file=sys.stderr)
            return 2
        finally:
            _ignore_signals()  # stopping DynamoDB Local is not interrupted


if __name__ == "__main__":
    sys.exit(main())
