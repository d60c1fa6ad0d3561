"""The DynamoDB / DynamoDB Streams client: JSON 1.0 over HTTP, parsed with orjson.

aiobotocore provides what it is good at (credentials, region and endpoint resolution). Each
request is signed with SigV4 by ``Signer``, which produces exactly what botocore's
``SigV4Auth`` does for these JSON POSTs at a tenth of its cost (a GetRecords call is made per
shard several times a second). The response body is parsed by ``orjson`` straight into the
Lambda event record shape: botocore's generic parser costs several times as much per
GetRecords page and turns ApproximateCreationDateTime into ``datetime`` objects, which
Lambda events do not have.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson

from fanout.errors import (
    IteratorExpired,
    ServiceError,
    SourceError,
    StreamNotFound,
    Throttled,
    TrimmedData,
)
from fanout.records import Record

log = logging.getLogger("fanout.source")

_STREAMS = "DynamoDBStreams_20120810."
_DYNAMODB = "DynamoDB_20120810."
_JSON = "application/x-amz-json-1.0"

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


class Signer:
    """AWS Signature Version 4 for JSON 1.0 POSTs to one region and service.

    The signing key is derived once per day and secret; per request the work is two
    SHA-256 digests and one HMAC over short strings.
    """

    def __init__(self, region: str, service: str = "dynamodb") -> None:
        self.region = region
        self.service = service
        self._keys: dict[tuple[str, str], bytes] = {}
        self._urls: dict[str, tuple[str, str]] = {}

    def _target(self, url: str) -> tuple[str, str]:
        """(host header, canonical path) of an endpoint URL, as botocore computes them."""
        found = self._urls.get(url)
        if found is None:
            parts = urlsplit(url)
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(
                parts.scheme
            ):
                host = f"{host}:{parts.port}"
            found = self._urls[url] = (host, quote(parts.path or "/", safe="/~"))
        return found

    def _key(self, secret: str, day: str) -> bytes:
        key = self._keys.get((secret, day))
        if key is None:
            key = f"AWS4{secret}".encode()
            for part in (day, self.region, self.service, "aws4_request"):
                key = hmac.digest(key, part.encode(), "sha256")
            if len(self._keys) > 4:
                self._keys.clear()
            self._keys[(secret, day)] = key
        return key

    def headers(
        self,
        url: str,
        target: str,
        body: bytes,
        access_key: str,
        secret_key: str,
        token: str | None = None,
        now: float | None = None,
    ) -> dict[str, str]:
        """Every header of the request, Authorization included (aiohttp adds Host)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        day = stamp[:8]
        host, path = self._target(url)
        signed = [
            ("content-type", _JSON),
            ("host", host),
            ("x-amz-date", stamp),
        ]
        if token:
            signed.append(("x-amz-security-token", token))
        signed.append(("x-amz-target", target))
        names = ";".join(name for name, _ in signed)
        canonical = "POST\n{}\n\n{}\n{}\n{}".format(
            path,
            "".join(f"{name}:{value}\n" for name, value in signed),
            names,
            hashlib.sha256(body).hexdigest(),
        )
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = hmac.new(self._key(secret_key, day), to_sign.encode(), "sha256").hexdigest()
        headers = {
            "Content-Type": _JSON,
            "X-Amz-Target": target,
            "X-Amz-Date": stamp,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}",
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        return headers


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard as DescribeStream lists it."""

    shard_id: str
    parent_id: str | None
    starting_sequence: str
    ending_sequence: str | None  # set once the shard is closed

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Shard:
        seq = raw.get("SequenceNumberRange", {})
        return cls(
            shard_id=raw["ShardId"],
            parent_id=raw.get("ParentShardId"),
            starting_sequence=seq.get("StartingSequenceNumber", "0"),
            ending_sequence=seq.get("EndingSequenceNumber"),
        )


@dataclass(frozen=True, slots=True)
class TableStream:
    """What DescribeTable says about a table's stream."""

    table_arn: str
    stream_arn: str | None  # the latest stream, None when no stream is enabled

    @property
    def stream_prefix(self) -> str:
        """Every stream ARN of this table starts with this."""
        return f"{self.table_arn}/stream/"


@dataclass(frozen=True, slots=True)
class Page:
    """One GetRecords answer."""

    records: list[Record]
    next_iterator: str | None  # None: the shard is closed and fully read


class StreamsClient:
    """Signed JSON calls to DynamoDB and DynamoDB Streams for one region/endpoint.

    Use as ``async with StreamsClient.create(region=..., endpoint_url=...) as client``.
    """

    def __init__(
        self,
        *,
        session: Any,
        region: str,
        streams_url: str,
        dynamodb_url: str,
        timeout: float = 30.0,
    ) -> None:
        self._session = session  # aiobotocore session: credentials
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
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        request_timeout: float = 30.0,
    ) -> StreamsClient:
        """Resolve region, endpoints and credentials the way the AWS SDK does."""
        from aiobotocore.session import get_session

        session = get_session()
        async with session.create_client(
            "dynamodbstreams", region_name=region, endpoint_url=endpoint_url
        ) as streams:
            streams_url = streams.meta.endpoint_url
            resolved_region = streams.meta.region_name
        async with session.create_client(
            "dynamodb", region_name=resolved_region, endpoint_url=endpoint_url
        ) as ddb:
            dynamodb_url = ddb.meta.endpoint_url
        return cls(
            session=session,
            region=resolved_region,
            streams_url=streams_url,
            dynamodb_url=dynamodb_url,
            timeout=request_timeout,
        )

    async def __aenter__(self) -> StreamsClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        if self._http is None:
            self._credentials = await self._session.get_credentials()
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
        """Send one signed JSON 1.0 request and return the parsed answer."""
        raw = await self.call_raw(target, body)
        result: dict[str, Any] = orjson.loads(raw) if raw else {}
        return result

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
        arn = desc.get("LatestStreamArn")
        # A disabled stream keeps LatestStreamArn but loses StreamSpecification.
        enabled = desc.get("StreamSpecification", {}).get("StreamEnabled", False)
        table_arn = desc.get("TableArn") or (str(arn).partition("/stream/")[0] if arn else "")
        return TableStream(str(table_arn), str(arn) if arn and enabled else None)

    async def latest_stream_arn(self, table: str) -> str:
        """The table's current stream ARN (DescribeTable)."""
        found = await self.table_stream(table)
        if found.stream_arn is None:
            raise StreamNotFound(f"table {table!r} has no stream enabled", code="NoStream")
        return found.stream_arn

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
        desc: dict[str, Any] = answer["StreamDescription"]
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
        return str(answer["ShardIterator"])

    async def get_records(self, iterator: str, limit: int | None = None) -> Page:
        body: dict[str, Any] = {"ShardIterator": iterator}
        if limit is not None:
            body["Limit"] = limit
        answer = orjson.loads(await self.call_raw(_STREAMS + "GetRecords", body))
        return Page(answer.get("Records") or [], answer.get("NextShardIterator"))
