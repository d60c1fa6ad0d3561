"""Dead-letter destinations: where a sink's given-up records are kept, whole.

``base`` has the ``DeadLetter`` protocol (write), ``ReadableDeadLetter`` (read, acknowledge,
release) and the entry format; ``file``, ``sqs`` and ``sink`` are the destinations. File and
SQS destinations can be read back (``fanout dlq``); a sink destination cannot.
"""

from __future__ import annotations

from fanout.delivery.deadletter.base import (
    DeadLetter,
    Entry,
    Letter,
    PartialDeadLetterError,
    ReadableDeadLetter,
    entry,
    entry_key,
)
from fanout.delivery.deadletter.file import (
    FileDeadLetter,
    Sidecar,
    count_entries,
    read_entries,
)
from fanout.delivery.deadletter.sink import SinkDeadLetter

__all__ = [
    "DeadLetter",
    "Entry",
    "FileDeadLetter",
    "Letter",
    "PartialDeadLetterError",
    "ReadableDeadLetter",
    "Sidecar",
    "SinkDeadLetter",
    "count_entries",
    "entry",
    "entry_key",
    "read_entries",
]
