"""The local OpenSearch stand-in keeps the documented semantics the sink depends on."""

from __future__ import annotations

import base64
import datetime
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import botocore.auth
import orjson
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fanout.testing.searchauth import SigV4Expectation
from fanout.testing.searchindex import time_value
from fanout.testing.searchserver import SearchServer, ServerThread

pytestmark = pytest.mark.integration


@pytest.fixture
async def server() -> AsyncIterator[SearchServer]:
    server = SearchServer()
    await server.start()
    yield server
    await server.stop()


async def call(
    server: SearchServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    data = body if isinstance(body, bytes) else (orjson.dumps(body) if body is not None else None)
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, data=data, headers=headers) as response,
    ):
        raw = await response.read()
        return response.status, (orjson.loads(raw) if raw else None), dict(response.headers)


def ndjson(*lines: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def index(doc_id: str, version: int | None, doc: dict[str, Any], **meta: Any) -> bytes:
    params: dict[str, Any] = {"_index": "i", "_id": doc_id, **meta}
    if version is not None:
        params.setdefault("version_type", "external")
        params["version"] = version
    return ndjson({"index": params}, doc)


def delete(doc_id: str, version: int, **meta: Any) -> bytes:
    params = {"_index": "i", "_id": doc_id, "version": version, "version_type": "external"}
    return ndjson({"delete": {**params, **meta}})


async def bulk(server: SearchServer, *parts: bytes) -> list[dict[str, Any]]:
    status, answer, _ = await call(server, "POST", "/_bulk", b"".join(parts))
    assert status == 200, answer
    assert answer["errors"] == any("error" in next(iter(i.values())) for i in answer["items"])
    return [next(iter(item.values())) for item in answer["items"]]


async def test_external_versions_must_grow_and_conflicts_name_the_current_version(server):
    items = await bulk(
        server,
        index("a", 5, {"v": 1}),
        index("a", 5, {"v": 2}),
        index("a", 4, {"v": 3}),
        index("a", 6, {"v": 4}),
        index("a", 6, {"v": 5}, version_type="external_gte"),
        index("a", 5, {"v": 6}, version_type="external_gte"),
    )
    assert [(i["status"], i.get("result")) for i in items] == [
        (201, "created"),
        (409, None),
        (409, None),
        (200, "updated"),
        (200, "updated"),
        (409, None),
    ]
    assert items[1]["error"]["type"] == "version_conflict_engine_exception"
    assert (
        "current version [5] is higher or equal to the one provided [5]"
        in (items[1]["error"]["reason"])
    )
    assert "current version [6] is higher than the one provided [5]" in items[5]["error"]["reason"]
    assert server.document("i", "a").source == {"v": 5}
    assert server.document("i", "a").version == 6


async def test_deletes_leave_tombstones_for_gc_deletes_then_forget_them(server):
    items = await bulk(server, index("a", 5, {"v": 1}), delete("a", 7), delete("ghost", 3))
    assert [(i["status"], i["result"]) for i in items] == [
        (201, "created"),
        (200, "deleted"),
        (404, "not_found"),
    ]
    assert "error" not in items[2]
    assert (server.tombstone("i", "a"), server.tombstone("i", "ghost")) == (7, 3)
    items = await bulk(server, index("a", 6, {"v": 2}), index("ghost", 2, {"v": 2}))
    assert [i["status"] for i in items] == [409, 409]
    server.advance(61)
    items = await bulk(server, index("a", 6, {"v": 2}))
    assert items[0]["result"] == "created"
    assert server.tombstone("i", "ghost") is None


async def test_an_index_setting_decides_how_long_tombstones_live(server):
    status, _, _ = await call(server, "PUT", "/i", {"settings": {"index": {"gc_deletes": "1h"}}})
    assert status == 200
    await bulk(server, delete("a", 7))
    server.advance(3000)
    assert (await bulk(server, index("a", 6, {})))[0]["status"] == 409
    server.advance(700)
    assert (await bulk(server, index("a", 6, {})))[0]["status"] == 201


async def test_whole_request_errors_are_refused_as_opensearch_refuses_them(server):
    cases = [
        (b'{"index":{"_index":"i","_id":"a"}}\n{}', "terminated by a newline"),
        (b'{"index":{"_index":"i","_id":"a","bogus":1}}\n{}\n', "unknown parameter [bogus]"),
        (b'{"update":{"_index":"i","_id":"a"}}\n{}\n', "expected one of"),
        (index("x" * 513, 1, {}), "too long"),
        (index("a", 1, {}, version_type="internal"), "internal versioning"),
        (index("a", -1, {}), "illegal version value"),
        (b'{"delete":{"_id":"a"}}\n', "index is missing"),
        (b"nope\n", "Malformed action/metadata line [1]"),
    ]
    for body, reason in cases:
        status, answer, _ = await call(server, "POST", "/_bulk", body)
        assert status == 400, body
        assert reason in answer["error"]["reason"], (body, answer)
    assert server.writes() == []


async def test_the_index_can_come_from_the_path_and_ids_from_the_server(server):
    status, answer, _ = await call(
        server, "POST", "/p/_bulk", ndjson({"index": {}}, {"v": 1}, {"create": {"_id": "c"}}, {})
    )
    assert status == 200
    kinds = [next(iter(i)) for i in answer["items"]]
    assert kinds == ["index", "create"]
    assert len(server.documents("p")) == 2
    status, answer, _ = await call(server, "POST", "/p/_bulk", ndjson({"create": {"_id": "c"}}, {}))
    assert answer["items"][0]["create"]["status"] == 409


async def test_scripted_faults(server):
    server.throttle(2, retry_after=3)
    server.fail(1, status=502)
    for status, retry_after in ((429, "3"), (429, "3"), (502, None)):
        got, _, headers = await call(server, "POST", "/_bulk", index("a", 1, {}))
        assert got == status
        assert headers.get("Retry-After") == retry_after
    server.refuse(lambda doc: doc.get("bad") is True, reason="failed to parse field [bad]")
    server.reject(0.5, times=2, seed=1, retry_after=2)
    batch = [index(f"k{n}", 1, {"bad": n == 0}) for n in range(40)]
    status, answer, headers = await call(server, "POST", "/_bulk", b"".join(batch))
    items = [i["index"] for i in answer["items"]]
    assert items[0]["status"] == 400
    assert items[0]["error"]["type"] == "mapper_parsing_exception"
    rejected = {i["_id"] for i in items if i["status"] == 429}
    assert 5 < len(rejected) < 35
    assert headers["Retry-After"] == "2"
    again = [
        i["index"] for i in (await call(server, "POST", "/_bulk", b"".join(batch)))[1]["items"]
    ]
    assert {i["_id"] for i in again if i["status"] == 429} == rejected - {"k0"}
    third = [
        i["index"] for i in (await call(server, "POST", "/_bulk", b"".join(batch)))[1]["items"]
    ]
    assert all(i["status"] in (201, 409, 400) for i in third)
    server.clear_faults()
    assert (await bulk(server, index("k0", 2, {"bad": True})))[0]["status"] == 201


async def test_mget_and_get_read_documents_with_source_filtering(server):
    await bulk(server, index("a", 3, {"v": 1, "_fanout": {"seq": "9"}}, routing="r"))
    status, answer, _ = await call(
        server,
        "POST",
        "/_mget?_source_includes=_fanout",
        {
            "docs": [
                {"_index": "i", "_id": "a"},
                {"_index": "i", "_id": "b"},
                {"_index": "n", "_id": "x"},
            ]
        },
    )
    assert status == 200
    found, missing, no_index = answer["docs"]
    assert found["found"] is True
    assert found["_version"] == 3
    assert found["_source"] == {"_fanout": {"seq": "9"}}
    assert found["_routing"] == "r"
    assert missing == {"_index": "i", "_id": "b", "found": False}
    assert no_index["error"]["type"] == "index_not_found_exception"
    status, answer, _ = await call(server, "GET", "/i/_doc/a")
    assert (status, answer["_source"]) == (200, {"v": 1, "_fanout": {"seq": "9"}})
    status, answer, _ = await call(server, "GET", "/i/_doc/b")
    assert (status, answer["found"]) == (404, False)
    status, answer, _ = await call(server, "POST", "/i/_mget", {"ids": ["a"]})
    assert answer["docs"][0]["found"] is True


async def test_index_creation_and_settings(server):
    body = {"settings": {"index.gc_deletes": "2d", "number_of_replicas": 0}, "mappings": {}}
    status, answer, _ = await call(server, "PUT", "/orders", body)
    assert (status, answer["acknowledged"]) == (200, True)
    status, answer, _ = await call(server, "PUT", "/orders", body)
    assert (status, answer["error"]["type"]) == (400, "resource_already_exists_exception")
    status, answer, _ = await call(server, "PUT", "/Orders", body)
    assert (status, answer["error"]["type"]) == (400, "invalid_index_name_exception")
    status, answer, _ = await call(
        server, "GET", "/orders/_settings?flat_settings=true&include_defaults=true"
    )
    settings = answer["orders"]["settings"]
    assert settings["index.gc_deletes"] == "2d"
    assert settings["index.number_of_replicas"] == "0"
    assert "index.gc_deletes" not in answer["orders"]["defaults"]
    status, answer, _ = await call(server, "GET", "/orders/_settings")
    assert answer["orders"]["settings"]["index"]["gc_deletes"] == "2d"
    status, _, _ = await call(server, "PUT", "/orders/_settings", {"index": {"gc_deletes": "3d"}})
    assert status == 200
    assert server.settings("orders")["index.gc_deletes"] == "3d"
    status, answer, _ = await call(server, "GET", "/nope/_settings")
    assert (status, answer["error"]["type"]) == (404, "index_not_found_exception")
    status, answer, _ = await call(server, "GET", "/")
    assert answer["version"]["distribution"] == "opensearch"


async def test_missing_indexes_are_refused_per_item_without_auto_create():
    server = SearchServer(auto_create_index=False)
    await server.start()
    try:
        items = await bulk(server, index("a", 1, {}))
        assert items[0]["status"] == 404
        assert items[0]["error"]["type"] == "index_not_found_exception"
    finally:
        await server.stop()


async def test_bodies_over_the_content_limit_get_413():
    server = SearchServer(max_content_length=1000)
    await server.start()
    try:
        status, _, _ = await call(server, "POST", "/_bulk", index("a", 1, {"p": "x" * 2000}))
        assert status == 413
        assert [r.status for r in server.requests()] == [413]
    finally:
        await server.stop()


async def test_basic_auth_is_required_when_configured():
    server = SearchServer(username="u", password="p")
    await server.start()
    try:
        status, _answer, headers = await call(server, "GET", "/")
        assert status == 401
        assert "Basic" in headers["WWW-Authenticate"]
        token = base64.b64encode(b"u:p").decode()
        status, _, _ = await call(server, "GET", "/", headers={"Authorization": f"Basic {token}"})
        assert status == 200
    finally:
        await server.stop()


async def test_sigv4_is_checked_against_botocore_signatures(monkeypatch):
    expectation = SigV4Expectation("AKID", "secret", "eu-west-1", "es", "tok")
    server = SearchServer(sigv4=expectation)
    await server.start()
    try:
        body = index("a/b", 1, {"v": 1})
        url = f"{server.url}/_bulk?refresh=true"

        def signed(secret: str, payload: bytes) -> dict[str, str]:
            now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now)
            request = AWSRequest(
                method="POST",
                url=url,
                data=body,
                headers={"Content-Type": "application/x-ndjson"},
            )
            creds = Credentials("AKID", secret, "tok").get_frozen_credentials()
            botocore.auth.SigV4Auth(creds, "es", "eu-west-1").add_auth(request)
            return dict(request.headers)

        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=body, headers=signed("secret", body)) as response:
                assert response.status == 200, await response.text()
            async with session.post(url, data=body, headers=signed("wrong", body)) as response:
                assert response.status == 403
                assert "signature" in (await response.json())["error"]["reason"]
            tampered = body.replace(b'"v":1', b'"v":2')
            async with session.post(url, data=tampered, headers=signed("secret", body)) as response:
                assert response.status == 403
            async with session.post(url, data=body) as response:
                assert response.status == 403
        assert server.documents("i") == {"a/b": {"v": 1}}
    finally:
        await server.stop()


def test_a_server_thread_serves_synchronous_tests():
    import urllib.request

    with ServerThread(SearchServer()) as server:
        server.create_index("i", {"index.gc_deletes": "5m"})
        request = urllib.request.Request(
            f"{server.url}/_bulk", data=index("a", 1, {"v": 1}), method="POST"
        )
        with urllib.request.urlopen(request) as response:
            assert orjson.loads(response.read())["errors"] is False
        assert server.documents("i") == {"a": {"v": 1}}
        assert [w.accepted for w in server.writes()] == [True]
        assert server.requests()[-1].status == 200
        assert server.settings("i")["index.gc_deletes"] == "5m"


@pytest.mark.parametrize(
    ("text", "seconds"), [("60s", 60), ("1d", 86400), ("500ms", 0.5), ("1500", 1.5), ("2h", 7200)]
)
def test_time_values(text, seconds):
    assert time_value(text) == seconds
