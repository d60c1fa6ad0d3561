"""The options every sink has (``SinkConfig``, which each sink type extends), its retries
(``RetryConfig``) and its dead-letter destination (``DeadLetterConfig``, with
``OverflowConfig`` for entries too large for an SQS message).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from fanout.config.types import Duration, FileMode, Model
from fanout.shapes import check_http_url, check_sqs_queue_url, is_sqs_queue_name


class RetryConfig(Model):
    """Bounded retries for one sink."""

    max_attempts: int = Field(
        10, description="Attempts per record before it is dead-lettered; -1 for unbounded."
    )
    max_record_age: Duration = Field(
        6 * 3600.0, description="Records older than this are dead-lettered; -1 for unbounded."
    )
    initial_backoff: Duration = Field(1.0, ge=0, description="First retry delay (ceiling).")
    max_backoff: Duration = Field(60.0, ge=0, description="Longest retry delay.")
    bisect_on_error: bool = Field(
        True, description="Split a batch that fails as a whole to isolate a poison record."
    )

    @field_validator("max_attempts")
    @classmethod
    def _attempts(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("must be at least 1, or -1 for unbounded")
        return value

    @field_validator("max_record_age")
    @classmethod
    def _age(cls, value: float) -> float:
        if value <= 0 and value != -1:
            raise ValueError("must be positive, or -1 for unbounded")
        return value


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _check_bucket(value: str | None) -> str | None:
    if value is not None and not _BUCKET.match(value):
        raise ValueError(
            f"{value!r} is not an S3 bucket name (3-63 lower-case letters, digits, '.' and '-')"
        )
    return value


class OverflowConfig(Model):
    """Where an SQS dead-letter queue keeps entries too large for a message."""

    type: Literal["file", "s3"] = Field(
        "file",
        description="file: dlq-overflow/ next to the checkpoint database (the worker's own "
        "disk); s3: objects in 'bucket' that any reader of the queue can fetch.",
    )
    bucket: str | None = Field(None, description="S3 bucket (type s3).")
    prefix: str = Field(
        "fanout-dlq-overflow/",
        description="Key prefix (type s3); objects are <prefix><sink>/<sha256>.json.",
    )
    region: str | None = Field(None, description="The bucket's region; default: the queue's.")
    endpoint_url: str | None = Field(
        None, description="Another S3 endpoint, e.g. a local emulator."
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        return _check_bucket(value)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value, "endpoint URL")

    @model_validator(mode="after")
    def _needs(self) -> OverflowConfig:
        if self.type == "s3" and not self.bucket:
            raise ValueError("type s3 needs 'bucket'")
        return self


class DeadLetterConfig(Model):
    """Where records go that a sink gave up on."""

    type: Literal["file", "sqs", "s3", "sink"] = Field("file", description="Destination kind.")
    path: str | None = Field(
        None,
        description="JSON lines file (type file); default: dlq-<sink>.jsonl next to the "
        "checkpoint database.",
    )
    queue_url: str | None = Field(
        None,
        description="SQS queue URL (type sqs): https://sqs.REGION.amazonaws.com/ACCOUNT_ID/NAME.",
    )
    queue_name: str | None = Field(
        None,
        description="The queue's name (type sqs, instead of queue_url): its URL is looked up "
        "with GetQueueUrl in the account of the worker's credentials.",
    )
    region: str | None = Field(
        None,
        description="The queue's or bucket's region (type sqs or s3); default: the region "
        "a queue URL names, else the environment's.",
    )
    endpoint_url: str | None = Field(
        None, description="Another SQS or S3 endpoint (type sqs or s3), e.g. a local emulator."
    )
    bucket: str | None = Field(
        None, description="S3 bucket (type s3): one object per entry, keys sortable by time."
    )
    prefix: str = Field(
        "fanout-dlq/",
        description="Key prefix (type s3); objects are <prefix><sink>/<time>-<id>.json.",
    )
    overflow: OverflowConfig = Field(
        default_factory=OverflowConfig,
        description="Where entries too large for an SQS message are kept (type sqs).",
    )
    sink: str | None = Field(None, description="Another configured sink (type sink).")
    file_mode: FileMode = Field(
        0o600,
        description="Permissions of the file (type file) when this creates it, in octal "
        "('0600'); an existing file keeps its own.",
    )

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str | None) -> str | None:
        return None if value is None else check_sqs_queue_url(value)

    @field_validator("queue_name")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        if value is not None and not is_sqs_queue_name(value):
            raise ValueError(
                f"{value!r} is not an SQS queue name (1-80 letters, digits, - and _, "
                "and .fifo at the end of a FIFO queue's)"
            )
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value, "endpoint URL")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        return _check_bucket(value)

    @model_validator(mode="after")
    def _needs(self) -> DeadLetterConfig:
        if self.type == "sqs" and (self.queue_url is None) == (self.queue_name is None):
            raise ValueError("type sqs needs 'queue_url' or 'queue_name' (one of them)")
        if self.type == "s3" and not self.bucket:
            raise ValueError("type s3 needs 'bucket'")
        if self.type == "sink" and not self.sink:
            raise ValueError("type sink needs 'sink'")
        return self


class SinkConfig(Model):
    """Options every sink has; each sink type extends this with its own."""

    type: str = Field(description="Sink type, e.g. handler, file, stdout.")
    streams: list[str] | None = Field(
        None, description="Streams feeding this sink (names); default all."
    )
    filters: list[dict[str, Any]] | None = Field(
        None, description="Lambda/EventBridge filter patterns, OR-ed; default: everything."
    )
    batch_size: int = Field(100, ge=1, le=10_000, description="Records per send at most.")
    batch_window: Duration = Field(
        0.0, ge=0, le=300, description="Seconds to wait for a fuller batch."
    )
    parallelization_factor: int = Field(
        1, ge=1, le=10, description="Concurrent batches per shard (per item key ordered)."
    )
    # Two full GetRecords pages: enough to keep a sink busy while the next page is read.
    # A parsed record is ~13 KB of Python objects, so this bounds memory per shard.
    max_buffered_records: int = Field(
        2_000,
        ge=1,
        description="Records buffered per shard for this sink before the shard's reader waits.",
    )
    max_in_flight: int | None = Field(
        None,
        ge=1,
        description="Concurrent send() calls to this sink across all shards at most; "
        "default: unlimited (one per shard and parallelization lane).",
    )
    retry: RetryConfig = Field(default_factory=RetryConfig)
    dead_letter: DeadLetterConfig = Field(default_factory=DeadLetterConfig)
    backfill: Literal["off", "on_first_start"] = Field(
        "off",
        description="on_first_start: the first worker that runs this sink for the "
        "application loads the table's current items into it (see docs/backfill.md).",
    )

    @field_validator("backfill", mode="before")
    @classmethod
    def _backfill_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false
