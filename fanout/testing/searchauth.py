"""Authentication for the local OpenSearch stand-in: Basic auth, and SigV4 checked as AWS
checks it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from fanout.testing.searchwire import Reply

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<day>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<names>[^,]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


@dataclass(frozen=True)
class SigV4Expectation:
    """What a SigV4-signed request must be signed with."""

    access_key: str
    secret_key: str
    region: str
    service: str = "es"
    token: str | None = None


class Authenticator:
    """Checks each request's credentials (none required when neither is given).

    Args:
        username, password: require Basic auth with these.
        sigv4: require SigV4 signatures made with these credentials, region and service.
    """

    def __init__(
        self, username: str | None, password: str | None, sigv4: SigV4Expectation | None
    ) -> None:
        self._basic = (
            "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
            if username is not None
            else None
        )
        self._sigv4 = sigv4

    def check(self, method: str, raw: str, headers: dict[str, str], body: bytes) -> None:
        """Refuse the request (401 or 403 ``security_exception``) unless it is authenticated."""
        given = headers.get("Authorization", "")
        if self._basic is not None and not hmac.compare_digest(given, self._basic):
            raise Reply(
                401,
                "security_exception",
                "missing or wrong authentication credentials for REST request",
                {"WWW-Authenticate": 'Basic realm="OpenSearch Security"'},
            )
        if self._sigv4 is not None:
            problem = sigv4_problem(self._sigv4, method, raw, headers, body, given)
            if problem:
                raise Reply(403, "security_exception", problem)


def sigv4_problem(
    want: SigV4Expectation, method: str, raw: str, headers: dict[str, str], body: bytes, given: str
) -> str | None:
    """Why the request's SigV4 signature (``given``) is refused, or None if it is right:
    the signature is recomputed with botocore from the headers it names as signed."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    match = _AUTH.match(given)
    if not match:
        return "missing or malformed SigV4 Authorization header"
    if (match["key"], match["region"], match["service"]) != (
        want.access_key,
        want.region,
        want.service,
    ):
        return f"credential scope {match['key']}/{match['region']}/{match['service']} refused"
    lower = {k.lower(): v for k, v in headers.items()}
    stamp = lower.get("x-amz-date", "")
    if stamp[:8] != match["day"]:
        return "X-Amz-Date does not match the credential scope"
    if want.token is not None and lower.get("x-amz-security-token") != want.token:
        return "the security token is missing or wrong"
    digest = lower.get("x-amz-content-sha256")
    if want.service == "aoss" and digest is None:
        return "OpenSearch Serverless requires X-Amz-Content-SHA256"
    if digest is not None and digest != hashlib.sha256(body).hexdigest():
        return "X-Amz-Content-SHA256 does not match the body"
    names = match["names"].split(";")
    if "host" not in names:
        return "the Host header is not signed"
    missing = [n for n in names if n not in lower]
    if missing:
        return f"signed headers are missing: {missing}"
    signed = AWSRequest(
        method=method,
        url=f"http://{lower['host']}{raw}",
        data=body,
        headers={n: lower[n] for n in names},
    )
    signed.context["timestamp"] = stamp
    credentials = Credentials(want.access_key, want.secret_key, want.token)
    auth = SigV4Auth(credentials.get_frozen_credentials(), want.service, want.region)
    canonical = auth.canonical_request(signed)
    expected = auth.signature(auth.string_to_sign(signed, canonical), signed)
    if not hmac.compare_digest(expected, match["signature"]):
        return "The request signature we calculated does not match the signature you provided."
    return None
