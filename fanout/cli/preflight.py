"""``fanout run``'s start-up check: every stream's endpoint answers with the credentials found.

A worker that is already running rides out an outage of DynamoDB Streams (it retries and
``/readyz`` says so). A worker that starts without a region, without credentials, with
credentials the service refuses, or with an endpoint nothing answers at would retry forever
without ever working; ``fanout run`` checks this once, with one DescribeTable (or
DescribeStream) per stream, and exits with one line and code 1 instead, so the mistake shows
at once and a supervisor's restart policy takes over. A missing table, throttling or a 5xx
answer does not fail the check: the worker waits for those as it always does.
"""

from __future__ import annotations

import anyio

from fanout.aws.clients import AwsClients
from fanout.cli.loader import EXIT_FAILED, CommandError
from fanout.config import Config, StreamConfig
from fanout.errors import SourceError, StreamNotFound
from fanout.stream.client import StreamsClient

_TIMEOUT_S = 15.0


async def check_streams(config: Config, *, limit_s: float = _TIMEOUT_S) -> None:
    """One call per configured stream.

    Raises:
        CommandError: a stream's endpoint cannot be reached, or refuses the credentials.
        botocore.exceptions.NoRegionError: no region is configured.
    """
    aws = AwsClients()
    try:
        for name, stream in config.streams.items():
            await _check(aws, name, stream, limit_s)
    finally:
        await aws.aclose()


async def _check(aws: AwsClients, name: str, stream: StreamConfig, limit_s: float) -> None:
    client = await StreamsClient.create(
        aws, region=stream.region, endpoint_url=stream.endpoint_url, request_timeout=limit_s
    )
    try:
        with anyio.fail_after(limit_s + 1):
            await client.open()
            if stream.table is not None:
                await client.table_stream(stream.table)
            else:
                assert stream.stream_arn is not None
                await client.describe_stream(stream.stream_arn, limit=1)
    except StreamNotFound:
        return  # the worker waits for it
    except TimeoutError:
        raise CommandError(
            f"stream {name}: no answer from {client.dynamodb_url} within {limit_s:g}s",
            EXIT_FAILED,
        ) from None
    except SourceError as exc:
        if exc.code == "NetworkError":
            raise CommandError(
                f"stream {name}: cannot reach {client.dynamodb_url}: {exc}", EXIT_FAILED
            ) from exc
        if exc.retryable:
            return  # throttling, 5xx: the worker retries those
        raise CommandError(f"stream {name}: {exc}", EXIT_FAILED) from exc
    finally:
        await client.aclose()
