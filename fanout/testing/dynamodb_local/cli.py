"""``python -m fanout.testing.dynamodb_local fetch|start``: fetch and run DynamoDB Local."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from fanout.testing.dynamodb_local.download import LocalServiceError, fetch
from fanout.testing.dynamodb_local.server import DynamoDBLocal


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fanout.testing.dynamodb_local", description="Fetch and run DynamoDB Local."
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="cache directory (default: $FANOUT_CACHE_DIR or ./.cache/dynamodb-local)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download DynamoDB Local into the cache (no-op when cached)")
    start = sub.add_parser("start", help="run DynamoDB Local in the foreground until stopped")
    start.add_argument("--port", type=int, help="port to listen on (default: a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        emulator = fetch(args.cache_dir)
        if args.command == "fetch":
            print(emulator)
            return 0
        return _serve(DynamoDBLocal(args.port, emulator_dir=emulator))
    except LocalServiceError as exc:
        print(f"fanout.testing.dynamodb_local: {exc}", file=sys.stderr)
        return 1


def _serve(ddb: DynamoDBLocal) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ddb:
            print(ddb.endpoint_url, flush=True)
            while not stop.wait(0.5):
                # Ctrl-C in a terminal reaches DynamoDB Local too: give our handler a moment
                if not ddb.running and not stop.wait(0.5):
                    print(
                        f"fanout.testing.dynamodb_local: DynamoDB Local exited\n{ddb.output}",
                        file=sys.stderr,
                    )
                    return 1
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
