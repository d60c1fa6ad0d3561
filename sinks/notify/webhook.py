"""The ``webhook`` sink: POSTs JSON to a URL, one request per record or per batch, signed as
the Standard Webhooks specification describes.

Headers: ``webhook-id`` (the record's eventID; in batch mode an id derived from the records'
eventIDs, the same for every retry of the same records), ``webhook-timestamp`` (epoch
seconds of the attempt) and, with a ``secret``, ``webhook-signature: v1,<base64 of
HMAC-SHA256("{id}.{timestamp}.{body}")>``. A secret ``whsec_<base64>`` is the base64 key (the
form Standard Webhooks libraries take); any other secret is used as its UTF-8 bytes.

Answers: 2xx delivered; 408, 429 and 5xx retryable, honouring ``Retry-After`` (seconds or
an HTTP date, at most an hour); a network error or timeout retryable; anything else (other
4xx, 3xx: redirects are not followed) permanent. In record mode the records of a batch go
one at a time, in order, and a retryable answer holds back the rest of the batch. In batch
mode a permanent answer to several records raises, so the core bisects the batch down to
the record the receiver refuses, which alone fails permanently.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field, SecretStr, field_validator

from fanout.config.types import Duration
from fanout.errors import ConfigError
from fanout.records import Record, dumps_plain
from fanout.retry import retry_after_seconds
from fanout.sink import Failure, Failures, SinkContext, SinkType
from sinks.notify.config import FormatConfig
from sinks.notify.format import batch_id

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
_READ_LIMIT = 64 * 1024  # bytes of an answer read (kept whole, the connection is reused)
_REASON_LIMIT = 200  # characters of an error answer kept in the failure reason
_RESERVED = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length"}
)


class WebhookSinkConfig(FormatConfig):
    """Options of the ``webhook`` sink."""

    type: Literal["webhook"] = "webhook"
    url: str = Field(description="Where records are POSTed (http or https).")
    secret: SecretStr | None = Field(
        None,
        description="Signing secret (use ${VAR}): whsec_<base64> or any other text (its UTF-8 "
        "bytes); without it requests are not signed.",
    )
    mode: Literal["record", "batch"] = Field(
        "record", description="record: one request per record; batch: {records: [...]}."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers (values may be ${VAR} references).",
    )
    timeout: Duration = Field(10.0, gt=0, le=300, description="Seconds one request may take.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        taken = sorted(name for name in value if name.lower() in _RESERVED)
        if taken:
            raise ValueError(f"set by the sink, not configurable: {', '.join(taken)}")
        return value


def signing_key(secret: str) -> bytes:
    """The HMAC key of a secret: ``whsec_<base64>`` decoded, any other text as UTF-8.

    Raises:
        ValueError: a ``whsec_`` secret that is not valid base64.
    """
    if secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"a {SECRET_PREFIX} secret must be base64: {exc}") from None
        if not key:
            raise ValueError(f"the {SECRET_PREFIX} secret is empty")
        return key
    if not secret:
        raise ValueError("the secret is empty")
    return secret.encode()


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of id.timestamp.body>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookRejected(Exception):
    """The receiver refused a batch of several records for good (a 4xx): split it."""


class WebhookSink:
    """POSTs records to a URL, signed."""

    ordered = True

    def __init__(self, name: str, config: WebhookSinkConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.format = config.body_format()
        self.timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._key: bytes | None = None
        self._started = False
        self._log = context.logger
        self._failures = context.metrics.sink_entry_failures

    async def start(self) -> None:
        secret = self.config.secret
        self._key = signing_key(secret.get_secret_value()) if secret is not None else None
        self._started = True

    async def stop(self) -> None:
        self._key = None
        self._started = False

    async def send(self, batch: Sequence[Record]) -> Failures:
        assert self._started, "send() before start()"
        if not batch:
            return {}
        if self.config.mode == "batch":
            return await self._send_batch(batch)
        failures: Failures = {}
        for index, record in enumerate(batch):
            message_id = str(record.get("eventID") or batch_id([repr(record.get("dynamodb"))]))
            failure = await self._post(message_id, self.format.dumps(record))
            if failure is None:
                continue
            failures[index] = failure
            if failure.retryable:
                # In order: the rest of the batch waits behind this record.
                note = f"not sent: record {index} of the batch failed before it"
                for later in range(index + 1, len(batch)):
                    failures[later] = Failure(True, note, failure.retry_after)
                break
        return failures

    async def _send_batch(self, batch: Sequence[Record]) -> Failures:
        body = dumps_plain({"records": [self.format.render(r) for r in batch]})
        failure = await self._post(batch_id([str(r.get("eventID")) for r in batch]), body)
        if failure is None:
            return {}
        if failure.retryable or len(batch) == 1:
            return dict.fromkeys(range(len(batch)), failure)
        raise WebhookRejected(failure.reason)

    async def _post(self, message_id: str, body: bytes) -> Failure | None:
        """One signed request; None when it was delivered."""
        timestamp = int(time.time())
        headers = {
            **self.config.headers,
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
        }
        if self._key is not None:
            headers["webhook-signature"] = signature(self._key, message_id, timestamp, body)
        session = self.context.http.session()
        try:
            async with session.post(
                self.config.url,
                data=body,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                answer = await response.content.read(_READ_LIMIT)
                wait = retry_after_seconds(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            code = type(exc).__name__
            self._refused(code, None)
            return Failure(True, f"{code}: {exc}" if str(exc) else code)
        if 200 <= status < 300:
            return None
        retryable = status in (408, 429) or status >= 500
        self._refused(f"http_{status}", status)
        text = answer.decode("utf-8", "replace").strip()[:_REASON_LIMIT]
        reason = f"HTTP {status}: {text}" if text else f"HTTP {status}"
        return Failure(retryable, reason, wait if retryable else None)

    def _refused(self, code: str, status: int | None) -> None:
        self._failures.labels(self.name, code).inc()
        self._log.warning(
            "webhook_request_failed", extra={"sink": self.name, "status": status, "code": code}
        )


def _check(name: str, config: WebhookSinkConfig, path: str) -> None:
    if config.secret is not None:
        try:
            signing_key(config.secret.get_secret_value())
        except ValueError as exc:
            raise ConfigError(f"{path}.secret", str(exc)) from None


def _build(name: str, config: WebhookSinkConfig, context: SinkContext) -> WebhookSink:
    return WebhookSink(name, config, context)


WEBHOOK: SinkType[WebhookSinkConfig] = SinkType(WebhookSinkConfig, _build, _check)
