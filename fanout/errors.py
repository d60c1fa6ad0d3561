"""The exception tree of fanout.

* FanoutError
  + ConfigError(ValueError)    bad configuration; start-up fails with exit code 2
  + SourceError                a DynamoDB Streams call failed
    - StreamNotFound
    - IteratorExpired           retryable: re-seek after the last sequence seen
    - TrimmedData               the position asked for is older than the retention
    - Throttled                 retryable: back off with jitter
    - ServiceError              retryable: 5xx or network failure
  + SinkError
    - SinkUnavailable           retryable: nothing in the batch could be attempted
    - SinkMisconfigured         fatal
  + CheckpointError
  + DeadLetterError             a dead-letter write failed; the shard stops advancing
"""

from __future__ import annotations

from typing import ClassVar


class FanoutError(Exception):
    """Root of every error fanout raises on purpose."""

    retryable: ClassVar[bool] = False


class ConfigError(FanoutError, ValueError):
    """Invalid configuration. `path` names the offending field, e.g. ``sinks.audit.path``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class SourceError(FanoutError):
    """A DynamoDB / DynamoDB Streams call failed."""

    def __init__(self, message: str, *, code: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class StreamNotFound(SourceError):
    """The table has no stream, or the stream ARN is unknown."""


class IteratorExpired(SourceError):
    """The shard iterator is older than 15 minutes."""

    retryable = True


class TrimmedData(SourceError):
    """The requested position is beyond the 24 h retention: records were lost."""


class Throttled(SourceError):
    """LimitExceededException / ProvisionedThroughputExceededException."""

    retryable = True


class ServiceError(SourceError):
    """5xx answer or a network failure."""

    retryable = True


class SinkError(FanoutError):
    """A sink failed."""


class SinkUnavailable(SinkError):
    """Nothing in the batch could be attempted; every record is retried.

    ``retry_after`` (seconds), when the destination said how long to wait: the sink is not
    called again sooner.
    """

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SinkMisconfigured(SinkError):
    """The sink cannot work with its configuration."""


class CheckpointError(FanoutError):
    """The checkpoint store could not be read or written."""

    retryable = True


class DeadLetterError(FanoutError):
    """A dead-letter write failed; the record is not settled."""

    retryable = True
