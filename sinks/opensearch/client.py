"""HTTP to an OpenSearch cluster for the ``opensearch`` sink: authentication (none, basic,
SigV4 for ``es`` and ``aoss``), TLS, and the answers the sink reads.

Requests go through the process's shared aiohttp session (``SinkContext.http``). SigV4
credentials are the process's (``SinkContext.aws``): aiobotocore's refreshable credentials,
resolved through the standard chain and refreshed by awaiting them, so a refresh never
blocks the event loop.
"""

from __future__ import annotations

import base64
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import anyio.to_thread
import orjson
import yarl

from fanout.aws.signer import Signer
from fanout.errors import FanoutError, SinkUnavailable
from fanout.retry import retry_after_seconds
from fanout.sink import SinkContext
from sinks.opensearch.config import BasicAuth, OpenSearchSinkConfig, SigV4Auth

NDJSON = "application/x-ndjson"
JSON = "application/json"
_REGION = re.compile(r"\.([a-z]{2}(?:-[a-z]+)+-\d+)\.(?:es|aoss)\.amazonaws\.com(?:\.cn)?$")


class OpenSearchError(FanoutError):
    """The cluster answered a request with an error the sink cannot settle per record;
    the whole batch is retried. ``status`` is the HTTP status (0: no answer)."""

    retryable = True

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP answer, read whole."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (None when empty or not JSON)."""
        if not self.body:
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def retry_after(self) -> float | None:
        """Seconds the server asked to wait (``Retry-After``: seconds or an HTTP date)."""
        return retry_after_seconds(self.headers.get("Retry-After"))

    def error(self) -> str:
        """A short description of an error answer, for logs and exceptions."""
        data = self.json()
        if isinstance(data, dict):
            error = data.get("error")
            if isinstance(error, dict):
                return f"{self.status} {error.get('type', '')}: {error.get('reason', '')}"
            if error is not None:
                return f"{self.status} {error}"
            message = data.get("message") or data.get("Message")
            if message:
                return f"{self.status} {message}"
        text = self.body[:300].decode("utf-8", "replace").strip()
        return f"{self.status} {text}" if text else str(self.status)

    def error_type(self) -> str:
        """OpenSearch's ``error.type`` of an error answer, or ''."""
        data = self.json()
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return str(data["error"].get("type", ""))
        return ""


def region_of(endpoint: str) -> str | None:
    """The AWS region in an Amazon OpenSearch Service or Serverless host name, if any."""
    host = urlsplit(endpoint).hostname or ""
    match = _REGION.search(host)
    return match.group(1) if match else None


def path(*segments: str) -> str:
    """A URL path from raw segments (an index name, a document id), each percent-encoded."""
    return "".join("/" + quote(segment, safe="") for segment in segments)


class Transport:
    """Sends requests to the cluster with the configured authentication and TLS settings.

    ``start()`` once (it loads the CA bundle and resolves SigV4's region and credentials),
    then ``request()`` from any number of tasks.
    """

    def __init__(self, config: OpenSearchSinkConfig, context: SinkContext) -> None:
        self.config = config
        self.context = context
        self.endpoint = config.endpoint
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._ssl: ssl.SSLContext | bool = True
        self._basic: str | None = None
        self._signer: Signer | None = None
        self._credentials: Any = None

    @property
    def service(self) -> str | None:
        """``es`` or ``aoss`` with SigV4, else None."""
        auth = self.config.auth
        return auth.service if isinstance(auth, SigV4Auth) else None

    async def start(self) -> None:
        """Load the CA bundle, resolve credentials.

        Raises:
            OpenSearchError: no AWS region or credentials for SigV4.
            ValueError: basic auth without a username or password.
            OSError, ssl.SSLError: the CA bundle cannot be read.
        """
        config = self.config
        if urlsplit(self.endpoint).scheme == "https":
            if not config.verify_tls:
                self._ssl = False
            elif config.ca_bundle is not None:
                self._ssl = await anyio.to_thread.run_sync(_ssl_context, config.ca_bundle)
        auth = config.auth
        if isinstance(auth, BasicAuth):
            username, password = auth.credentials()
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._basic = f"Basic {token}"
        elif isinstance(auth, SigV4Auth):
            region = auth.region or region_of(self.endpoint)
            if region is None:
                region = self.context.aws.session.get_config_variable("region")
            if not region:
                raise OpenSearchError(
                    "SigV4 needs a region: set auth.region (none in the endpoint's host name "
                    "or the AWS environment)"
                )
            self._credentials = await self.context.aws.credentials()
            if self._credentials is None:
                raise OpenSearchError(
                    "SigV4 needs AWS credentials and none were found (environment, shared "
                    "config, container or instance role)"
                )
            self._signer = Signer(region, auth.service)

    async def request(
        self,
        method: str,
        target: str,
        *,
        query: str = "",
        body: bytes = b"",
        content_type: str = JSON,
    ) -> Response:
        """Send one request and read the whole answer.

        Args:
            method: the HTTP method.
            target: the path below the endpoint, already percent-encoded (see ``path``).
            query: the query string, already encoded, without ``?``.
            body: the request body.
            content_type: its media type.

        Raises:
            SinkUnavailable: no connection could be made (nothing was sent).
            aiohttp.ClientError, TimeoutError: no answer.
        """
        url = f"{self.endpoint}{target}"
        if query:
            url = f"{url}?{query}"
        headers: dict[str, str] = {"Content-Type": content_type} if body else {}
        if self._basic is not None:
            headers["Authorization"] = self._basic
        elif self._signer is not None:
            frozen = await self._credentials.get_frozen_credentials()
            headers = self._signer.sign(method, url, frozen, headers=headers, body=body)
        session = self.context.http.session()
        try:
            async with session.request(
                method,
                yarl.URL(url, encoded=True),
                data=body or None,
                headers=headers,
                timeout=self._timeout,
                ssl=self._ssl,
            ) as response:
                data = await response.read()
                return Response(response.status, response.headers, data)
        except aiohttp.ClientConnectorError as exc:
            # Not connected: nothing was sent.
            raise SinkUnavailable(f"cannot connect to {self.endpoint}: {exc}") from exc


def _ssl_context(ca_bundle: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_bundle)
