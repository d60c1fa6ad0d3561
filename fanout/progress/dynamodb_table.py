"""The DynamoDB table under the checkpoint store (``fanout.progress.dynamodb``).

``DynamoDBTable`` holds what every part of the store shares: the client (opened from the
process's aiobotocore clients), calls that turn a failed condition into ``Rejected`` and any
other failure into ``CheckpointError``, per-row writes run a few at a time, paged queries of
one partition, the creation of the table (``create_table``) and the request counts by store
operation (``counted``; ``docs/leases.md`` has what each costs).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import anyio

from fanout.aws.clients import AwsClients
from fanout.errors import CheckpointError
from fanout.progress.dynamodb_items import s

log = logging.getLogger("fanout.checkpoint")

T = TypeVar("T")
P = ParamSpec("P")

# Which store operation a request serves (for the request counts of ``requests``).
_PURPOSE: contextvars.ContextVar[str] = contextvars.ContextVar("purpose", default="other")

# Per-row writes of one call run this many at a time.
_CONCURRENCY = 16
_CREATE_WAIT_S = 120.0


def counted(
    fn: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Count the requests of a store operation under its name."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        token = _PURPOSE.set(fn.__name__)
        try:
            return await fn(*args, **kwargs)
        finally:
            _PURPOSE.reset(token)

    return wrapper


class Rejected(Exception):
    """A condition failed."""


class DynamoDBTable:
    """The table of one application's rows: the calls every part of the store makes.

    Args:
        table: the table name (key ``pk`` and ``sk``, both strings).
        application: whose rows this store reads and writes.
        aws: the process's AWS clients.
        region: the table's region (default: the environment's).
        endpoint_url: e.g. DynamoDB Local's.
        create_table: create the table (on-demand capacity) if it does not exist.
    """

    def __init__(
        self,
        table: str,
        application: str,
        aws: AwsClients,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        create_table: bool = False,
    ) -> None:
        self.table = table
        self._application = application
        self.aws = aws
        self.region = region
        self.endpoint_url = endpoint_url
        self.create_table = create_table
        self.pk = f"app#{application}"
        self.backfill_pk = f"app#{application}#backfill"
        self._client: Any = None
        self._sync_client: Any = None
        # Seconds a heartbeat request may take (connect and read) before it counts as failed.
        self.heartbeat_timeout = 3.0
        # Requests by (store operation, DynamoDB call), for the cost accounting of
        # docs/leases.md (what a renewal, a checkpoint or a take costs).
        self.requests: Counter[tuple[str, str]] = Counter()

    @property
    def application(self) -> str:
        return self._application

    @property
    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"dynamodb table {self.table}{where}"

    # -- plumbing ---------------------------------------------------------------------------

    async def _call(self, op: str, **kwargs: Any) -> Any:
        """One DynamoDB call; a failed condition raises ``Rejected``, anything else that
        fails ``CheckpointError``."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._client is None:
            raise CheckpointError(f"checkpoint store {self.describe}: not open")
        self.requests[(_PURPOSE.get(), op)] += 1
        try:
            return await getattr(self._client, op)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code == "ConditionalCheckFailedException":
                raise Rejected(code) from exc
            if code == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or []
                codes = {r.get("Code") for r in reasons}
                if "ConditionalCheckFailed" in codes and codes <= {
                    "ConditionalCheckFailed",
                    "None",
                    None,
                }:
                    raise Rejected(code) from exc
            message = error.get("Message", str(exc))
            raise CheckpointError(
                f"checkpoint store {self.describe}: {op}: {code}: {message}"
            ) from exc
        except BotoCoreError as exc:
            raise CheckpointError(f"checkpoint store {self.describe}: {op}: {exc}") from exc

    async def _each(self, calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run ``calls`` at most ``_CONCURRENCY`` at a time; results in order."""
        results: list[T | None] = [None] * len(calls)
        limit = anyio.Semaphore(_CONCURRENCY)
        errors: list[BaseException] = []

        async def one(i: int) -> None:
            async with limit:
                try:
                    results[i] = await calls[i]()
                except CheckpointError as exc:
                    errors.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(len(calls)):
                tg.start_soon(one, i)
        if errors:
            raise errors[0]
        return results  # type: ignore[return-value]

    def _key(self, sk: str) -> dict[str, Any]:
        return {"pk": s(self.pk), "sk": s(sk)}

    async def _query(
        self, prefix: str, *, consistent: bool = True, pk: str | None = None
    ) -> list[dict[str, Any]]:
        """Every item of partition ``pk`` (the application's by default) whose sort key
        starts with ``prefix`` (all of them if it is empty)."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "ConsistentRead": consistent,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": s(pk or self.pk), ":prefix": s(prefix)},
        }
        if not prefix:
            kwargs["KeyConditionExpression"] = "pk = :pk"
            del kwargs["ExpressionAttributeValues"][":prefix"]
        while True:
            try:
                page = await self._call("query", **kwargs)
            except Rejected as exc:  # a query has no condition
                raise CheckpointError(str(exc)) from exc
            items.extend(page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last:
                return items
            kwargs["ExclusiveStartKey"] = last

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._client = await self.aws.client(
                "dynamodb", region=self.region, endpoint_url=self.endpoint_url
            )
        except Exception as exc:
            raise CheckpointError(f"cannot open checkpoint store {self.describe}: {exc}") from exc
        if self.create_table:
            await self._create_if_missing()

    async def _create_if_missing(self) -> None:
        try:
            answer = await self._call("describe_table", TableName=self.table)
            status = answer["Table"]["TableStatus"]
        except CheckpointError as exc:
            if "ResourceNotFoundException" not in str(exc):
                raise
            try:
                await self._call(
                    "create_table",
                    TableName=self.table,
                    KeySchema=[
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                    AttributeDefinitions=[
                        {"AttributeName": "pk", "AttributeType": "S"},
                        {"AttributeName": "sk", "AttributeType": "S"},
                    ],
                    BillingMode="PAY_PER_REQUEST",
                )
                log.warning("lease_table_created", extra={"table": self.table})
            except CheckpointError as create:
                if "ResourceInUseException" not in str(create):  # another worker made it
                    raise
            status = "CREATING"
        deadline = time.monotonic() + _CREATE_WAIT_S
        while status != "ACTIVE":
            if time.monotonic() > deadline:
                raise CheckpointError(f"{self.describe} is not ACTIVE after {_CREATE_WAIT_S:g}s")
            await anyio.sleep(1.0)
            answer = await self._call("describe_table", TableName=self.table)
            status = answer["Table"]["TableStatus"]

    async def aclose(self) -> None:
        self._client = None  # the client belongs to the process's AwsClients
        if self._sync_client is not None:
            client, self._sync_client = self._sync_client, None
            client.close()
