"""Command line: ``fanout run|validate|schema|status|dlq|import|backfill``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import orjson

from fanout import __version__
from fanout.cli import backfill, dlq, importer, status
from fanout.cli.loader import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    add_config_option,
    describe,
    load,
    report,
)
from fanout.observe import crash


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fanout", description="Read DynamoDB Streams once, fan every change out to sinks."
    )
    parser.add_argument("--version", action="version", version=f"fanout {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the worker")
    add_config_option(run)
    run.add_argument("--log-format", choices=["json", "text"], help="override log_format")
    run.add_argument(
        "--processes",
        type=_processes,
        help="worker processes on this host sharing the shards (a number or auto: one per "
        "CPU); overrides the config's processes",
    )
    # Set by `--processes` for the workers it starts: how many were started together.
    run.add_argument("--group-size", type=int, help=argparse.SUPPRESS)
    validate = sub.add_parser("validate", help="check a config file without connecting")
    add_config_option(validate)
    sub.add_parser("schema", help="print the JSON Schema of the config file")
    dlq.add_parser(sub)
    status.add_parser(sub)
    importer.add_parser(sub)
    backfill.add_parser(sub)
    return parser


def _processes(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a number of processes, or auto") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError("must be 1 to 256, or auto")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code.

    Whatever it prints, and the traceback of an exception nobody caught, goes through the
    log redactor (``fanout.observe.crash``).
    """
    crash.install()
    with crash.redacted_output():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "schema":
            return _schema()
        if args.command == "dlq":
            return dlq.run(args)
        if args.command == "status":
            return status.run(args)
        if args.command == "import":
            return importer.run(args)
        if args.command == "backfill":
            return backfill.run(args)
        if args.command == "validate":
            config, _ = load(args)
            for note in config.notes:
                print(f"fanout: note: {note}", file=sys.stderr)
            print(
                f"ok: {len(config.streams)} stream(s), {len(config.sinks)} sink(s), "
                f"application {config.application}"
            )
            return EXIT_OK
        return _run(args)
    except CommandError as exc:
        return report(exc)
    except Exception as exc:
        # AWS, the network, files: one line, exit code 1 (a bug keeps its traceback).
        line = describe(exc)
        if line is None:
            raise
        return report(CommandError(line, EXIT_FAILED))


def _schema() -> int:
    from fanout.cli.schema import json_schema

    sys.stdout.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    import anyio

    from fanout.app import Worker
    from fanout.observe import logs
    from fanout.observe.watchdog import exit_now_if_stuck
    from fanout.runtime import tune_gc

    config, path = load(args)
    settings = config.settings
    secrets = logs.config_secrets(config, path)
    logs.setup(args.log_format or settings.log_format, settings.log_level, secrets=secrets)
    for note in config.notes:
        logging.getLogger("fanout.config").warning("config_note", extra={"note": note})
    processes = config.processes
    if args.processes is not None:
        processes = max(1, os.cpu_count() or 1) if args.processes == "auto" else args.processes
    if args.group_size is None and processes > 1:
        from fanout.cli.supervise import supervise

        return supervise(config, path, processes, args.log_format)
    from fanout.cli.preflight import check_streams
    from fanout.errors import ConfigError
    from fanout.observe import sentry

    try:
        reporter = sentry.setup()  # only when FANOUT_SENTRY_DSN is set
    except ConfigError as exc:
        raise CommandError(str(exc), EXIT_CONFIG) from exc
    try:
        anyio.run(check_streams, config)
        worker = Worker(config, group_size=args.group_size or 1)
        tune_gc()
        code = anyio.run(crash.guarded, worker.run)
        worker.exit_deadline.cancel()
    finally:
        if reporter is not None:
            reporter.close()
    # Checkpoints are written; a thread stuck for good (a hung disk) must not keep the
    # process from ending.
    return exit_now_if_stuck(code)
