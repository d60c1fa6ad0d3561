"""What every command shares: the ``--config`` option, loading it, the exit codes, and turning
the errors of the environment (AWS, the network, files) into one line.

A command fails with ``CommandError``; ``main`` prints its message as one line and exits with
its code. Errors that come from the environment rather than from fanout (no region, no
credentials, an endpoint that cannot be reached, a refused call, a file that cannot be
written) are described by ``describe`` the same way, so no command prints a traceback for
them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fanout.config import Config, SinkConfig, build_config
from fanout.config.loading import Unresolved, combine, read_yaml, substitute
from fanout.errors import ConfigError, FanoutError
from fanout.observe import crash
from fanout.sink import SinkType

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
    """``--config FILE`` (default ``$FANOUT_CONFIG``) and ``--table NAME``."""
    parser.add_argument(
        "--config",
        "-c",
        help="YAML config file (default: $FANOUT_CONFIG); also a triggers.json, a "
        "CloudFormation/SAM template or a serverless.yml",
    )
    parser.add_argument(
        "--table", help="the stream's table, for a trigger file that does not name it"
    )


def config_path(args: argparse.Namespace) -> str:
    """The config file named by ``--config`` or ``$FANOUT_CONFIG``.

    Raises:
        CommandError: neither names one (exit code 2).
    """
    path: str | None = getattr(args, "config", None) or os.environ.get("FANOUT_CONFIG")
    if not path:
        raise CommandError("no config file: pass --config FILE or set FANOUT_CONFIG", EXIT_CONFIG)
    return path


def read_config_data(
    path: str,
    table: str | None = None,
    unresolved: Unresolved | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """The raw config of ``path``: a fanout YAML file, or the fanout config equivalent to a
    trigger file (triggers.json, CloudFormation/SAM template, serverless.yml).

    Raises:
        ConfigError: the file cannot be read, or is not valid.
    """
    from fanout.triggers import import_trigger_file

    converted = import_trigger_file(path, table=table)
    if converted is not None:
        if notes is not None:
            notes.extend(converted.notes)
        return substitute(converted.config, unresolved)
    if table is not None:
        raise ConfigError("--table", "only a trigger file takes --table; this is a fanout config")
    return read_yaml(path, unresolved)


def load(args: argparse.Namespace) -> tuple[Config, str]:
    """The validated config of the command, and its file's path.

    Raises:
        CommandError: there is no config file or it is invalid (exit code 2).
    """
    path = config_path(args)
    notes: list[str] = []
    try:
        data = read_config_data(path, getattr(args, "table", None), notes=notes)
        config = build_config(data, base_dir=Path(path).resolve().parent, source=Path(path))
    except ConfigError as exc:
        raise CommandError(f"invalid configuration:\n{exc}", EXIT_CONFIG) from exc
    config.notes = notes
    crash.register_config(config, path)  # nothing the command prints shows its secrets
    return config, path


# -- the part of a config that offline commands use ------------------------------------------


class _AnySinkType(Mapping[str, "SinkType[Any]"]):
    """Every sink type, known or not, as its common options only (nothing is imported)."""

    _TYPE: SinkType[Any] = SinkType(SinkConfig, lambda name, cfg, ctx: None)  # type: ignore[arg-type,return-value]

    def __getitem__(self, kind: str) -> SinkType[Any]:
        return self._TYPE

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _offline_part(data: dict[str, Any]) -> dict[str, Any]:
    """The application, the checkpoints, each stream's table or ARN, and each sink's type and
    dead letter."""
    part: dict[str, Any] = {}
    for key in ("application", "checkpoints"):
        if key in data:
            part[key] = data[key]
    streams = data.get("streams")
    if isinstance(streams, dict):
        part["streams"] = {
            name: {k: v for k, v in s.items() if k in ("table", "stream_arn")}
            if isinstance(s, dict)
            else s
            for name, s in streams.items()
        }
    sinks = data.get("sinks")
    if isinstance(sinks, dict):
        part["sinks"] = {
            name: {k: v for k, v in s.items() if k in ("type", "dead_letter")}
            if isinstance(s, dict)
            else s
            for name, s in sinks.items()
        }
    return part


def _used_offline(path: str) -> bool:
    parts = path.replace("[", ".[").split(".")
    if parts[0] == "checkpoints":
        return True
    if parts[0] == "streams" and len(parts) >= 3:
        return parts[2] in ("table", "stream_arn")
    if parts[0] == "sinks" and len(parts) >= 3:
        return parts[2] in ("type", "dead_letter")
    return False


def load_offline(args: argparse.Namespace) -> tuple[Config, str]:
    """The part of the config that commands reading only local state use (``status``): the
    checkpoint store, each stream's table or ARN, each sink's dead-letter destination.

    Nothing else is validated or needed: a ``${VAR}`` elsewhere (an endpoint, a secret of a
    sink) may be unset, and handlers are not imported, so it works from a shell that has
    neither the worker's secrets nor its handler code. Sinks are read with their common
    options only; the environment overrides the file as usual.

    Raises:
        CommandError: there is no config file, or the part used is invalid (exit code 2).
    """
    path = config_path(args)
    unresolved = Unresolved()
    try:
        data = read_config_data(path, getattr(args, "table", None), unresolved)
        errors = unresolved.errors({p for p in unresolved.refs if _used_offline(p)})
        if errors:
            raise combine(errors)
        part = _offline_part(data)
        config = build_config(
            part,
            _AnySinkType(),
            base_dir=Path(path).resolve().parent,
            check=False,
            source=Path(path),
        )
    except ConfigError as exc:
        raise CommandError(f"invalid configuration:\n{exc}", EXIT_CONFIG) from exc
    return config, path


# -- errors of the environment -----------------------------------------------------------------


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def describe(exc: BaseException) -> str | None:
    """One line saying what went wrong, for an error of the environment: AWS (no region, no
    credentials, an endpoint that cannot be reached, a refused call), the network, a file.
    None for anything else (a bug: let it show its traceback)."""
    for leaf in _leaves(exc):
        line = _describe_one(leaf)
        if line is not None:
            return line
    return None


def _describe_one(exc: BaseException) -> str | None:
    import aiohttp
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
    )

    if isinstance(exc, NoRegionError):
        return "no AWS region: set AWS_DEFAULT_REGION, or `region` in the config"
    if isinstance(exc, NoCredentialsError):
        return (
            "no AWS credentials found (environment, shared config and credentials files, "
            "container or instance role)"
        )
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach {exc.kwargs.get('endpoint_url', 'the AWS endpoint')}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        operation = getattr(exc, "operation_name", "") or "AWS call"
        return f"{operation} failed: {error.get('Code', '?')}: {error.get('Message', '')}".strip()
    if isinstance(exc, BotoCoreError):
        return f"AWS: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc}"
    if isinstance(exc, aiohttp.ClientError):
        return f"HTTP: {type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or type(exc).__name__}{where}"
    if isinstance(exc, ConfigError):
        return None
    if isinstance(exc, FanoutError):
        # "dead-letter queue URL: <what botocore said>" -> "...: <what it means>"
        text, cause = str(exc), exc.__cause__
        inner = _describe_one(cause) if cause is not None else None
        if inner is not None and str(cause) and str(cause) in text:
            return text.replace(str(cause), inner)
        return text or type(exc).__name__
    return None


def report(error: CommandError) -> int:
    """Print ``error`` on standard error (secrets masked, as in logs); returns its exit
    code."""
    from fanout.observe.logs import REDACTOR

    print(f"fanout: {REDACTOR.redact(error.message)}", file=sys.stderr)
    return error.code
