"""StreamsClient takes region, endpoints and credentials from the process's AwsClients."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.credentials import AioRefreshableCredentials
from aiohttp import web
from aiohttp.test_utils import TestServer

from fanout.aws.clients import AwsClients
from fanout.errors import SourceError
from fanout.stream.client import StreamsClient


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str]]]:
    """A DynamoDB lookalike answering every call with a table without a stream; yields its
    URL and the Authorization headers it saw."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"Table": {"TableArn": "arn:aws:dynamodb:x:1:table/T"}})

    app = web.Application()
    app.router.add_post("/", answer)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield str(test_server.make_url("/")), seen
    finally:
        await test_server.close()


async def test_region_and_endpoints_are_resolved_through_the_shared_session() -> None:
    aws = AwsClients()
    try:
        client = await StreamsClient.create(aws, region="eu-west-1")
        other = await StreamsClient.create(aws, region="eu-west-1")
        local = await StreamsClient.create(aws, endpoint_url="http://127.0.0.1:8000")
    finally:
        await aws.aclose()
    assert (client.region, client.streams_url, client.dynamodb_url) == (
        "eu-west-1",
        "https://streams.dynamodb.eu-west-1.amazonaws.com",
        "https://dynamodb.eu-west-1.amazonaws.com",
    )
    assert (other.streams_url, other.dynamodb_url) == (client.streams_url, client.dynamodb_url)
    # the default region comes from the environment (tests/conftest.py sets us-east-1)
    assert (local.region, local.streams_url, local.dynamodb_url) == (
        "us-east-1",
        "http://127.0.0.1:8000",
        "http://127.0.0.1:8000",
    )


async def test_clients_of_one_process_share_one_credentials_object(
    server: tuple[str, list[str]],
) -> None:
    url, seen = server
    aws = AwsClients()
    try:
        first = await StreamsClient.create(aws, endpoint_url=url)
        second = await StreamsClient.create(aws, region="eu-west-1", endpoint_url=url)
        async with first, second:
            await first.table_stream("T")
            await second.table_stream("T")
        assert first._credentials is second._credentials is await aws.credentials()
    finally:
        await aws.aclose()
    assert [h.split("/")[0] for h in seen] == ["AWS4-HMAC-SHA256 Credential=testing"] * 2


async def test_missing_credentials_are_a_clear_source_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    aws = AwsClients()
    try:
        client = await StreamsClient.create(aws, endpoint_url="http://127.0.0.1:9")
        with pytest.raises(SourceError, match="no AWS credentials found"):
            await client.open()
    finally:
        await aws.aclose()


class _Session:
    """Only what StreamsClient asks of the session when built by hand: credentials."""

    def __init__(self, credentials: Any) -> None:
        self.credentials = credentials

    async def get_credentials(self) -> Any:
        return self.credentials


async def test_expiring_credentials_are_refreshed_by_aiobotocore_before_signing(
    server: tuple[str, list[str]],
) -> None:
    url, seen = server
    now = datetime.datetime.now(datetime.UTC)
    refreshes: list[int] = []

    async def refresh() -> dict[str, str]:
        refreshes.append(1)
        return {
            "access_key": f"AKIDFRESH{len(refreshes)}",
            "secret_key": "fresh-secret",
            "token": "fresh-token",
            "expiry_time": (now + datetime.timedelta(hours=1)).isoformat(),
        }

    # inside botocore's mandatory refresh window: the first use must refresh
    expiring = AioRefreshableCredentials.create_from_metadata(
        {
            "access_key": "AKIDOLD",
            "secret_key": "old-secret",
            "token": "old-token",
            "expiry_time": (now + datetime.timedelta(minutes=2)).isoformat(),
        },
        refresh,
        "test",
    )
    aws = AwsClients(session=_Session(expiring))
    client = StreamsClient(aws=aws, region="us-east-1", streams_url=url, dynamodb_url=url)
    async with client:
        await client.table_stream("T")
        await client.table_stream("T")
    await aws.aclose()
    assert len(refreshes) == 1
    assert [h.split("/")[0] for h in seen] == ["AWS4-HMAC-SHA256 Credential=AKIDFRESH1"] * 2
