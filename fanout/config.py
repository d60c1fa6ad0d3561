"""Configuration: a YAML file plus ``FANOUT_``-prefixed environment overrides (env wins).

Sinks and streams are mappings keyed by name, so one environment variable can reach one sink
(``FANOUT_SINKS__AUDIT__PATH=/tmp/a.jsonl``). Each sink's own options are validated by the
config model of its type (``fanout.sink.SinkRegistry``: the ``fanout.sinks`` entry points);
every error names the field path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fanout.errors import ConfigError
from fanout.shapes import check_http_url, check_sqs_queue_url, check_stream_arn, is_sqs_queue_name
from fanout.sink import SinkRegistry, SinkType

DEFAULT_LEASE_TABLE = "fanout-leases"
DEFAULT_APPLICATION = "fanout"
_APPLICATION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a string such as ``250ms``, ``30s``, ``5m``, ``6h``, ``1d``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(
                f"invalid duration {value!r}: use seconds or a number with ms, s, m, h or d"
            )
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


# Float seconds; -1 means "unbounded" where a field says so.
Duration = Annotated[float, BeforeValidator(parse_duration)]

_OCTAL = re.compile(r"^\s*(?:0o|0)?([0-7]{1,4})\s*$", re.IGNORECASE)


def parse_file_mode(value: Any) -> Any:
    """Permission bits from an octal string (``"0600"``, ``"0o640"``, ``"600"``) or an int.

    YAML reads ``0600`` as the int 384 (octal); a bare ``600`` is the int 600, above
    ``0o777``, so such ints are refused rather than guessed at.
    """
    if isinstance(value, bool):
        raise ValueError("a file mode is an octal string like '0600'")
    if isinstance(value, int):
        if not 0 <= value <= 0o777:
            raise ValueError(
                f"{value} is not a file mode: write it as an octal string, e.g. '0600'"
            )
        return value
    if isinstance(value, str):
        match = _OCTAL.match(value)
        mode = int(match.group(1), 8) if match else -1
        if not 0 <= mode <= 0o777:
            raise ValueError(f"invalid file mode {value!r}: use octal, e.g. '0600' or '0640'")
        return mode
    return value


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "ki": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "ti": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}


def parse_size(value: Any) -> Any:
    """Bytes from a number or a string such as ``512MiB``, ``64MB``, ``1Gi`` (binary units
    for ``KiB``/``Ki``/``K``, decimal for ``KB``)."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '512MiB'")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _SIZE.match(value)
        unit = (match.group(2) or "").lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(
                f"invalid size {value!r}: use bytes or a number with KiB, MiB, GiB (or KB, MB, GB)"
            )
        return int(float(match.group(1)) * _SIZE_UNITS[unit])
    return value


_SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$"

# A size in bytes; "512MiB" in the config.
ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    Field(gt=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": _SIZE_PATTERN},
            ],
            "examples": ["512MiB"],
        }
    ),
]

# Permission bits of a file fanout creates; octal in the config ("0600").
FileMode = Annotated[
    int,
    BeforeValidator(parse_file_mode),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": "^(0o|0)?[0-7]{3}$"},
                {"type": "integer", "minimum": 0, "maximum": 0o777},
            ],
            "examples": ["0600"],
        }
    ),
]


class Model(BaseModel):
    """Base for every config model: unknown keys are errors (typos fail at start-up)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


def _is_str_mapping(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


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
        "'512MiB'. Default: half the container's memory limit, else 512MiB.",
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


class Config:
    """Validated settings plus each sink's typed config and the sink types that made them."""

    def __init__(
        self,
        settings: Settings,
        sinks: dict[str, SinkConfig],
        types: dict[str, SinkType[Any]] | None = None,
        *,
        code_path: str | None = None,
        source: Path | None = None,
    ) -> None:
        self.settings = settings
        self.sinks = sinks
        self.types = types or {}
        self.code_path = code_path or str(Path.cwd())
        """The resolved top-level ``code_path`` (an absolute directory)."""
        self.notes: list[str] = []
        """What loading it noted (settings of a trigger file that are ignored here)."""
        self.source = source

    @property
    def application(self) -> str:
        """Who the checkpoints belong to: ``application``, else the config file's name
        without its extension, else ``fanout``."""
        if self.settings.application:
            return self.settings.application
        if self.source is not None:
            return application_from_path(self.source)
        return DEFAULT_APPLICATION

    @property
    def processes(self) -> int:
        """Worker processes to start on this host (``auto``: the CPU count)."""
        wanted = self.settings.processes
        if wanted == "auto":
            return max(1, os.cpu_count() or 1)
        return wanted

    @property
    def max_buffered_bytes(self) -> int:
        """The byte budget of buffered records: ``max_buffered_bytes``, else half the
        container's memory limit, else 512 MiB."""
        from fanout.stream.budget import default_budget

        return self.settings.max_buffered_bytes or default_budget()

    def sink_set(self) -> dict[str, str]:
        """Every sink's name and type: what the workers of one application must share."""
        return {name: cfg.type for name, cfg in sorted(self.sinks.items())}

    def sink_type(self, name: str) -> SinkType[Any]:
        """The type of the sink called ``name``."""
        return self.types[name]

    def dead_letter_path(self, sink: str) -> Path:
        """The sink's dead-letter file: its ``dead_letter.path``, else ``dlq-<sink>.jsonl``
        next to the checkpoint database."""
        path = self.sinks[sink].dead_letter.path
        if path:
            return Path(path)
        return Path(self.settings.checkpoints.path).parent / f"dlq-{sink}.jsonl"

    @property
    def streams(self) -> dict[str, StreamConfig]:
        return self.settings.streams


def application_from_path(path: str | os.PathLike[str]) -> str:
    """The default application name of a config file: its name without the extension, with
    characters a name cannot hold replaced by ``-`` (``orders.yaml``: ``orders``)."""
    stem = Path(path).stem
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", stem).lstrip("._-")[:128]
    return name or DEFAULT_APPLICATION


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Unresolved:
    """Collects the ``${VAR}`` references that had no value, instead of failing on the first
    (for commands that use only part of the config; see ``read_yaml``)."""

    def __init__(self) -> None:
        self.refs: dict[str, str] = {}  # config path -> variable name

    def errors(self, paths: set[str] | None = None) -> list[ConfigError]:
        """An error per unresolved reference (at ``paths`` only, when given)."""
        return [
            ConfigError(path, f"environment variable {name} is not set")
            for path, name in self.refs.items()
            if paths is None or path in paths
        ]


def _substitute(
    value: Any, path: str, env: dict[str, str], unresolved: Unresolved | None = None
) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of the parsed YAML."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            if unresolved is None:
                raise ConfigError(path, f"environment variable {name} is not set")
            unresolved.refs[path] = name
            return match.group(0)

        return _VAR.sub(repl, value)
    if isinstance(value, dict):
        return {
            k: _substitute(v, f"{path}.{k}" if path else str(k), env, unresolved)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", env, unresolved) for i, v in enumerate(value)]
    return value


def substitute(data: dict[str, Any], unresolved: Unresolved | None = None) -> dict[str, Any]:
    """``data`` with every ``${VAR}`` reference replaced from the environment (see
    ``read_yaml``)."""
    result: dict[str, Any] = _substitute(data, "", dict(os.environ), unresolved)
    return result


def _loc(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else part
    return path


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # Drop pydantic's "function-after[...]" style loc parts of model validators.
    return tuple(p for p in loc if not (isinstance(p, str) and "[" in p))


def _errors_of(exc: ValidationError, prefix: str = "") -> list[ConfigError]:
    """One ConfigError per error pydantic found, each naming its field."""
    return [
        ConfigError(
            _loc(prefix, _clean_loc(error["loc"])), error["msg"].removeprefix("Value error, ")
        )
        for error in exc.errors()
    ]


def combine(errors: list[ConfigError]) -> ConfigError:
    """One ConfigError that reports every error of ``errors``, one per line (its ``path`` is
    the first one's)."""
    lines = [line for error in errors for line in str(error).splitlines()]
    combined = ConfigError(errors[0].path, "; ".join(lines))
    combined.args = ("\n".join(lines),)
    return combined


def _from_validation_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    return combine(_errors_of(exc, prefix))


def read_yaml(path: str | os.PathLike[str], unresolved: Unresolved | None = None) -> dict[str, Any]:
    """Parse the YAML config file and substitute ``${VAR}`` references.

    A reference to a variable that is not set (and has no default) is an error, unless
    ``unresolved`` is given: then it stays as it is and is noted there.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {file}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{file} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not _is_str_mapping(data):
        raise ConfigError("", f"{file} must hold a mapping at the top level")
    result: dict[str, Any] = _substitute(data, "", dict(os.environ), unresolved)
    return result


def build_config(
    data: dict[str, Any],
    registry: SinkRegistry | Mapping[str, SinkType[Any]] | None = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    check: bool = True,
    source: Path | None = None,
) -> Config:
    """Validate raw settings (YAML data; the environment overrides it) into a Config.

    Every error found is reported at once (one line each, naming its field): the settings'
    own, then each sink's (its type, options, streams, filters, dead letter and its type's
    start-up check, e.g. that a handler imports).

    Args:
        data: the parsed YAML file.
        registry: where sink types are looked up; default: the ``fanout.sinks`` entry points
            (the built-in sinks and every installed plugin).
        base_dir: the config file's directory: relative ``code_path`` values are relative to
            it, and it is the default ``code_path`` (default: the working directory).
        check: run each sink type's start-up check (False: options are validated, nothing
            is imported).
        source: the config file (its name is the default application name).
    """
    registry = SinkRegistry() if registry is None else registry
    base = Path(base_dir if base_dir is not None else Path.cwd()).resolve()
    errors: list[ConfigError] = []
    settings: Settings | None
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        errors.extend(_errors_of(exc))
        settings = None
    if settings is not None:
        raw_sinks: dict[str, Any] = settings.sinks
        streams: set[str] | None = set(settings.streams)
        top = settings.code_path
    else:  # still check every sink that can be checked
        given = data.get("sinks")
        raw_sinks = given if isinstance(given, dict) else {}
        raw_streams = data.get("streams")
        streams = set(raw_streams) if isinstance(raw_streams, dict) else None
        top = data.get("code_path") if isinstance(data.get("code_path"), str) else None
    code_path = str((base / top).resolve()) if top else str(base)

    sink_configs: dict[str, SinkConfig] = {}
    types: dict[str, SinkType[Any]] = {}
    for name, raw in raw_sinks.items():
        if not isinstance(raw, dict):
            continue  # pydantic reported it
        try:
            cfg, entry = _build_sink(name, raw, registry, base, code_path, streams, raw_sinks)
            if check:
                entry.check(name, cfg, f"sinks.{name}")
                if settings is not None:
                    entry.check_settings(name, cfg, f"sinks.{name}", settings)
        except ConfigError as exc:
            errors.append(exc)
            continue
        sink_configs[name] = cfg
        types[name] = entry
    if errors:
        raise combine(errors)
    assert settings is not None
    return Config(settings, sink_configs, types, code_path=code_path, source=source)


def _build_sink(
    name: str,
    raw: dict[str, Any],
    registry: Mapping[str, SinkType[Any]],
    base: Path,
    code_path: str,
    streams: set[str] | None,
    sinks: dict[str, Any],
) -> tuple[SinkConfig, SinkType[Any]]:
    """One sink's typed config and its type; ConfigError with every error found."""
    from fanout import filters

    prefix = f"sinks.{name}"
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ConfigError(f"{prefix}.type", "missing sink type")
    try:
        entry = registry[kind]
    except KeyError:
        valid = ", ".join(registry)
        raise ConfigError(
            f"{prefix}.type", f"unknown sink type {kind!r}; the types are: {valid}"
        ) from None
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.type", exc.message) from exc
    if "code_path" in entry.config.model_fields:
        # A sink type that imports user code gets its code_path resolved against the
        # config file's directory, and the top-level one when it sets none.
        own = raw.get("code_path")
        raw = {
            **raw,
            "code_path": str((base / own).resolve()) if isinstance(own, str) else code_path,
        }
    try:
        cfg = entry.config.model_validate(raw)
    except ValidationError as exc:
        raise _from_validation_error(exc, prefix) from None
    if not isinstance(cfg, SinkConfig):
        raise ConfigError(
            f"{prefix}.type", f"sink type {kind!r}: its config model is not a SinkConfig"
        )
    errors: list[ConfigError] = []
    for stream in cfg.streams or ():
        if streams is not None and stream not in streams:
            errors.append(ConfigError(f"{prefix}.streams", f"unknown stream {stream!r}"))
    if cfg.filters is not None:
        try:
            filters.compile_filters(cfg.filters, path=f"{prefix}.filters")
        except ConfigError as exc:
            errors.append(exc)
    dl = cfg.dead_letter
    if dl.type == "sink" and (dl.sink not in sinks or dl.sink == name):
        errors.append(ConfigError(f"{prefix}.dead_letter.sink", f"unknown sink {dl.sink!r}"))
    if errors:
        raise combine(errors)
    return cfg, entry


def load_config(
    path: str | os.PathLike[str] | None,
    registry: SinkRegistry | None = None,
    *,
    check: bool = True,
) -> Config:
    """Read the YAML file (``path`` or ``$FANOUT_CONFIG``), apply the environment, validate.

    The file's directory is the default ``code_path`` (and what relative ones are relative
    to), as Lambda's task root is for a function's handler.
    """
    path = path or os.environ.get("FANOUT_CONFIG")
    data = read_yaml(path) if path else {}
    base = Path(path).resolve().parent if path else None
    source = Path(path) if path else None
    return build_config(data, registry, base_dir=base, check=check, source=source)
