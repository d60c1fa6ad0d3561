"""AWS Signature Version 4: the JSON 1.0 POSTs fanout sends itself (DynamoDB, Streams) and
REST requests with a body that sinks send (Amazon OpenSearch Service ``es``, OpenSearch
Serverless ``aoss``).

The signing key is derived once per day and secret; per request the work is two SHA-256
digests and one HMAC over short strings. ``tests/unit/test_source.py`` and
``tests/unit/test_signer.py`` check every header against botocore's ``SigV4Auth``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import SplitResult, quote, urlsplit

JSON_10 = "application/x-amz-json-1.0"
_JSON = JSON_10

# Headers botocore never signs (hop-by-hop, tracing, User-Agent): proxies and HTTP clients
# may change them on the way.
_UNSIGNED = frozenset(
    {
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)
# Headers sign() sets itself; a caller's values for them are dropped.
_OWN = frozenset({"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FrozenCredentials(Protocol):
    """One consistent set of credentials, as botocore's ``get_frozen_credentials()`` returns
    (typed as botocore's stubs type them; ``sign()`` refuses a missing key)."""

    @property
    def access_key(self) -> str | None: ...
    @property
    def secret_key(self) -> str | None: ...
    @property
    def token(self) -> str | None: ...


def _host(parts: SplitResult) -> str:
    """The Host header of a URL as botocore computes it: lower case, no default port."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def _canonical_path(path: str) -> str:
    """The path with dot segments and empty segments removed, then URI-encoded (again):
    every AWS service but S3 signs the encoded path encoded a second time."""
    if not path:
        return "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    normal = ("/" if path[0] == "/" else "") + "/".join(segments)
    if path[-1] == "/" and segments:
        normal += "/"
    return quote(normal, safe="/~")


def _canonical_query(query: str) -> str:
    """The query's ``name=value`` pairs sorted, taken as they are in the URL (encoded)."""
    if not query:
        return ""
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&"))
    return "&".join(f"{name}={value}" for name, value in pairs)


class Signer:
    """AWS Signature Version 4 for one region and service.

    ``headers()`` is the fast path for the JSON 1.0 POSTs of DynamoDB and DynamoDB Streams
    (made per shard several times a second); ``sign()`` signs any HTTP request, e.g. an
    OpenSearch ``_bulk`` POST (service ``es``, or ``aoss`` for OpenSearch Serverless).
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
            found = self._urls[url] = (_host(parts), quote(parts.path or "/", safe="/~"))
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
        """Every header of a JSON 1.0 POST, Authorization included (aiohttp adds Host)."""
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

    def sign(
        self,
        method: str,
        url: str,
        credentials: FrozenCredentials,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        content_sha256: bool | None = None,
        now: float | None = None,
    ) -> dict[str, str]:
        """Sign one HTTP request; returns every header to send with it.

        Every header given is signed (except hop-by-hop ones and User-Agent), plus Host
        (taken from ``url`` unless given). Send the result as is: the signature covers the
        exact header values.

        Args:
            method: the HTTP method, e.g. ``GET`` or ``POST``.
            url: the URL exactly as it goes on the wire: path segments and query already
                percent-encoded (a document id ``a/b`` is ``a%2Fb``). Send it unchanged,
                e.g. ``session.post(yarl.URL(url, encoded=True), ...)``.
            credentials: frozen credentials (``await creds.get_frozen_credentials()``).
            headers: the request's own headers, e.g. ``Content-Type``.
            body: the exact bytes sent; empty for none.
            content_sha256: add ``X-Amz-Content-SHA256`` (the body's digest) and sign it;
                default: only for service ``aoss``, which requires it.
            now: epoch seconds of the signature (tests); default: now.

        Returns:
            ``headers`` plus ``X-Amz-Date``, ``X-Amz-Security-Token`` (with a session
            token), ``X-Amz-Content-SHA256`` (see above) and ``Authorization``.

        Raises:
            ValueError: ``credentials`` lack the access key or the secret key.
        """
        access_key, secret_key = credentials.access_key, credentials.secret_key
        if not access_key or not secret_key:
            raise ValueError("credentials without an access key or a secret key")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        day = stamp[:8]
        parts = urlsplit(url)
        payload = hashlib.sha256(body).hexdigest()
        out = {k: v for k, v in (headers or {}).items() if k.lower() not in _OWN}
        out["X-Amz-Date"] = stamp
        if credentials.token:
            out["X-Amz-Security-Token"] = credentials.token
        if content_sha256 if content_sha256 is not None else self.service == "aoss":
            out["X-Amz-Content-SHA256"] = payload
        signed: dict[str, str] = {}
        for name, value in out.items():
            lower = name.lower()
            if lower in _UNSIGNED:
                continue
            value = " ".join(value.split())
            signed[lower] = f"{signed[lower]},{value}" if lower in signed else value
        if "host" not in signed:
            signed["host"] = _host(parts)
        names = sorted(signed)
        signed_names = ";".join(names)
        canonical = "\n".join(
            (
                method.upper(),
                _canonical_path(parts.path),
                _canonical_query(parts.query),
                "".join(f"{name}:{signed[name]}\n" for name in names),
                signed_names,
                payload,
            )
        )
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        key = self._key(secret_key, day)
        signature = hmac.new(key, to_sign.encode(), "sha256").hexdigest()
        out["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return out
