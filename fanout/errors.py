"""The exception tree of fanout.

* FanoutError
  + ConfigError(ValueError)    bad configuration; start-up fails with exit code 2
  + SourceError                a DynamoDB Streams call failed
    - StreamNotFound
    - IteratorExpired           retryable: re-seek after the last sequence seen
    - TrimmedData               the position asked for is older than the retention
    - Throttled                 retryable: back off with jitter
    - ServiceError              retryable: 5xx or network failure
    - MalformedAnswer           retryable: a 200 whose body is not the answer's shape (not
                                JSON, not an object, a field of the wrong type)
  + SinkUnavailable            retryable: a sink could attempt nothing in the batch;
                               ``retry_after`` says how long the destination asked to wait
  + CheckpointError            retryable: the next checkpoint round writes again
  + DeadLetterError            retryable: a dead-letter write failed; the shard stops
                               advancing until a later write succeeds
  + CallCrashed                retryable: code the worker called (a sink, a blocking call on
                               a thread) raised SystemExit, KeyboardInterrupt or another
                               BaseException that is not an Exception: that call failed
  + CallTimeout                retryable: a blocking call on a thread ran out of time (it goes
                               on in its thread; ``fanout.isolation.Offload``)

``retryable`` (a class attribute, False unless marked above) says whether the same call may
succeed if it is simply made again later. Code that decides between retrying and giving up
reads it instead of listing exception classes; an error that is not retryable needs a change
(of configuration, position or data) first.

Per-record failures of a sink are values (``fanout.sink.Failure``), not exceptions.
"""

from __future__ import annotations

from typing import ClassVar


class FanoutError(Exception):
    """Root of every error fanout raises on purpose.

    Attributes:
        retryable: True when making the same call again later may succeed (see the module
            docstring).
    """

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


class MalformedAnswer(SourceError):
    """A 200 answer whose body is not what the operation returns: not JSON (a proxy's HTML
    page), not a JSON object, or a field of the wrong type. The call is made again later."""

    retryable = True


class SinkUnavailable(FanoutError):
    """Raised by ``Sink.send()`` when nothing in the batch could be attempted (the destination
    is down or asked to be left alone); every record is retried.

    ``retry_after`` (seconds), when the destination said how long to wait: the sink is not
    called again sooner (an hour at most).
    """

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CheckpointError(FanoutError):
    """The checkpoint store could not be read or written."""

    retryable = True


class DeadLetterError(FanoutError):
    """A dead-letter write failed; the record is not settled."""

    retryable = True


class CallCrashed(FanoutError):
    """Code the worker called raised a ``BaseException`` that is not an ``Exception``
    (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, a ``CancelledError`` of its
    own, a custom subclass): the call failed, the worker goes on. The original is the
    ``__cause__``."""

    retryable = True


class CallTimeout(FanoutError):
    """A blocking call on a thread did not return in time; it goes on in its thread."""

    retryable = True
