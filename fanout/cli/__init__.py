"""Command line: ``fanout run|validate|status|schema``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import orjson

from fanout import __version__
from fanout.cli import status
from fanout.errors import ConfigError

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fanout", description="Read DynamoDB Streams once, fan every change out to sinks."
    )
    parser.add_argument("--version", action="version", version=f"fanout {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the worker")
    run.add_argument("--config", "-c", help="YAML config file (default: $FANOUT_CONFIG)")
    run.add_argument("--log-format", choices=["json", "text"], help="override log_format")
    validate = sub.add_parser("validate", help="check a config file without connecting")
    validate.add_argument("--config", "-c", help="YAML config file (default: $FANOUT_CONFIG)")
    sub.add_parser("schema", help="print the JSON Schema of the config file")
    from fanout.cli import dlq as dlqcli

    dlqcli.add_parser(sub)
    status.add_parser(sub)
    return parser


def _config_error(exc: ConfigError) -> int:
    print(f"fanout: invalid configuration:\n{exc}", file=sys.stderr)
    return EXIT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        from fanout.cli.schema import json_schema

        sys.stdout.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if args.command == "dlq":
        from fanout.cli import dlq as dlqcli

        return dlqcli.run(args)
    if args.command == "status":
        return status.run(args)

    from fanout.config import load_config

    if not (args.config or os.environ.get("FANOUT_CONFIG")):
        print("fanout: no config file: pass --config FILE or set FANOUT_CONFIG", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _config_error(exc)
    if args.command == "validate":
        print(f"ok: {len(config.streams)} stream(s), {len(config.sinks)} sink(s)")
        return 0

    import anyio

    from fanout.app import Worker
    from fanout.observe import logs
    from fanout.runtime import tune_gc

    settings = config.settings
    config_path = args.config or os.environ.get("FANOUT_CONFIG")
    secrets = logs.config_secrets(config, config_path)
    logs.setup(args.log_format or settings.log_format, settings.log_level, secrets=secrets)
    worker = Worker(config)
    tune_gc()
    return anyio.run(worker.run)


if __name__ == "__main__":
    sys.exit(main())
