"""``python -m fanout.testing.streamserver``: serve a stream of pre-built records (benchmarks).

Prints the endpoint URL, then the stream ARN, on stdout once every record is built; serves
until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Sequence

from fanout.testing.streamserver.model import VIEW_TYPES
from fanout.testing.streamserver.operations import MAX_RECORDS_PER_PAGE
from fanout.testing.streamserver.server import DEFAULT_ITERATOR_TTL, StreamServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fanout.testing.streamserver",
        description="Serve an in-memory DynamoDB stream over the real wire protocol. "
        "Prints the endpoint URL, then the stream ARN, once every record is built.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--table", default="Orders")
    parser.add_argument("--view-type", default="NEW_AND_OLD_IMAGES", choices=VIEW_TYPES)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--records-per-shard", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=MAX_RECORDS_PER_PAGE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--closed", action="store_true", help="close the shards once filled (readers finish)"
    )
    parser.add_argument("--iterator-ttl", type=float, default=DEFAULT_ITERATOR_TTL)
    parser.add_argument(
        "--throttle-probability",
        type=float,
        default=0.0,
        help="answer this share of GetRecords calls with LimitExceededException",
    )
    parser.add_argument(
        "--error-probability",
        type=float,
        default=0.0,
        help="answer this share of all calls with InternalServerError",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to every call")
    parser.add_argument(
        "--no-auth", action="store_true", help="accept requests without an Authorization header"
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    server = StreamServer(
        host=args.host,
        port=args.port,
        page_size=args.page_size,
        iterator_ttl=args.iterator_ttl,
        seed=args.seed,
        require_auth=not args.no_auth,
    )
    built = time.perf_counter()
    stream = server.add_stream(args.table, args.view_type, shards=args.shards)
    for i, shard in enumerate(stream.shards):
        server.fill(shard, args.records_per_shard, seed=args.seed * 1000 + i)
        if args.closed:
            server.close_shard(shard)
    if args.throttle_probability > 0:
        server.throttle("GetRecords", times=None, probability=args.throttle_probability)
    if args.error_probability > 0:
        server.fail(None, "InternalServerError", times=None, probability=args.error_probability)
    if args.delay > 0:
        server.slow(None, args.delay)
    total = sum(len(s) for s in stream.shards)
    size = sum(s.byte_size for s in stream.shards)
    url = await server.start()
    print(url, flush=True)
    print(stream.arn, flush=True)
    print(
        f"streamserver: {total} records ({size / 1e6:.1f} MB) in {len(stream.shards)} shards "
        f"built in {time.perf_counter() - built:.2f}s; serving {url}",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
