"""The shapes of AWS names in a config: URLs, SQS queue URLs and names, ARNs.

Checked when the config is read, so ``queue_url: x`` fails at start-up with the field's name
instead of at the first dead letter.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):"
    r"(?P<account>\d{1,12}|):(?P<resource>.+)$"
)
_STREAM_RESOURCE = re.compile(r"^table/[A-Za-z0-9_.-]{3,255}/stream/[^/]+$")
_SQS_PATH = re.compile(r"^/\d{1,12}/[A-Za-z0-9_-]{1,80}(\.fifo)?$")
_SQS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}(\.fifo)?$")


def is_sqs_queue_name(value: str) -> bool:
    """True for a valid SQS queue name (1-80 of A-Z a-z 0-9 - _, ``.fifo`` at the end)."""
    return _SQS_NAME.match(value) is not None


def check_http_url(value: str, what: str = "URL") -> str:
    """``value`` if it is an absolute ``http://`` or ``https://`` URL with a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// {what}")
    return value


def check_sqs_queue_url(value: str) -> str:
    """``value`` if it has the shape of an SQS queue URL:
    ``https://sqs.REGION.amazonaws.com/ACCOUNT_ID/QUEUE_NAME`` (any host, e.g. a local
    emulator's)."""
    check_http_url(value, "SQS queue URL")
    if not _SQS_PATH.match(urlsplit(value).path):
        raise ValueError(
            f"{value!r} is not an SQS queue URL: its path must be /ACCOUNT_ID/QUEUE_NAME, "
            "e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/my-queue"
        )
    return value


def parse_arn(value: str, service: str | None = None) -> dict[str, str]:
    """The parts of an ARN (``partition``, ``service``, ``region``, ``account``,
    ``resource``); ValueError when ``value`` is not one (of ``service``)."""
    match = _ARN.match(value)
    if not match:
        raise ValueError(
            f"{value!r} is not an ARN (arn:PARTITION:SERVICE:REGION:ACCOUNT_ID:RESOURCE)"
        )
    parts = match.groupdict()
    if service is not None and parts["service"] != service:
        raise ValueError(f"{value!r} is not an ARN of {service} (it is of {parts['service']})")
    return parts


def check_stream_arn(value: str) -> str:
    """``value`` if it is a DynamoDB stream ARN
    (``arn:aws:dynamodb:REGION:ACCOUNT_ID:table/NAME/stream/LABEL``)."""
    parts = parse_arn(value, "dynamodb")
    if not parts["region"] or not parts["account"] or not _STREAM_RESOURCE.match(parts["resource"]):
        raise ValueError(
            f"{value!r} is not a DynamoDB stream ARN "
            "(arn:aws:dynamodb:REGION:ACCOUNT_ID:table/NAME/stream/LABEL)"
        )
    return value
