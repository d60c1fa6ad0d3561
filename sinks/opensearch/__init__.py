"""The ``opensearch`` sink: replicates DynamoDB items into an OpenSearch index.

Modules: ``config`` (options), ``document`` (AttributeValues to JSON, templates, versions),
``client`` (HTTP, authentication, TLS), ``sink`` (bulk requests and their outcomes),
``metrics``. docs/opensearch.md explains why the index can never go stale.
"""

from __future__ import annotations

from fanout.sink import SinkType
from sinks.opensearch.config import OpenSearchSinkConfig, check
from sinks.opensearch.sink import OpenSearchSink, build

OPENSEARCH: SinkType[OpenSearchSinkConfig] = SinkType(OpenSearchSinkConfig, build, check)

__all__ = ["OPENSEARCH", "OpenSearchSink", "OpenSearchSinkConfig"]
