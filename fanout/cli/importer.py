"""``fanout import --from FILE``: a Lambda trigger file as the equivalent fanout config.

The file (a triggers.json, a CloudFormation/SAM template or a serverless.yml) is read
unchanged; the YAML goes to standard output, a note per setting that is ignored or means
something else here to standard error. Settings that cannot be carried over fail the import
(exit code 2), every one named.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fanout.cli.loader import EXIT_CONFIG, EXIT_OK, CommandError
from fanout.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    """Add ``import`` to ``fanout``'s sub-commands."""
    parser = subparsers.add_parser(
        "import",
        help="print the fanout config equivalent to Lambda trigger definitions",
        description="Read a triggers.json, a CloudFormation/SAM template or a serverless.yml "
        "and print the equivalent fanout config (YAML).",
    )
    parser.add_argument("--from", dest="source", required=True, metavar="FILE")
    parser.add_argument(
        "--table", help="the stream's table, for triggers whose file does not name it"
    )


def run(args: argparse.Namespace) -> int:
    """Print the config; returns the exit code.

    Raises:
        CommandError: the file is not a trigger file, or cannot be carried over (code 2).
    """
    from fanout.triggers import import_trigger_file, render

    try:
        imported = import_trigger_file(args.source, table=args.table)
    except ConfigError as exc:
        raise CommandError(f"cannot import {args.source}:\n{exc}", EXIT_CONFIG) from exc
    if imported is None:
        raise CommandError(
            f"{args.source} is not a triggers.json, a CloudFormation/SAM template or a "
            "serverless.yml",
            EXIT_CONFIG,
        )
    for note in imported.notes:
        print(f"fanout: note: {note}", file=sys.stderr)
    sys.stdout.write(render(imported, args.source))
    return EXIT_OK
