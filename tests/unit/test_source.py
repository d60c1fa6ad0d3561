"""The streams client's pure parts: SigV4 signing (checked against botocore) and error mapping."""

from __future__ import annotations

import datetime

import botocore.auth
import orjson
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fanout.aws.signer import Signer
from fanout.errors import (
    IteratorExpired,
    ServiceError,
    SourceError,
    StreamNotFound,
    Throttled,
    TrimmedData,
)
from fanout.stream.api import Shard
from fanout.stream.client import _error

NOW = datetime.datetime(2026, 3, 4, 5, 6, 7)


@pytest.mark.parametrize(
    ("url", "token"),
    [
        ("http://127.0.0.1:8000", None),
        ("https://streams.dynamodb.eu-west-1.amazonaws.com", None),
        ("https://dynamodb.eu-west-1.amazonaws.com:443/", "FwoGZXIvYXdzEJr//token"),
        ("http://LocalHost:80/some path", None),
    ],
)
def test_signatures_match_botocore(
    monkeypatch: pytest.MonkeyPatch, url: str, token: str | None
) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW)
    body = orjson.dumps({"ShardIterator": "arn:aws:dynamodb:x|1|abc", "Limit": 1000})
    target = "DynamoDBStreams_20120810.GetRecords"
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target},
    )
    botocore.auth.SigV4Auth(creds.get_frozen_credentials(), "dynamodb", "eu-west-1").add_auth(
        request
    )
    signer = Signer("eu-west-1")
    ours = signer.headers(
        url,
        target,
        body,
        creds.access_key,
        creds.secret_key,
        token,
        now=NOW.replace(tzinfo=datetime.UTC).timestamp(),
    )
    assert ours == dict(request.headers)
    # the derived key is cached; a second request signs the same way
    assert signer.headers(
        url,
        target,
        body,
        creds.access_key,
        creds.secret_key,
        token,
        now=NOW.replace(tzinfo=datetime.UTC).timestamp(),
    ) == dict(request.headers)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, {"__type": "x#ExpiredIteratorException", "message": "m"}, IteratorExpired),
        (400, {"__type": "x#TrimmedDataAccessException"}, TrimmedData),
        (400, {"__type": "x#LimitExceededException"}, Throttled),
        (400, {"__type": "x#ThrottlingException"}, Throttled),
        (400, {"__type": "x#ResourceNotFoundException"}, StreamNotFound),
        (500, {"__type": "x#InternalServerError"}, ServiceError),
        (503, None, ServiceError),
        (429, None, Throttled),
        (400, {"__type": "x#ValidationException"}, SourceError),
    ],
)
def test_errors_map_to_the_exception_tree(
    status: int, body: dict[str, str] | None, kind: type[SourceError]
) -> None:
    raw = orjson.dumps(body) if body is not None else b"Service Unavailable"
    error = _error(status, raw, "GetRecords")
    assert type(error) is kind
    assert error.status == status
    assert str(error).startswith("GetRecords: ")


def test_shards_parse_from_the_wire() -> None:
    closed = Shard.from_wire(
        {
            "ShardId": "shardId-2",
            "ParentShardId": "shardId-1",
            "SequenceNumberRange": {"StartingSequenceNumber": "10", "EndingSequenceNumber": "90"},
        }
    )
    assert (closed.parent_id, closed.starting_sequence, closed.ending_sequence) == (
        "shardId-1",
        "10",
        "90",
    )
    open_shard = Shard.from_wire({"ShardId": "shardId-3"})
    assert (open_shard.parent_id, open_shard.ending_sequence) == (None, None)
