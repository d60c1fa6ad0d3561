"""The opensearch sink against the local _bulk server (fanout.testing.searchserver)."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fanout.errors import ConfigError, SinkUnavailable
from fanout.sink import SinkContext, SinkRegistry
from fanout.testing.searchauth import SigV4Expectation
from fanout.testing.searchserver import SearchServer
from sinks.opensearch import OPENSEARCH, OpenSearchSink
from sinks.opensearch.client import OpenSearchError
from sinks.opensearch.document import TIE_MASK, version_of

pytestmark = pytest.mark.integration

NOW = int(time.time())  # changes are fresh: well within the tombstone retention
BASE = 10**20  # a realistic 21-digit sequence number


def change(
    name: str,
    pk: str,
    seq: int,
    *,
    created: int = NOW,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    ttl: bool = False,
) -> dict[str, Any]:
    keys = {"pk": {"S": pk}}
    ddb: dict[str, Any] = {
        "ApproximateCreationDateTime": created,
        "Keys": keys,
        "SequenceNumber": str(seq),
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if name != "REMOVE":
        ddb["NewImage"] = {**keys, **(new or {})}
    if old is not None:
        ddb["OldImage"] = {**keys, **old}
    record = {
        "eventID": f"e{seq}",
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": ddb,
    }
    if ttl:
        record["userIdentity"] = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
    return record


def put(pk: str, seq: int, value: int, **kw: Any) -> dict[str, Any]:
    return change("MODIFY", pk, seq, new={"v": {"N": str(value)}}, **kw)


def body(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if doc is None else {k: v for k, v in doc.items() if k != "_fanout"}


def metric(context: SinkContext, name: str, **labels: str) -> float:
    text = generate_latest(context.metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


@pytest.fixture
async def server() -> AsyncIterator[SearchServer]:
    server = SearchServer()
    await server.start()
    yield server
    await server.stop()


Make = Callable[..., Awaitable[tuple[OpenSearchSink, SinkContext]]]


@pytest.fixture
async def make(server: SearchServer) -> AsyncIterator[Make]:
    made: list[tuple[OpenSearchSink, SinkContext]] = []

    async def make(start: bool = True, **options: Any) -> tuple[OpenSearchSink, SinkContext]:
        options = {"type": "opensearch", "endpoint": server.url, "index": "orders", **options}
        config = OPENSEARCH.config.model_validate(options)
        OPENSEARCH.check("search", config, "sinks.search")
        context = SinkContext.standalone("search")
        sink = OPENSEARCH.build("search", config, context)
        assert isinstance(sink, OpenSearchSink)
        made.append((sink, context))
        if start:
            await sink.start()
        return sink, context

    yield make
    for sink, context in made:
        await sink.stop()
        await context.aclose()


def test_the_sink_type_is_registered_and_ordered():
    assert SinkRegistry()["opensearch"] is OPENSEARCH
    config = OPENSEARCH.config.model_validate(
        {"type": "opensearch", "endpoint": "http://h:9200/", "index": "orders"}
    )
    assert config.endpoint == "http://h:9200"
    assert OPENSEARCH.build("s", config, SinkContext.standalone()).ordered is True


async def test_inserts_and_modifies_index_the_new_image_and_removes_delete(server, make):
    sink, _ = await make()
    batch = [
        change("INSERT", "a", BASE + 1, new={"v": {"N": "1"}, "tags": {"SS": ["x"]}}),
        change("INSERT", "b", BASE + 2, new={"v": {"N": "2"}}),
        put("a", BASE + 3, 3, old={"v": {"N": "1"}}),
        change("REMOVE", "b", BASE + 4, old={"v": {"N": "2"}}),
    ]
    assert await sink.send(batch) == {}
    docs = server.documents("orders")
    assert {k: body(v) for k, v in docs.items()} == {"a": {"pk": "a", "v": 3}}
    assert docs["a"]["_fanout"] == {
        "seq": str(BASE + 3),
        "created": NOW,
        "event_id": f"e{BASE + 3}",
    }
    assert server.document("orders", "a").version == version_of(NOW, BASE + 3)
    assert server.tombstone("orders", "b") == version_of(NOW, BASE + 4)
    bulk = [r for r in server.requests() if r.path == "/_bulk"]
    assert len(bulk) == 1
    assert bulk[0].headers["Content-Type"] == "application/x-ndjson"


async def test_the_index_is_created_with_the_settings_the_versions_need(server, make):
    await make(index_settings={"index.number_of_replicas": 0}, mappings={"dynamic": "true"})
    settings = server.settings("orders")
    assert settings["index.gc_deletes"] == "86400s"
    assert settings["index.number_of_replicas"] == "0"
    create = next(r for r in server.requests() if r.method == "PUT")
    import orjson

    mappings = orjson.loads(create.body)["mappings"]
    assert mappings["properties"]["_fanout"] == {"type": "object", "enabled": False}
    assert mappings["dynamic"] == "true"


async def test_a_replayed_batch_changes_nothing_and_counts_as_stale(server, make):
    sink, context = await make()
    batch = [put("a", BASE + i, i) for i in range(1, 6)]
    assert await sink.send(batch) == {}
    before = server.documents("orders")
    assert await sink.send(batch) == {}
    assert await sink.send(batch[:2]) == {}
    assert server.documents("orders") == before
    assert metric(context, "fanout_opensearch_version_conflicts_total", resolution="stale") == 7
    accepted = [w for w in server.writes() if w.accepted]
    assert [w.version for w in accepted] == [version_of(NOW, BASE + i) for i in range(1, 6)]


async def test_an_older_change_never_overwrites_a_newer_one(server, make):
    sink, _ = await make()
    assert await sink.send([put("a", BASE + 9, 9, created=NOW + 5)]) == {}
    # older by time (and by sequence), e.g. a dead-lettered change redriven later
    assert await sink.send([put("a", BASE + 20, 1, created=NOW + 4)]) == {}
    assert await sink.send([put("a", BASE + 3, 3, created=NOW + 5)]) == {}
    assert body(server.documents("orders")["a"]) == {"pk": "a", "v": 9}


async def test_a_deleted_item_stays_deleted_when_older_changes_are_replayed(server, make):
    sink, context = await make()
    history = [put("a", BASE + 1, 1), put("a", BASE + 2, 2), change("REMOVE", "a", BASE + 3)]
    assert await sink.send(history) == {}
    assert await sink.send(history[:2]) == {}
    assert await sink.send([history[2]]) == {}
    assert "a" not in server.documents("orders")
    assert metric(context, "fanout_opensearch_version_conflicts_total", resolution="stale") == 3


async def test_a_delete_of_a_missing_document_still_leaves_its_version(server, make):
    sink, _ = await make()
    assert await sink.send([change("REMOVE", "ghost", BASE + 5)]) == {}
    assert server.tombstone("orders", "ghost") == version_of(NOW, BASE + 5)
    assert await sink.send([put("ghost", BASE + 4, 4)]) == {}  # older: stays deleted
    assert "ghost" not in server.documents("orders")


async def test_a_wrapped_tie_break_is_settled_by_comparing_the_full_stamps(server, make, caplog):
    sink, context = await make()
    first = BASE - (BASE & TIE_MASK) + TIE_MASK  # low 30 bits all ones
    older, newer = put("a", first, 1), put("a", first + 2, 2)  # same second
    assert version_of(NOW, first + 2) < version_of(NOW, first)  # the tie-break wrapped
    with caplog.at_level(logging.INFO, logger="fanout.sink.search"):
        assert await sink.send([older, newer]) == {}
    doc = server.document("orders", "a")
    assert body(doc.source) == {"pk": "a", "v": 2}
    assert doc.version == version_of(NOW, first)  # written with external_gte at the stored one
    assert metric(context, "fanout_opensearch_version_conflicts_total", resolution="newer") == 1
    assert "opensearch_tie_break_wrapped" in caplog.messages
    # replays of either change are stale now
    assert await sink.send([older]) == {}
    assert await sink.send([newer]) == {}
    assert body(server.documents("orders")["a"]) == {"pk": "a", "v": 2}
    gte = [w for w in server.writes() if w.version_type == "external_gte"]
    assert [(w.status, w.accepted) for w in gte] == [(200, True)]


async def test_a_wrapped_tie_break_against_a_tombstone_brings_the_newer_item_back(server, make):
    sink, _ = await make()
    first = BASE - (BASE & TIE_MASK) + TIE_MASK
    assert await sink.send([change("REMOVE", "a", first), put("a", first + 1, 7)]) == {}
    assert body(server.documents("orders").get("a")) == {"pk": "a", "v": 7}
    # and a delete newer than a live document whose version is larger
    assert await sink.send([put("b", first, 1), change("REMOVE", "b", first + 3)]) == {}
    assert "b" not in server.documents("orders")


async def test_ttl_deletes_delete_by_default_and_can_be_kept(server, make):
    sink, _ = await make()
    assert await sink.send([put("a", BASE + 1, 1), change("REMOVE", "a", BASE + 2, ttl=True)]) == {}
    assert "a" not in server.documents("orders")
    keeper, _ = await make(ttl_deletes="keep", index="kept")
    assert (
        await keeper.send([put("a", BASE + 1, 1), change("REMOVE", "a", BASE + 2, ttl=True)]) == {}
    )
    assert await keeper.send([change("REMOVE", "a", BASE + 3)]) == {}  # a user's delete
    assert server.documents("kept") == {}
    assert (
        await keeper.send([put("b", BASE + 4, 1), change("REMOVE", "b", BASE + 5, ttl=True)]) == {}
    )
    assert body(server.documents("kept")["b"]) == {"pk": "b", "v": 1}


async def test_templates_choose_index_id_and_routing_and_a_moved_item_leaves_its_old_index(
    server, make
):
    sink, _ = await make(index="orders-{region}", document_id="doc-{pk}", routing="{pk}")
    eu, us = {"region": {"S": "EU"}}, {"region": {"S": "us"}}
    assert await sink.send([change("INSERT", "a", BASE + 1, new=eu)]) == {}
    assert list(server.documents("orders-eu")) == ["doc-a"]
    assert server.settings("orders-eu")["index.gc_deletes"] == "86400s"
    assert await sink.send([change("MODIFY", "a", BASE + 2, new=us, old=eu)]) == {}
    assert server.documents("orders-eu") == {}
    assert list(server.documents("orders-us")) == ["doc-a"]
    assert server.document("orders-us", "doc-a").routing == "a"
    assert await sink.send([change("REMOVE", "a", BASE + 3, old=us)]) == {}
    assert server.documents("orders-us") == {}


async def test_include_exclude_and_rename_shape_the_document(server, make):
    sink, _ = await make(
        include=["pk", "v", "secret", "n"], exclude=["secret"], rename={"n": "name"}
    )
    image = {"v": {"N": "1"}, "secret": {"S": "x"}, "n": {"S": "Ada"}, "other": {"S": "y"}}
    assert await sink.send([change("INSERT", "a", BASE + 1, new=image)]) == {}
    assert body(server.documents("orders")["a"]) == {"pk": "a", "v": 1, "name": "Ada"}


async def test_numbers_option_decides_how_numbers_are_written(server, make):
    sink, _ = await make(numbers="string")
    assert await sink.send([change("INSERT", "a", BASE + 1, new={"v": {"N": "1.5"}})]) == {}
    assert body(server.documents("orders")["a"]) == {"pk": "a", "v": "1.5"}


async def test_records_the_sink_cannot_write_are_refused_with_the_reason(server, make):
    sink, _ = await make(document_id="{pk}#{sk}")
    keys_only = change("INSERT", "a", BASE + 1)
    del keys_only["dynamodb"]["NewImage"]
    no_sk = put("b", BASE + 2, 1)
    long_id = change("INSERT", "c" * 600, BASE + 3, new={"sk": {"S": "1"}})
    good = change("INSERT", "d", BASE + 4, new={"sk": {"S": "1"}})
    failures = await sink.send([keys_only, no_sk, long_id, good])
    assert sorted(failures) == [0, 1, 2]
    assert all(not f.retryable for f in failures.values())
    assert "NewImage" in failures[0].reason
    assert "'sk'" in failures[1].reason
    assert "512 bytes" in failures[2].reason
    assert list(server.documents("orders")) == ["d#1"]


async def test_item_errors_map_to_retryable_and_permanent_failures(server, make):
    sink, context = await make()
    server.refuse(lambda doc: doc.get("v") == 2, reason="failed to parse field [v] of type [long]")
    server.reject(predicate=lambda doc: doc.get("v") == 3, retry_after=7)
    batch = [put("a", BASE + 1, 1), put("b", BASE + 2, 2), put("c", BASE + 3, 3)]
    failures = await sink.send(batch)
    assert sorted(failures) == [1, 2]
    assert not failures[1].retryable
    assert "mapper_parsing_exception" in failures[1].reason
    assert "failed to parse field [v]" in failures[1].reason
    assert failures[2].retryable
    assert failures[2].retry_after == 7
    assert "es_rejected_execution_exception" in failures[2].reason
    assert await sink.send([batch[2]]) == {}  # rejected once only
    reasons = ("mapper_parsing_exception", "es_rejected_execution_exception")
    for reason in reasons:
        assert metric(context, "fanout_opensearch_item_failures_total", reason=reason) == 1


@pytest.mark.parametrize(("status", "retry_after"), [(429, 3.0), (503, None)])
async def test_a_whole_request_refused_raises_sink_unavailable(server, make, status, retry_after):
    sink, context = await make()
    server.throttle(1, status=status, retry_after=retry_after)
    with pytest.raises(SinkUnavailable) as caught:
        await sink.send([put("a", BASE + 1, 1)])
    assert caught.value.retry_after == retry_after
    assert metric(context, "fanout_opensearch_bulk_requests_total", outcome="throttled") == 1
    assert await sink.send([put("a", BASE + 1, 1)]) == {}


async def test_bulk_requests_are_bounded_by_count_and_bytes(server, make):
    sink, _ = await make(max_bulk_actions=3)
    assert await sink.send([put(f"k{i}", BASE + i, i) for i in range(10)]) == {}
    sizes = [r.body.count(b"\n") // 2 for r in server.requests() if r.path == "/_bulk"]
    assert sizes == [3, 3, 3, 1]
    bytes_sink, _ = await make(max_bulk_bytes=1024, index="small")
    big = {"pad": {"S": "x" * 200}}  # about 480 bytes an action: two a request
    assert (
        await bytes_sink.send([change("INSERT", f"k{i}", BASE + i, new=big) for i in range(6)])
        == {}
    )
    small = [r for r in server.requests() if r.path == "/_bulk"][4:]
    assert len(small) == 3
    assert all(len(r.body) <= 1024 for r in small)
    assert len(server.documents("small")) == 6


async def test_a_request_too_large_for_the_cluster_is_split_and_a_lone_document_refused(make):
    server = SearchServer(max_content_length=4096)
    await server.start()
    try:
        sink, _ = await make(endpoint=server.url)
        batch = [change("INSERT", f"k{i}", BASE + i, new={"p": {"S": "x" * 900}}) for i in range(8)]
        batch.append(change("INSERT", "huge", BASE + 99, new={"p": {"S": "x" * 5000}}))
        failures = await sink.send(batch)
        assert list(failures) == [8]
        assert not failures[8].retryable
        assert "413" in failures[8].reason
        assert len(server.documents("orders")) == 8
    finally:
        await server.stop()


async def test_a_later_request_failing_fails_only_its_records(server, make):
    sink, _ = await make(max_bulk_actions=2)
    batch = [put(f"k{i}", BASE + i, i) for i in range(5)]

    calls = 0
    original = sink._bulk

    async def flaky(actions):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise aiohttp.ServerDisconnectedError()
        return await original(actions)

    sink._bulk = flaky
    failures = await sink.send(batch)
    assert sorted(failures) == [2, 3, 4]
    assert all(f.retryable for f in failures.values())
    assert sorted(server.documents("orders")) == ["k0", "k1"]


async def test_records_behind_a_retryable_failure_wait_for_it(server, make):
    sink, _ = await make(max_bulk_actions=2)
    server.reject(predicate=lambda doc: doc.get("v") == 1)
    failures = await sink.send([put(f"k{i}", BASE + i, i) for i in range(5)])
    assert sorted(failures) == [1, 2, 3, 4]
    assert "behind a failed record" in failures[3].reason
    assert sorted(server.documents("orders")) == ["k0"]


async def test_an_index_keeping_tombstones_briefly_is_reported_or_raised(server, make, caplog):
    server.create_index("orders", {"index": {"gc_deletes": "60s"}})
    with caplog.at_level(logging.WARNING, logger="fanout.sink.search"):
        _, context = await make()
    assert "opensearch_tombstones_short" in caplog.messages
    assert metric(context, "fanout_opensearch_tombstone_retention_seconds") == 60
    assert server.settings("orders")["index.gc_deletes"] == "60s"
    _, context = await make(update_gc_deletes=True, gc_deletes="2d")
    assert server.settings("orders")["index.gc_deletes"] == "172800s"
    assert metric(context, "fanout_opensearch_tombstone_retention_seconds") == 172800


async def test_the_default_retention_of_an_existing_index_is_read_from_its_defaults(server, make):
    server.create_index("orders")
    _, context = await make(create_index=False, gc_deletes="30s")
    assert metric(context, "fanout_opensearch_tombstone_retention_seconds") == 60


async def test_past_the_tombstone_retention_an_old_change_can_bring_a_document_back(server, make):
    """Why index.gc_deletes matters: the residual risk the sink reports."""
    server.create_index("orders", {"index.gc_deletes": "60s"})
    sink, context = await make()
    then = NOW - 120
    history = [put("a", BASE + 1, 1, created=then), change("REMOVE", "a", BASE + 2, created=then)]
    assert await sink.send(history) == {}
    server.advance(61)
    assert await sink.send(history[:1]) == {}
    assert "a" in server.documents("orders")  # resurrected: what the setting prevents
    assert metric(context, "fanout_opensearch_changes_past_tombstone_retention_total") >= 1


async def test_an_unreachable_cluster_does_not_stop_the_start_and_sends_raise(make):
    sink, context = await make(endpoint="http://127.0.0.1:9")
    with pytest.raises(SinkUnavailable):
        await sink.send([put("a", BASE + 1, 1)])
    assert metric(context, "fanout_opensearch_bulk_requests_total", outcome="failed") == 0


async def test_a_cluster_failing_at_start_only_delays_preparing_the_index(server, make):
    original = server._index.put_index

    def broken(name, body):
        raise RuntimeError("boom")  # the server answers 500

    server._index.put_index = broken
    sink, _ = await make()
    assert server.indexes() == []
    server._index.put_index = original
    assert await sink.send([put("a", BASE + 1, 1)]) == {}
    assert server.settings("orders")["index.gc_deletes"] == "86400s"


async def test_a_cluster_refusing_the_index_fails_the_start(server, make):
    with pytest.raises(OpenSearchError, match="400 illegal_argument_exception"):
        await make(index_settings={"index.number_of_shards": "many"})


# -- authentication and TLS ---------------------------------------------------------------------


async def test_basic_auth_from_the_config_or_the_environment(make, monkeypatch):
    server = SearchServer(username="fanout", password="s3cret")
    await server.start()
    try:
        sink, _ = await make(
            endpoint=server.url, auth={"type": "basic", "username": "fanout", "password": "s3cret"}
        )
        assert await sink.send([put("a", BASE + 1, 1)]) == {}
        monkeypatch.setenv("OPENSEARCH_USERNAME", "fanout")
        monkeypatch.setenv("OPENSEARCH_PASSWORD", "s3cret")
        env_sink, _ = await make(endpoint=server.url, auth={"type": "basic"})
        assert await env_sink.send([put("b", BASE + 2, 1)]) == {}
        with pytest.raises(OpenSearchError, match="401"):
            await make(endpoint=server.url, auth={"type": "basic", "password": "wrong"})
        assert not any("s3cret" in str(r.headers) for r in server.requests())
    finally:
        await server.stop()


def test_basic_auth_without_credentials_fails_the_config_check(monkeypatch):
    monkeypatch.delenv("OPENSEARCH_USERNAME", raising=False)
    monkeypatch.delenv("OPENSEARCH_PASSWORD", raising=False)
    config = OPENSEARCH.config.model_validate(
        {"type": "opensearch", "endpoint": "http://h", "index": "i", "auth": {"type": "basic"}}
    )
    with pytest.raises(ConfigError, match=r"sinks\.search\.auth: .*username"):
        OPENSEARCH.check("search", config, "sinks.search")


@pytest.mark.parametrize("service", ["es", "aoss"])
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//token+with/slashes="])
async def test_sigv4_requests_verify_against_botocore(make, monkeypatch, service, token):
    if token:
        monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    expected = SigV4Expectation("testing", "testing", "eu-west-1", service, token)
    server = SearchServer(sigv4=expected)
    await server.start()
    try:
        auth = {"type": "sigv4", "service": service, "region": "eu-west-1"}
        sink, _ = await make(endpoint=server.url, auth=auth, document_id="{pk}/x y")
        first = BASE - (BASE & TIE_MASK) + TIE_MASK  # a conflict too: _mget is signed as well
        assert await sink.send([put("a", first, 1), put("a", first + 2, 2)]) == {}
        assert body(server.documents("orders")["a/x y"]) == {"pk": "a", "v": 2}
        paths = {(r.method, r.path) for r in server.requests()}
        assert ("POST", "/_bulk") in paths
        assert ("POST", "/_mget") in paths
        assert all(r.status < 400 for r in server.requests())
        for request in server.requests():
            assert ("X-Amz-Content-SHA256" in request.headers) == (service == "aoss")
        wrong = SigV4Expectation("testing", "other", "eu-west-1", service, token)
        strict = SearchServer(sigv4=wrong)
        await strict.start()
        try:
            with pytest.raises(OpenSearchError, match="403"):
                await make(endpoint=strict.url, auth=auth)
        finally:
            await strict.stop()
    finally:
        await server.stop()


async def test_sigv4_takes_the_region_from_the_endpoint(make):
    sink, _ = await make(
        start=False,
        endpoint="https://search-orders-abc.eu-west-1.es.amazonaws.com",
        auth={"type": "sigv4"},
    )
    await sink.transport.start()
    assert sink.transport._signer is not None
    assert sink.transport._signer.region == "eu-west-1"
    assert sink.transport._signer.service == "es"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_is_verified_by_default_and_a_ca_bundle_can_be_trusted(make, tmp_path):
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    backend = SearchServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", backend._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        strict, _ = await make(endpoint=url)  # the start only warns: the cluster may come up
        with pytest.raises(SinkUnavailable, match="certificate"):
            await strict.send([put("a", BASE + 1, 1)])
        trusting, _ = await make(endpoint=url, ca_bundle=str(cert))
        assert await trusting.send([put("a", BASE + 1, 1)]) == {}
        careless, _ = await make(endpoint=url, verify_tls=False)
        assert await careless.send([put("b", BASE + 2, 1)]) == {}
        assert sorted(backend.documents("orders")) == ["a", "b"]
        with pytest.raises(ConfigError, match="ca_bundle"):
            await make(endpoint=url, ca_bundle=str(tmp_path / "missing.pem"))
    finally:
        await runner.cleanup()
