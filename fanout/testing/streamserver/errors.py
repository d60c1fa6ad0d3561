"""The service's error answers: codes, their wire ``__type`` and HTTP status, and messages.

Error ``__type`` values follow the namespaces of the service model: ExpiredIterator and
TrimmedDataAccess live in ``com.amazonaws.dynamodb.streams.v20120810``, the errors shared
with DynamoDB (LimitExceeded, ResourceNotFound, InternalServerError) in
``com.amazonaws.dynamodb.v20120810`` and validation errors in ``com.amazon.coral.validate``.
Clients use only the part after ``#``.
"""

from __future__ import annotations

import time

_STREAMS_NS = "com.amazonaws.dynamodb.streams.v20120810#"
_DYNAMODB_NS = "com.amazonaws.dynamodb.v20120810#"
_CORAL_SERVICE_NS = "com.amazon.coral.service#"

# error code -> (wire __type, HTTP status)
ERROR_TYPES: dict[str, tuple[str, int]] = {
    "ExpiredIteratorException": (_STREAMS_NS + "ExpiredIteratorException", 400),
    "TrimmedDataAccessException": (_STREAMS_NS + "TrimmedDataAccessException", 400),
    "LimitExceededException": (_DYNAMODB_NS + "LimitExceededException", 400),
    "ResourceNotFoundException": (_DYNAMODB_NS + "ResourceNotFoundException", 400),
    "InternalServerError": (_DYNAMODB_NS + "InternalServerError", 500),
    "ProvisionedThroughputExceededException": (
        _DYNAMODB_NS + "ProvisionedThroughputExceededException",
        400,
    ),
    "RequestLimitExceeded": (_DYNAMODB_NS + "RequestLimitExceeded", 400),
    "ValidationException": ("com.amazon.coral.validate#ValidationException", 400),
    "ThrottlingException": ("com.amazon.coral.availability#ThrottlingException", 400),
    "ServiceUnavailable": (_DYNAMODB_NS + "ServiceUnavailable", 503),
    "MissingAuthenticationTokenException": (
        _CORAL_SERVICE_NS + "MissingAuthenticationTokenException",
        400,
    ),
    "IncompleteSignatureException": (_CORAL_SERVICE_NS + "IncompleteSignatureException", 400),
    "UnrecognizedClientException": (_CORAL_SERVICE_NS + "UnrecognizedClientException", 400),
    "UnknownOperationException": (_CORAL_SERVICE_NS + "UnknownOperationException", 400),
    "SerializationException": (_CORAL_SERVICE_NS + "SerializationException", 400),
}

DEFAULT_MESSAGES: dict[str, str] = {
    "ExpiredIteratorException": "Iterator expired",
    "TrimmedDataAccessException": "The data you are trying to access has been trimmed",
    "LimitExceededException": "Rate exceeded for shard",
    "ResourceNotFoundException": "Requested resource not found",
    "InternalServerError": "Internal server error",
    "ProvisionedThroughputExceededException": "The level of configured provisioned "
    "throughput for the table was exceeded. Consider increasing your provisioning level "
    "with the UpdateTable API.",
    "ThrottlingException": "Rate of requests exceeds the allowed throughput.",
    "ServiceUnavailable": "The service is currently unavailable or busy.",
}

# reason phrases for the plain-text answers of HTTP-status faults
HTTP_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ApiError(Exception):
    """An error answer: the code (the part of ``__type`` after ``#``), message and status."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        wire, default_status = ERROR_TYPES.get(code, (_DYNAMODB_NS + code, 400))
        self.wire_type = wire
        self.status = default_status if status is None else status


def validation(message: str) -> ApiError:
    """A ValidationException with ``message``."""
    return ApiError("ValidationException", message)


def limit_error(value: int, name: str, low: int, high: int) -> ApiError:
    """The ValidationException for an integer parameter outside ``low..high``."""
    bound = f"greater than or equal to {low}" if value < low else f"less than or equal to {high}"
    return validation(
        f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
        f"constraint: Member must have value {bound}"
    )


def not_found(what: str) -> ApiError:
    """ResourceNotFoundException, ``what`` naming the resource (``Stream: arn not found``)."""
    return ApiError("ResourceNotFoundException", f"Requested resource not found: {what}")


def _java_time(epoch: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(epoch))


def expired_message(issued: float, now: float, ttl: float) -> str:
    """ExpiredIteratorException's message, as the service words it."""
    return (
        f"Iterator expired. The iterator was created at time {_java_time(issued)} while "
        f"right now it is {_java_time(now)} which is further in the future than the "
        f"tolerated delay of {int(ttl * 1000)} milliseconds."
    )
