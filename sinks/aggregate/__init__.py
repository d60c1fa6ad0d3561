"""The ``aggregate`` sink: counts and sums per group (and tumbling window) in a DynamoDB
table, exact under INSERT, MODIFY, REMOVE and any replay.

Modules: ``config`` (options, and the loop check against the worker's streams), ``change``
(records to contributions, exact decimals), ``plan`` (state rows, group rows, transactions),
``tables`` (start-up checks and table creation), ``sink`` (reads, transactions, outcomes),
``extremes`` (min, max, latest), ``metrics``. docs/aggregate.md explains why a replay never
changes a total twice.
"""

from __future__ import annotations

from fanout.sink import SinkType
from sinks.aggregate.config import AggregateSinkConfig, check_settings
from sinks.aggregate.sink import AggregateSink, build

AGGREGATE: SinkType[AggregateSinkConfig] = SinkType(
    AggregateSinkConfig, build, check_settings=check_settings
)

__all__ = ["AGGREGATE", "AggregateSink", "AggregateSinkConfig"]
