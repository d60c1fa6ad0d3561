"""Dead-letter destinations: where a sink's given-up records are kept, whole.

``base`` has the ``DeadLetter`` protocol and the entry format; ``file``, ``sqs`` and ``sink``
are the destinations.
"""

from __future__ import annotations

from fanout.delivery.deadletter.base import (
    DeadLetter,
    Entry,
    PartialDeadLetterError,
    entry,
    entry_key,
)
from fanout.delivery.deadletter.file import FileDeadLetter, read_entries
from fanout.delivery.deadletter.sink import SinkDeadLetter

__all__ = [
    "DeadLetter",
    "Entry",
    "FileDeadLetter",
    "PartialDeadLetterError",
    "SinkDeadLetter",
    "entry",
    "entry_key",
    "read_entries",
]
