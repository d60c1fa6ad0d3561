"""fanout: read DynamoDB Streams once, fan every change out to many sinks."""

from __future__ import annotations

from fanout.records import Record
from fanout.sink import Failure, Failures, Sink, SinkContext

__version__ = "0.1.0"

__all__ = ["Failure", "Failures", "Record", "Sink", "SinkContext", "__version__"]
