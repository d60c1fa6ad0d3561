"""The store contract on the DynamoDB store, against DynamoDB Local."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from fanout.aws.clients import AwsClients
from fanout.errors import CheckpointError
from fanout.progress.dynamodb import DynamoDBCheckpointStore
from fanout.progress.store import CheckpointRow, CheckpointStore
from tests.conftest import unique_name
from tests.store_contract import ARN, CHECKS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_store_contract(
    request: pytest.FixtureRequest,
    dynamodb_local,
    check: Callable[[CheckpointStore, CheckpointStore], Awaitable[None]],
) -> None:
    aws = AwsClients()
    table = unique_name(request, "leases", limit=60)
    stores = [
        DynamoDBCheckpointStore(
            table,
            app,
            aws,
            region="us-east-1",
            endpoint_url=dynamodb_local.endpoint_url,
            create_table=True,
        )
        for app in ("app", "other")
    ]
    try:
        for store in stores:
            await store.open()
        await check(stores[0], stores[1])
    finally:
        await aws.aclose()


async def test_a_missing_table_without_create_table_fails_clearly(request, dynamodb_local):
    aws = AwsClients()
    store = DynamoDBCheckpointStore(
        unique_name(request, "missing", limit=60),
        "app",
        aws,
        region="us-east-1",
        endpoint_url=dynamodb_local.endpoint_url,
    )
    try:
        await store.open()
        with pytest.raises(CheckpointError, match="ResourceNotFoundException"):
            await store.save([CheckpointRow(ARN, "a", "1")])
    finally:
        await aws.aclose()
