"""What every command shares: the ``--config`` option, loading it, and the exit codes."""

from __future__ import annotations

import argparse
import os
import sys

from fanout.config import Config, load_config
from fanout.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


class CommandError(Exception):
    """A command cannot go on; ``message`` is printed and ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` (default ``$FANOUT_CONFIG``)."""
    parser.add_argument("--config", "-c", help="YAML config file (default: $FANOUT_CONFIG)")


def config_path(args: argparse.Namespace) -> str:
    """The config file named by ``--config`` or ``$FANOUT_CONFIG``.

    Raises:
        CommandError: neither names one (exit code 2).
    """
    path: str | None = getattr(args, "config", None) or os.environ.get("FANOUT_CONFIG")
    if not path:
        raise CommandError("no config file: pass --config FILE or set FANOUT_CONFIG", EXIT_CONFIG)
    return path


def load(args: argparse.Namespace) -> tuple[Config, str]:
    """The validated config of the command, and its file's path.

    Raises:
        CommandError: there is no config file or it is invalid (exit code 2).
    """
    path = config_path(args)
    try:
        return load_config(path), path
    except ConfigError as exc:
        raise CommandError(f"invalid configuration:\n{exc}", EXIT_CONFIG) from exc


def report(error: CommandError) -> int:
    """Print ``error`` on standard error; returns its exit code."""
    print(f"fanout: {error.message}", file=sys.stderr)
    return error.code
