"""The DynamoDB client the handlers share (created on first use, as on Lambda)."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def client() -> Any:
    import boto3

    return boto3.client("dynamodb")
