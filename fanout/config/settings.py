"""The whole configuration as validated settings (``Settings``: the YAML file with
``FANOUT_``-prefixed environment overrides) and its sections other than streams and sinks:
checkpoints and leases, backfills, the HTTP endpoint.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fanout.config.streams import StreamConfig
from fanout.config.types import ByteSize, Duration, Model

DEFAULT_LEASE_TABLE = "fanout-leases"
DEFAULT_APPLICATION = "fanout"
_APPLICATION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class CheckpointConfig(Model):
    """Where progress and leases are stored, and how long a lease lasts."""

    store: Literal["sqlite", "dynamodb"] = Field(
        "sqlite",
        description="sqlite: one file, shared by the worker processes of one host; dynamodb: "
        "one table, shared by workers on any number of hosts.",
    )
    path: str = Field("./fanout.db", description="SQLite database file (store sqlite).")
    table: str | None = Field(
        None, description="DynamoDB table (store dynamodb); default fanout-leases."
    )
    create_table: bool = Field(
        False, description="Create the DynamoDB table (on demand capacity) if it is missing."
    )
    region: str | None = Field(None, description="AWS region of the table (store dynamodb).")
    endpoint_url: str | None = Field(
        None, description="DynamoDB endpoint (store dynamodb), e.g. DynamoDB Local."
    )
    interval: Duration = Field(
        5.0,
        gt=0,
        description="Checkpoints are written at most this often (and at shard end and shutdown).",
    )
    lease_duration: Duration = Field(
        10.0,
        ge=0.5,
        le=600,
        description="A worker reads a shard only while its lease is renewed within this "
        "time; a crashed worker's shards move to its peers after about this long.",
    )

    @model_validator(mode="after")
    def _store_keys(self) -> CheckpointConfig:
        if self.store == "sqlite":
            for key in ("table", "region", "endpoint_url"):
                if getattr(self, key) is not None:
                    raise ValueError(f"'{key}' applies to store dynamodb only")
            if self.create_table:
                raise ValueError("'create_table' applies to store dynamodb only")
        return self

    @property
    def table_name(self) -> str:
        """The DynamoDB table (store dynamodb)."""
        return self.table or DEFAULT_LEASE_TABLE


class BackfillConfig(Model):
    """How ``fanout backfill`` (and ``backfill: on_first_start``) scans a table."""

    read_capacity: float = Field(
        200.0,
        gt=0,
        description="Read capacity units per second the Scan may consume (all segments "
        "together); --max-rcu overrides it.",
    )
    segments: int = Field(
        4, ge=1, le=1000, description="Parallel Scan segments (TotalSegments); --segments."
    )
    consistent_read: bool = Field(
        False, description="Strongly consistent Scan reads (twice the read capacity)."
    )
    progress_interval: Duration = Field(
        5.0, gt=0, description="Seconds between progress lines in the log (not on a terminal)."
    )


class HttpConfig(Model):
    """The metrics and health endpoint."""

    enabled: bool = True
    host: str = Field("0.0.0.0", description="Listen address.")  # noqa: S104 - a container port
    port: int = Field(9090, ge=0, le=65535, description="Listen port (0 picks a free one).")
    stall_timeout: Duration = Field(
        300.0,
        gt=0,
        description="A shard with pending records and no progress for this long "
        "makes /readyz fail.",
    )


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="FANOUT_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    application: str | None = Field(
        None,
        description="Who the checkpoints belong to: workers of one application share its "
        "shards and run the same sinks. Default: the config file's name without its "
        "extension (orders.yaml: orders).",
    )
    processes: int | Literal["auto"] = Field(
        1,
        description="Worker processes `fanout run` starts on this host, sharing the shards "
        "through the checkpoint store; auto: one per CPU.",
    )
    streams: dict[str, StreamConfig] = Field(description="Streams to read, by name.")
    sinks: dict[str, dict[str, Any]] = Field(
        description="Sinks by name; each has a `type` and that type's options."
    )
    checkpoints: CheckpointConfig = Field(default_factory=CheckpointConfig)
    code_path: str | None = Field(
        None,
        description="Directory put first on sys.path to import handlers from, like Lambda's "
        "task root (handler code and its dependencies live there); relative to the config "
        "file's directory, which is the default. Each handler sink can set its own.",
    )
    http: HttpConfig = Field(default_factory=HttpConfig)
    max_buffered_bytes: ByteSize | None = Field(
        None,
        description="Memory that records read and not yet settled by every sink may take, "
        "process-wide (estimated from each page's JSON: parsed records take about ten times "
        "their wire size); shard readers wait for room before reading a page. Bytes or e.g. "
        "'512MiB'. Default: 16MiB per shard being read (at least 32MiB), at most half the "
        "container's memory limit, else 512MiB.",
    )
    backfill: BackfillConfig = Field(default_factory=BackfillConfig)
    shutdown_grace: Duration = Field(
        30.0,
        ge=0,
        description="Seconds in-flight batches get to finish on SIGTERM; the process is gone "
        "at most 5 s later, whatever a handler does.",
    )
    loop_block_threshold: Duration = Field(
        1.0,
        gt=0,
        description="An event loop that does not run for longer than this is reported "
        "(event_loop_blocked, with what was running).",
    )
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    @field_validator("application")
    @classmethod
    def _application_name(cls, value: str | None) -> str | None:
        if value is not None and not _APPLICATION.match(value):
            raise ValueError(
                "use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("processes")
    @classmethod
    def _processes(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 256:
            raise ValueError("must be 1 to 256, or auto")
        return value

    @field_validator("streams", "sinks")
    @classmethod
    def _not_empty(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("define at least one")
        return value
