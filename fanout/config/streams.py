"""The configuration of one DynamoDB stream to read (``streams.<name>``)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from fanout.config.types import Duration, Model
from fanout.shapes import check_http_url, check_stream_arn


class StreamConfig(Model):
    """One DynamoDB stream to read."""

    table: str | None = Field(None, description="Table name; its latest stream is read.")
    stream_arn: str | None = Field(None, description="Stream ARN (instead of `table`).")
    region: str | None = Field(None, description="AWS region; default from the environment.")
    endpoint_url: str | None = Field(
        None, description="DynamoDB endpoint, e.g. http://127.0.0.1:8000 for DynamoDB Local."
    )
    starting_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = Field(
        "TRIM_HORIZON",
        description="Where a shard without a checkpoint starts. LATEST is resolved once, at "
        "first start, and stored, so restarts never skip records.",
    )
    starting_timestamp: float | None = Field(
        None, description="Epoch seconds, with starting_position AT_TIMESTAMP."
    )
    on_data_loss: Literal["resume_trim_horizon", "fail"] = Field(
        "resume_trim_horizon",
        description="What to do when records were trimmed before they could be read.",
    )
    max_idle_interval: Duration = Field(
        2.0, gt=0, description="Longest wait between GetRecords calls on an idle shard."
    )
    discovery_interval: Duration = Field(
        60.0, gt=0, description="How often DescribeStream is re-read to find new shards."
    )
    max_shards: int = Field(1000, ge=1, description="Shards read concurrently at most.")

    @field_validator("stream_arn")
    @classmethod
    def _stream_arn(cls, value: str | None) -> str | None:
        return None if value is None else check_stream_arn(value)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value, "endpoint URL")

    @model_validator(mode="after")
    def _one_source(self) -> StreamConfig:
        if (self.table is None) == (self.stream_arn is None):
            raise ValueError("set exactly one of 'table' or 'stream_arn'")
        if self.starting_position == "AT_TIMESTAMP" and self.starting_timestamp is None:
            raise ValueError("starting_position AT_TIMESTAMP needs 'starting_timestamp'")
        return self
