"""A DynamoDB Local of its own for a test module that writes large streams.

DynamoDB Local keeps the stream records of deleted tables (DynamoDB keeps a deleted table's
stream for a day), and every stream call after a large one is slower for it: the session's
instance took twice as long for the tests that came after the 10,000-change aggregate run.
A module that writes thousands of changes calls ``own_dynamodb_local()`` at its top level;
its ``dynamodb_local``, ``ddb_client`` and ``ddbstreams_client`` are then a fresh instance's,
started for the module and stopped after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fanout.testing import dynamodb_local as local
from tests.conftest import REPO, boto3_client


def own_dynamodb_local() -> tuple[Any, Any, Any]:
    """Module-scoped ``dynamodb_local``, ``ddb_client`` and ``ddbstreams_client`` fixtures
    (assign them to module-level names so pytest finds them)."""

    @pytest.fixture(scope="module", name="dynamodb_local")
    def instance(aws_env: None) -> Iterator[local.DynamoDBLocal]:
        emulator = local.fetch(local.default_cache_dir(REPO))
        server = local.DynamoDBLocal(emulator_dir=emulator).start()
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture(scope="module", name="ddb_client")
    def client(dynamodb_local: local.DynamoDBLocal) -> Iterator[Any]:
        made = boto3_client("dynamodb", dynamodb_local.endpoint_url)
        yield made
        made.close()

    @pytest.fixture(scope="module", name="ddbstreams_client")
    def streams(dynamodb_local: local.DynamoDBLocal) -> Iterator[Any]:
        made = boto3_client("dynamodbstreams", dynamodb_local.endpoint_url)
        yield made
        made.close()

    return instance, client, streams
