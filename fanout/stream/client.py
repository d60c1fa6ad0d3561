"""The DynamoDB / DynamoDB Streams client: JSON 1.0 over HTTP, parsed with orjson.

aiobotocore provides what it is good at (credentials, region and endpoint resolution), through
the process's one ``AwsClients``: credentials are aiobotocore's refreshable ones, refreshed
with awaits that never block the event loop. Each request is signed with SigV4 by ``Signer``,
which produces exactly what botocore's ``SigV4Auth`` does for these JSON POSTs at a tenth of
its cost (a GetRecords call is made per shard several times a second). The response body is
parsed by ``orjson`` straight into the Lambda event record shape: botocore's generic parser
costs several times as much per GetRecords page and turns ApproximateCreationDateTime into
``datetime`` objects, which Lambda events do not have.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import orjson

from fanout.aws.clients import AwsClients
from fanout.aws.signer import Signer
from fanout.errors import (
    IteratorExpired,
    MalformedAnswer,
    ServiceError,
    SourceError,
    StreamNotFound,
    Throttled,
    TrimmedData,
)
from fanout.stream.api import Page, TableStream
from fanout.stream.budget import parsed_size

log = logging.getLogger("fanout.stream.client")

_STREAMS = "DynamoDBStreams_20120810."
_DYNAMODB = "DynamoDB_20120810."

_THROTTLING = frozenset(
    {
        "LimitExceededException",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    }
)


def _error(status: int, body: bytes, op: str) -> SourceError:
    """Map an AWS JSON error answer to the fanout exception tree."""
    code, message = "", ""
    try:
        parsed = orjson.loads(body) if body else {}
        if isinstance(parsed, dict):
            code = str(parsed.get("__type", "")).rpartition("#")[2]
            message = str(parsed.get("message") or parsed.get("Message") or "")
    except orjson.JSONDecodeError:
        message = body[:200].decode("utf-8", "replace")
    text = f"{op}: {code or status} {message}".strip()
    if code == "ExpiredIteratorException":
        return IteratorExpired(text, code=code, status=status)
    if code == "TrimmedDataAccessException":
        return TrimmedData(text, code=code, status=status)
    if code in _THROTTLING or (not code and status == 429):
        return Throttled(text, code=code, status=status)
    if code == "ResourceNotFoundException":
        return StreamNotFound(text, code=code, status=status)
    if status >= 500:
        return ServiceError(text, code=code, status=status)
    return SourceError(text, code=code, status=status)


class StreamsClient:
    """Signed JSON calls to DynamoDB and DynamoDB Streams for one region/endpoint.

    Use as ``async with await StreamsClient.create(aws, region=..., endpoint_url=...)``; the
    client keeps its own connection pool (sized for one GetRecords loop per shard) and takes
    credentials from ``aws``.
    """

    def __init__(
        self,
        *,
        aws: AwsClients,
        region: str,
        streams_url: str,
        dynamodb_url: str,
        timeout: float = 30.0,
    ) -> None:
        self._aws = aws
        self.region = region
        self.streams_url = streams_url
        self.dynamodb_url = dynamodb_url
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=5.0)
        self._http: aiohttp.ClientSession | None = None
        self._credentials: Any = None
        self._signer = Signer(region)

    @classmethod
    async def create(
        cls,
        aws: AwsClients,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        request_timeout: float = 30.0,
    ) -> StreamsClient:
        """Resolve region and endpoints the way the AWS SDK does, with ``aws``'s session.

        Raises:
            botocore.exceptions.NoRegionError: no region given and none configured.
        """
        streams = await aws.client("dynamodbstreams", region=region, endpoint_url=endpoint_url)
        resolved_region: str = streams.meta.region_name
        ddb = await aws.client("dynamodb", region=resolved_region, endpoint_url=endpoint_url)
        return cls(
            aws=aws,
            region=resolved_region,
            streams_url=streams.meta.endpoint_url,
            dynamodb_url=ddb.meta.endpoint_url,
            timeout=request_timeout,
        )

    async def __aenter__(self) -> StreamsClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        if self._http is None:
            self._credentials = await self._aws.credentials()
            if self._credentials is None:
                raise SourceError(
                    "no AWS credentials found (environment, shared config, container or "
                    "instance role)"
                )
            connector = aiohttp.TCPConnector(limit=256, ttl_dns_cache=300)
            self._http = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, skip_auto_headers={"User-Agent"}
            )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def call(self, target: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send one signed JSON 1.0 request and return the parsed answer.

        Raises:
            MalformedAnswer: the 200 answer is not a JSON object.
        """
        raw = await self.call_raw(target, body)
        return _answer(raw, target.rpartition(".")[2]) if raw else {}

    async def call_raw(self, target: str, body: dict[str, Any]) -> bytes:
        if self._http is None:
            await self.open()
        assert self._http is not None
        url = self.streams_url if target.startswith(_STREAMS) else self.dynamodb_url
        data = orjson.dumps(body)
        frozen = await self._credentials.get_frozen_credentials()
        headers = self._signer.headers(
            url, target, data, frozen.access_key, frozen.secret_key, frozen.token
        )
        op = target.rpartition(".")[2]
        try:
            async with self._http.post(url, data=data, headers=headers) as resp:
                payload = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ServiceError(f"{op}: {type(exc).__name__}: {exc}", code="NetworkError") from exc
        if status != 200:
            raise _error(status, payload, op)
        return payload

    # -- DynamoDB ---------------------------------------------------------------------------

    async def table_stream(self, table: str) -> TableStream:
        """The table's ARN and its enabled stream, if any (DescribeTable).

        Raises:
            StreamNotFound: the table does not exist.
        """
        answer = await self.call(_DYNAMODB + "DescribeTable", {"TableName": table})
        desc = answer.get("Table", {})
        if not isinstance(desc, dict):
            raise MalformedAnswer("DescribeTable: Table is not an object", code="MalformedAnswer")
        spec = desc.get("StreamSpecification")
        arn = desc.get("LatestStreamArn")
        # A disabled stream keeps LatestStreamArn but loses StreamSpecification.
        enabled = isinstance(spec, dict) and bool(spec.get("StreamEnabled", False))
        table_arn = desc.get("TableArn") or (str(arn).partition("/stream/")[0] if arn else "")
        return TableStream(str(table_arn), str(arn) if arn and enabled else None)

    # -- DynamoDB Streams -------------------------------------------------------------------

    async def describe_stream(
        self,
        stream_arn: str,
        *,
        exclusive_start_shard_id: str | None = None,
        child_shards_of: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"StreamArn": stream_arn, "Limit": limit}
        if exclusive_start_shard_id:
            body["ExclusiveStartShardId"] = exclusive_start_shard_id
        if child_shards_of:
            body["ShardFilter"] = {"Type": "CHILD_SHARDS", "ShardId": child_shards_of}
        answer = await self.call(_STREAMS + "DescribeStream", body)
        desc = answer.get("StreamDescription")
        shards = desc.get("Shards", []) if isinstance(desc, dict) else None
        if not isinstance(shards, list) or not all(
            isinstance(s, dict) and isinstance(s.get("ShardId"), str) for s in shards
        ):
            raise MalformedAnswer(
                "DescribeStream: the answer has no StreamDescription with a list of shards",
                code="MalformedAnswer",
            )
        assert isinstance(desc, dict)
        return desc

    async def get_shard_iterator(
        self, stream_arn: str, shard_id: str, iterator_type: str, sequence: str | None = None
    ) -> str:
        body: dict[str, Any] = {
            "StreamArn": stream_arn,
            "ShardId": shard_id,
            "ShardIteratorType": iterator_type,
        }
        if sequence is not None:
            body["SequenceNumber"] = sequence
        answer = await self.call(_STREAMS + "GetShardIterator", body)
        found = answer.get("ShardIterator")
        if not isinstance(found, str) or not found:
            raise MalformedAnswer(
                "GetShardIterator: the answer has no ShardIterator", code="MalformedAnswer"
            )
        return found

    async def get_records(self, iterator: str, limit: int | None = None) -> Page:
        """One page; ``nbytes`` estimates what its records take in memory once parsed.

        Raises:
            MalformedAnswer: the 200 answer is not a JSON object, ``Records`` is not a list
                or ``NextShardIterator`` not a string. Records that are not objects are
                returned as they are (the dispatcher dead-letters them).
        """
        body: dict[str, Any] = {"ShardIterator": iterator}
        if limit is not None:
            body["Limit"] = limit
        raw = await self.call_raw(_STREAMS + "GetRecords", body)
        answer = _answer(raw, "GetRecords")
        records = answer.get("Records")
        following = answer.get("NextShardIterator")
        if records is None:
            records = []
        if not isinstance(records, list) or not isinstance(following, str | None):
            raise MalformedAnswer(
                "GetRecords: Records is not a list or NextShardIterator not a string",
                code="MalformedAnswer",
            )
        if not records:
            return Page(records, following)
        return Page(records, following, parsed_size(raw), raw)


def _answer(raw: bytes, op: str) -> dict[str, Any]:
    """The JSON object of a 200 answer.

    Raises:
        MalformedAnswer: it is not JSON (a proxy's error page, a cut answer) or not an object.
    """
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        start = raw[:80].decode("utf-8", "replace")
        raise MalformedAnswer(
            f"{op}: the answer is not JSON ({exc}): {start!r}", code="MalformedAnswer"
        ) from exc
    if not isinstance(answer, dict):
        raise MalformedAnswer(
            f"{op}: the answer is a JSON {type(answer).__name__}, not an object",
            code="MalformedAnswer",
        )
    return answer
