"""AWS Signature Version 4 for the JSON 1.0 POSTs fanout sends itself (DynamoDB, Streams).

The signing key is derived once per day and secret; per request the work is two SHA-256
digests and one HMAC over short strings. ``tests/unit/test_signer.py`` checks every header
against botocore's ``SigV4Auth``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlsplit

JSON_10 = "application/x-amz-json-1.0"
_JSON = JSON_10


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
