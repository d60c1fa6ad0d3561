"""Delivery to sinks: routes and their gates, lanes, per-batch recovery, dead-letter destinations.

``route`` (a sink with its filter, retry timing, dead-letter destination and gate), ``gate``
(``max_in_flight`` and ``retry_after`` of one sink), ``lane`` (buffering and batches of one
shard for one sink), ``recovery`` (retry rounds and bisection of one failed batch),
``giveup`` (writing what is given up on), ``dispatch`` (a shard's pages through filters to
lanes), ``telemetry`` (a lane's metrics and log fields), ``deadletter`` (the destinations).
"""

from fanout.delivery.dispatch import ShardDispatch
from fanout.delivery.gate import SinkGate
from fanout.delivery.lane import KeyedLane, Lane, open_lane
from fanout.delivery.route import Route

__all__ = ["KeyedLane", "Lane", "Route", "ShardDispatch", "SinkGate", "open_lane"]
