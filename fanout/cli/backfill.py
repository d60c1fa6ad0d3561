"""``fanout backfill``: load a table's current items into sinks (``docs/backfill.md``)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import orjson

from fanout.cli.loader import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    add_config_option,
    load,
)

T = TypeVar("T")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backfill",
        help="load a table's current items into sinks, stitched to its stream (resumable)",
    )
    add_config_option(parser)
    parser.add_argument(
        "--sink", action="append", required=True, metavar="NAME", help="a sink to load (repeat)"
    )
    parser.add_argument("--stream", help="the stream whose table is scanned (default: the one)")
    parser.add_argument(
        "--segments", type=_positive_int, help="parallel Scan segments (new backfills only)"
    )
    parser.add_argument(
        "--max-rcu",
        type=_positive_float,
        help="read capacity units per second for the Scan (default: backfill.read_capacity)",
    )
    parser.add_argument(
        "--consistent-read", action="store_true", help="strongly consistent reads (2x RCU)"
    )
    parser.add_argument("--log-format", choices=["json", "text"], help="override log_format")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a whole number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be 1 to 1000")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


async def _until_signalled(work: Callable[[], Awaitable[T]]) -> T | None:
    """``work()``, or None when SIGTERM or SIGINT stopped it (it saves its progress and
    gives the backfill up on the way out)."""
    result: T | None = None
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    group.cancel_scope.cancel()
                    return

        group.start_soon(watch)
        result = await work()
        group.cancel_scope.cancel()
    return result


def run(args: argparse.Namespace) -> int:
    from fanout.backfill.report import ProgressReport
    from fanout.backfill.runner import Backfill, BackfillBusy, BackfillError, Options
    from fanout.errors import ConfigError
    from fanout.observe import logs

    config, path = load(args)
    settings = config.settings
    logs.setup(
        args.log_format or settings.log_format,
        settings.log_level,
        secrets=logs.config_secrets(config, path),
    )
    section = settings.backfill
    options = Options(
        args.segments or section.segments,
        args.max_rcu or section.read_capacity,
        args.consistent_read or section.consistent_read,
        section.progress_interval,
    )
    report = ProgressReport(section.progress_interval)
    try:
        backfill = Backfill(
            config, args.sink, stream=args.stream, options=options, on_progress=report
        )
        outcome = anyio.run(_until_signalled, backfill.run)
        if outcome is None:
            raise CommandError(
                "backfill stopped by a signal; its progress is saved: run the same command "
                "to resume it",
                EXIT_FAILED,
            )
    except ConfigError as exc:
        raise CommandError(str(exc), EXIT_CONFIG) from exc
    except BackfillBusy as exc:
        raise CommandError(str(exc), EXIT_FAILED) from exc
    except BackfillError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from exc
    finally:
        report.close()
    summary = outcome.as_dict()
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        print(
            f"backfill {summary['backfill']}: {summary['items']:,} items in "
            f"{summary['seconds']:.1f} s ({summary['items_per_s']:,.0f}/s), "
            f"{summary['consumed_rcu']:,.1f} RCU ({summary['rcu_per_s']:.1f}/s of "
            f"{summary['read_capacity']:g})",
            file=sys.stdout,
        )
    return EXIT_OK
