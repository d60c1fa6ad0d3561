"""SigV4 for REST requests (OpenSearch ``es`` and ``aoss``), checked against botocore."""

from __future__ import annotations

import datetime

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fanout.aws.signer import Signer

NOW = datetime.datetime(2026, 3, 4, 5, 6, 7)
EPOCH = NOW.replace(tzinfo=datetime.UTC).timestamp()
BULK = (
    b'{"index":{"_index":"orders","_id":"o%231","version":17,"version_type":"external"}}\n'
    b'{"pk":"o#1","total":12}\n'
    b'{"delete":{"_index":"orders","_id":"o%232","version":18,"version_type":"external"}}\n'
)
DOMAIN = "https://search-orders-abc123.eu-west-1.es.amazonaws.com"
SERVERLESS = "https://abc123.eu-west-1.aoss.amazonaws.com"
TOKEN = "FwoGZXIvYXdzEJr//token+with/slashes="


def botocore_headers(
    service: str,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    token: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW)
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    botocore.auth.SigV4Auth(creds.get_frozen_credentials(), service, "eu-west-1").add_auth(request)
    return dict(request.headers)


CASES = [
    pytest.param(
        "GET",
        f"{DOMAIN}/_cluster/health?wait_for_status=yellow&timeout=5s",
        {},
        b"",
        id="get-with-query",
    ),
    pytest.param(
        "GET",
        f"{DOMAIN}/orders/_search?size=10&q=status%3APAID&from=0",
        {},
        b"",
        id="get-with-encoded-query",
    ),
    pytest.param("GET", f"{DOMAIN}", {}, b"", id="no-path"),
    pytest.param(
        "POST", f"{DOMAIN}/_bulk", {"Content-Type": "application/x-ndjson"}, BULK, id="bulk-ndjson"
    ),
    pytest.param(
        "POST",
        f"{DOMAIN}/orders/_bulk?refresh=wait_for",
        {"Content-Type": "application/x-ndjson", "Accept": "application/json"},
        BULK,
        id="bulk-with-query",
    ),
    pytest.param(
        "PUT",
        f"{DOMAIN}/orders/_doc/o%231%2Fa%20b?version=3&version_type=external",
        {"Content-Type": "application/json"},
        b'{"pk":"o#1/a b"}',
        id="path-needs-encoding",
    ),
    pytest.param(
        "DELETE", f"{DOMAIN}/my%20index/_doc/caf%C3%A9~1", {}, b"", id="path-with-utf8-and-tilde"
    ),
    pytest.param("GET", f"{DOMAIN}/a/./b//c/../_count", {}, b"", id="dot-segments"),
    pytest.param(
        "POST",
        "http://localhost:9200/_bulk",
        {
            "Content-Type": "application/x-ndjson",
            "User-Agent": "fanout",
            "X-Custom": "  two   spaces ",
        },
        BULK,
        id="local-port-unsigned-user-agent-trimmed-value",
    ),
]


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "session-token"])
@pytest.mark.parametrize(("method", "url", "headers", "body"), CASES)
def test_es_signatures_match_botocore(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    token: str | None,
) -> None:
    expected = botocore_headers("es", method, url, headers, body, token, monkeypatch)
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    signer = Signer("eu-west-1", "es")
    ours = signer.sign(
        method, url, creds.get_frozen_credentials(), headers=headers, body=body, now=EPOCH
    )
    assert ours == expected
    assert "X-Amz-Content-SHA256" not in ours
    # the derived key is cached; a second request signs the same way
    assert (
        signer.sign(
            method, url, creds.get_frozen_credentials(), headers=headers, body=body, now=EPOCH
        )
        == expected
    )


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "session-token"])
@pytest.mark.parametrize(("method", "url", "headers", "body"), CASES)
def test_aoss_signs_the_content_digest_as_botocore_does(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    token: str | None,
) -> None:
    import hashlib

    url = url.replace(DOMAIN, SERVERLESS)
    # OpenSearch Serverless requires the header; clients add it before signing
    digest = hashlib.sha256(body).hexdigest()
    with_digest = {**headers, "X-Amz-Content-SHA256": digest}
    expected = botocore_headers("aoss", method, url, with_digest, body, token, monkeypatch)
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    ours = Signer("eu-west-1", "aoss").sign(
        method, url, creds.get_frozen_credentials(), headers=headers, body=body, now=EPOCH
    )
    assert ours == expected
    assert ours["X-Amz-Content-SHA256"] == digest
    assert "x-amz-content-sha256" in ours["Authorization"]


def test_signer_owned_headers_given_by_the_caller_are_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"{DOMAIN}/_bulk"
    headers = {"Content-Type": "application/x-ndjson"}
    expected = botocore_headers("es", "POST", url, headers, BULK, TOKEN, monkeypatch)
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", TOKEN)
    stale = {
        **headers,
        "authorization": "AWS4-HMAC-SHA256 old",
        "X-Amz-Date": "20000101T000000Z",
        "x-amz-security-token": "old",
    }
    ours = Signer("eu-west-1", "es").sign(
        "POST", url, creds.get_frozen_credentials(), headers=stale, body=BULK, now=EPOCH
    )
    assert ours == expected


def test_content_digest_can_be_forced_on_or_off(monkeypatch: pytest.MonkeyPatch) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    frozen = creds.get_frozen_credentials()
    url = f"{SERVERLESS}/_bulk"
    off = Signer("eu-west-1", "aoss").sign("POST", url, frozen, body=BULK, content_sha256=False)
    assert "X-Amz-Content-SHA256" not in off
    on = Signer("eu-west-1", "es").sign("POST", url, frozen, body=BULK, content_sha256=True)
    assert "x-amz-content-sha256" in on["Authorization"]
