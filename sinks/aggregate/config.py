"""Options of the ``aggregate`` sink, and the checks that need the whole configuration (a
target table that is also a source stream is an infinite loop)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from fanout.config import Settings, SinkConfig
from fanout.config.types import Model, parse_duration
from fanout.errors import ConfigError

# Attribute names the sink writes beside the measures; a measure cannot take them.
GROUP = "group"
WINDOW = "window"
RESERVED_PREFIX = "fanout:"
ALL_WINDOW = "all"

_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}\Z")
_STREAM_ARN_TABLE = re.compile(r"arn:[^:]+:dynamodb:([^:]*):[^:]*:table/([^/]+)/stream/")


class SumMeasure(Model):
    """The sum of a number attribute over the group's items."""

    sum: str = Field(description="The attribute to add up (missing or not a number: 0).")


class MinMeasure(Model):
    """The smallest value of a number attribute seen (append-only: never retracted)."""

    min: str


class MaxMeasure(Model):
    """The largest value of a number attribute seen (append-only: never retracted)."""

    max: str


class LatestMeasure(Model):
    """The attribute's value in the group's newest change (append-only: never retracted)."""

    latest: str


Measure = Literal["count"] | SumMeasure | MinMeasure | MaxMeasure | LatestMeasure
# Seconds, or a string: "none" or a duration such as "1h".
Window = Annotated[
    float | None,
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}]}),
]


class AggregateSinkConfig(SinkConfig):
    """Options of the ``aggregate`` sink."""

    type: Literal["aggregate"] = "aggregate"
    table: str = Field(
        description="The target table: partition key `group` (S), sort key `window` (S)."
    )
    group_by: list[str] = Field(
        min_length=1,
        description="Attributes of the item image; the row's `group` is their values joined "
        "with '#'.",
    )
    window: Window = Field(
        None,
        description="`none` (one row per group, window `all`) or a tumbling window such as "
        "1m, 1h, 1d on the change's ApproximateCreationDateTime (window = its start, epoch "
        "seconds).",
    )
    measures: dict[str, Measure] = Field(
        min_length=1,
        description="Number attributes of each row: `count` (items), `{sum: attr}`; and for "
        "append-only tables `{min: attr}`, `{max: attr}`, `{latest: attr}`.",
    )
    region: str | None = Field(None, description="AWS region; default from the environment.")
    endpoint_url: str | None = Field(
        None, description="DynamoDB endpoint, e.g. http://127.0.0.1:8000 for DynamoDB Local."
    )
    create_table: bool = Field(
        False, description="Create the target table (on-demand) if it does not exist."
    )
    state_table: str | None = Field(
        None,
        description="The sink's bookkeeping table (each source item's last applied change and "
        "contribution), created on-demand if missing; default: `<table>-fanout-state`.",
    )
    allow_source_target: bool = Field(
        False,
        description="Allow a target (or state) table that is also a source stream of this "
        "worker; the sink then skips the changes of the rows it wrote itself.",
    )
    max_transaction_actions: int = Field(
        100,
        ge=3,
        le=100,
        description="Actions per TransactWriteItems at most (DynamoDB allows 100); smaller "
        "transactions conflict less on hot rows.",
    )

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        seconds = parse_duration(value)
        if not isinstance(seconds, float) or seconds < 1 or seconds != int(seconds):
            raise ValueError("a window is `none` or a whole number of seconds, e.g. 1m, 1h, 1d")
        return seconds

    @field_validator("table", "state_table")
    @classmethod
    def _table_name(cls, value: str | None) -> str | None:
        if value is not None and not _TABLE_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a DynamoDB table name (3 to 255 of a-z, A-Z, 0-9, _ - .)"
            )
        return value

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: list[str]) -> list[str]:
        if any(not name for name in value):
            raise ValueError("attribute names must not be empty")
        if len(set(value)) != len(value):
            raise ValueError("an attribute is listed twice")
        return value

    @field_validator("measures")
    @classmethod
    def _measures(cls, value: dict[str, Measure]) -> dict[str, Measure]:
        for name in value:
            if not name or name in (GROUP, WINDOW) or name.startswith(RESERVED_PREFIX):
                raise ValueError(
                    f"{name!r} cannot name a measure: 'group' and 'window' are the keys, and "
                    f"names starting with {RESERVED_PREFIX!r} are the sink's bookkeeping"
                )
        return value

    @model_validator(mode="after")
    def _state_table_apart(self) -> AggregateSinkConfig:
        if self.state_table is not None and self.state_table == self.table:
            raise ValueError("state_table must not be the target table")
        if len(self.state_table_name) > 255:
            raise ValueError("the default state table name is too long: set state_table")
        return self

    @property
    def state_table_name(self) -> str:
        """The bookkeeping table: ``state_table``, else ``<table>-fanout-state``."""
        return self.state_table or f"{self.table}-fanout-state"

    @property
    def window_seconds(self) -> int | None:
        """The window's length in seconds, or None for running totals."""
        return None if self.window is None else int(self.window)


def stream_table(stream_arn: str) -> tuple[str, str] | None:
    """``(region, table)`` named by a DynamoDB stream ARN, or None if it is not one."""
    match = _STREAM_ARN_TABLE.match(stream_arn)
    return (match.group(1), match.group(2)) if match else None


def _same_place(a: str | None, b: str | None) -> bool:
    """Two regions (or endpoints) may be the same unless both are set and differ."""
    return a is None or b is None or a == b


def check_settings(name: str, config: AggregateSinkConfig, path: str, settings: Settings) -> None:
    """A target or state table that is a source stream of the same worker would feed the
    sink its own writes (a loop): refused unless ``allow_source_target``. Two aggregate
    sinks must not share a table: each would count the other's rows as its own."""
    tables = (("table", config.table), ("state_table", config.state_table_name))
    if not config.allow_source_target:
        for stream_name, stream in settings.streams.items():
            if stream.table is not None:
                source, region = stream.table, stream.region
            else:
                parsed = stream_table(stream.stream_arn or "")
                if parsed is None:
                    continue
                region, source = parsed[0] or stream.region, parsed[1]
            if not (
                _same_place(region, config.region)
                and _same_place(stream.endpoint_url, config.endpoint_url)
            ):
                continue
            for field_name, table in tables:
                if table == source:
                    raise ConfigError(
                        f"{path}.{field_name}",
                        f"table {table!r} is also the source of stream {stream_name!r}: the "
                        "sink would read its own writes and re-trigger itself without end. "
                        "Write to another table, or set allow_source_target: true to have "
                        "the sink recognise and skip the rows it writes",
                    )
    for other, raw in settings.sinks.items():
        if other == name or not isinstance(raw, dict) or raw.get("type") != "aggregate":
            continue
        theirs = {raw.get("table"), raw.get("state_table") or f"{raw.get('table')}-fanout-state"}
        for field_name, table in tables:
            if table in theirs and _same_place(raw.get("region"), config.region):
                raise ConfigError(
                    f"{path}.{field_name}",
                    f"table {table!r} is also used by the aggregate sink {other!r}; each "
                    "aggregate needs tables of its own",
                )
