"""Start-up of the ``aggregate`` sink: the sources must carry both images, the target table
must have the documented keys (or be created), and the state table must exist (or be
created)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import anyio
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from fanout.aws.clients import AwsClients
from fanout.config import StreamConfig
from fanout.errors import ConfigError
from sinks.aggregate.change import VIEW_TYPE
from sinks.aggregate.config import GROUP, WINDOW, AggregateSinkConfig
from sinks.aggregate.plan import ITEM

THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ProvisionedThroughputExceeded",
        "ThrottlingException",
        "ThrottlingError",
        "RequestLimitExceeded",
        "LimitExceededException",
    }
)
UNAVAILABLE_CODES = frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TransactionInProgressException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
NETWORK_ERRORS = (ConnectionError, HTTPClientError, aiohttp.ClientError, OSError, TimeoutError)
_CREATE_TIMEOUT_S = 300.0


class Unreachable(Exception):
    """DynamoDB could not be asked (network, 5xx, throttling): try again later."""


def describe(exc: BaseException, limit: int = 500) -> str:
    """An error as a short reason: its class and message."""
    return f"{type(exc).__name__}: {exc}"[:limit]


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def unreachable(exc: BaseException) -> bool:
    """True for an error that says nothing about the request itself: retry it later."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in THROTTLE_CODES or code in UNAVAILABLE_CODES or status >= 500
    return isinstance(exc, NETWORK_ERRORS)


async def check_sources(
    sink: str, streams: Mapping[str, StreamConfig], aws: AwsClients, log: logging.Logger
) -> None:
    """Every stream feeding the sink must be NEW_AND_OLD_IMAGES.

    A stream that cannot be described now (network, throttling) is logged and left to the
    per-record check, which refuses records of any other view type.

    Raises:
        ConfigError: a stream of another view type (the path names the stream).
    """
    for name, stream in streams.items():
        try:
            if stream.table is not None:
                client = await aws.client(
                    "dynamodb", region=stream.region, endpoint_url=stream.endpoint_url
                )
                table = (await client.describe_table(TableName=stream.table))["Table"]
                spec = table.get("StreamSpecification") or {}
                view = spec.get("StreamViewType") if spec.get("StreamEnabled") else None
                what = f"table {stream.table!r}"
            else:
                client = await aws.client(
                    "dynamodbstreams", region=stream.region, endpoint_url=stream.endpoint_url
                )
                answer = await client.describe_stream(StreamArn=stream.stream_arn, Limit=1)
                view = answer["StreamDescription"].get("StreamViewType")
                what = f"stream {stream.stream_arn}"
        except (ClientError, *NETWORK_ERRORS) as exc:
            log.warning(
                "aggregate_source_unchecked",
                extra={"sink": sink, "stream": name, "error": f"{type(exc).__name__}: {exc}"},
            )
            continue
        if view is None:
            continue  # no stream enabled: reading it fails on its own, with its own message
        if view != VIEW_TYPE:
            raise ConfigError(
                f"streams.{name}",
                f"the stream of {what} has StreamViewType {view}; the aggregate sink {sink!r} "
                f"needs {VIEW_TYPE} (a MODIFY must show the item before and after). A stream's "
                "view type cannot be changed: disable the stream and enable it again with "
                f"{VIEW_TYPE}",
            )


class Tables:
    """Checks (and creates) the target and state tables of one sink."""

    def __init__(self, name: str, config: AggregateSinkConfig, log: logging.Logger) -> None:
        self.name = name
        self.config = config
        self.log = log

    async def prepare(self, client: Any) -> None:
        """Raises:
        ConfigError: a table is missing (and not to be created), or has other keys.
        Unreachable: DynamoDB could not be asked.
        """
        path = f"sinks.{self.name}"
        await self._ensure(
            client,
            self.config.table,
            [(GROUP, "HASH"), (WINDOW, "RANGE")],
            create=self.config.create_table,
            path=f"{path}.table",
        )
        await self._ensure(
            client,
            self.config.state_table_name,
            [(ITEM, "HASH")],
            create=True,
            path=f"{path}.state_table",
        )

    async def _ensure(
        self, client: Any, table: str, keys: list[tuple[str, str]], *, create: bool, path: str
    ) -> None:
        wanted = ", ".join(f"{name} (S, {kind})" for name, kind in keys)
        description = await self._describe(client, table, path)
        if description is None:
            if not create:
                raise ConfigError(
                    path,
                    f"table {table!r} does not exist: create it with the keys {wanted}, or set "
                    "create_table: true",
                )
            description = await self._create(client, table, keys, path)
        found = sorted((k["AttributeName"], k["KeyType"]) for k in description["KeySchema"])
        types = {
            a["AttributeName"]: a["AttributeType"] for a in description["AttributeDefinitions"]
        }
        if found != sorted(keys) or any(types.get(name) != "S" for name, _ in keys):
            have = ", ".join(f"{name} ({types.get(name, '?')}, {kind})" for name, kind in found)
            raise ConfigError(path, f"table {table!r} has the keys {have}; the sink needs {wanted}")
        status = description.get("TableStatus", "ACTIVE")
        if status not in ("ACTIVE", "UPDATING"):
            await self._wait_active(client, table, path)

    async def _describe(self, client: Any, table: str, path: str) -> dict[str, Any] | None:
        try:
            answer = await client.describe_table(TableName=table)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            if unreachable(exc):
                raise Unreachable(f"DescribeTable {table}: {exc}") from exc
            raise ConfigError(path, f"DescribeTable {table!r} failed: {exc}") from exc
        except NETWORK_ERRORS as exc:
            raise Unreachable(f"DescribeTable {table}: {type(exc).__name__}: {exc}") from exc
        described: dict[str, Any] = answer["Table"]
        return described

    async def _create(
        self, client: Any, table: str, keys: list[tuple[str, str]], path: str
    ) -> dict[str, Any]:
        self.log.info("aggregate_table_creating", extra={"sink": self.name, "table": table})
        try:
            await client.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys],
                AttributeDefinitions=[
                    {"AttributeName": name, "AttributeType": "S"} for name, _ in keys
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":  # another worker made it first
                if unreachable(exc):
                    raise Unreachable(f"CreateTable {table}: {exc}") from exc
                raise ConfigError(path, f"CreateTable {table!r} failed: {exc}") from exc
        except NETWORK_ERRORS as exc:
            raise Unreachable(f"CreateTable {table}: {type(exc).__name__}: {exc}") from exc
        return await self._wait_active(client, table, path)

    async def _wait_active(self, client: Any, table: str, path: str) -> dict[str, Any]:
        deadline = time.monotonic() + _CREATE_TIMEOUT_S
        while True:
            description = await self._describe(client, table, path)
            if description is not None and description.get("TableStatus") in ("ACTIVE", None):
                return description
            if time.monotonic() > deadline:
                raise ConfigError(path, f"table {table!r} did not become ACTIVE")
            await anyio.sleep(1.0)
