"""Every sink type the registry offers keeps the sink contract (fanout.testing.contract).

The types come from the ``fanout.sinks`` entry points, plus one defined only here and
installed for the test as a distribution of its own; a type without a contract target below
fails.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import orjson
import pytest

from fanout.config import SinkConfig
from fanout.records import Record
from fanout.sink import Failure, Failures, SinkContext, SinkRegistry, SinkType
from fanout.testing.contract import CHECKS, ContractTarget, NotApplicable
from fanout.testing.searchserver import SearchServer, ServerThread
from tests.contract import contract_handlers
from tests.contract.notify_targets import NOTIFY_TARGETS

# -- a sink type defined only in this test, found through its own entry point ------------

PROBE = "contract-probe"
PROBE_ARRIVED: list[str] = []


class ProbeConfig(SinkConfig):
    type: Literal["contract-probe"] = "contract-probe"
    fail_start: bool = False


class ProbeSink:
    """Keeps what it receives in memory; refuses records marked ``poison``; uses the shared
    HTTP session the way an HTTP sink would (so closing the context is exercised)."""

    ordered = False

    def __init__(self, name: str, config: ProbeConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.started = False

    async def start(self) -> None:
        self.context.http.session()
        if self.config.fail_start:
            raise RuntimeError("the probe refuses to start")
        self.started = True

    async def send(self, batch: Sequence[Record]) -> Failures:
        assert self.started
        await anyio.sleep(0)  # let concurrent sends interleave
        failures: Failures = {}
        for i, record in enumerate(batch):
            if "poison" in record["dynamodb"]["NewImage"]:
                failures[i] = Failure(False, "poisoned")
            else:
                PROBE_ARRIVED.append(record["eventID"])
        self.context.metrics.build_info.info({"probe": "sent"})
        return failures

    async def stop(self) -> None:
        self.started = False


def _build_probe(name: str, config: ProbeConfig, context: SinkContext) -> ProbeSink:
    return ProbeSink(name, config, context)


PROBE_TYPE: SinkType[ProbeConfig] = SinkType(ProbeConfig, _build_probe)


@contextlib.contextmanager
def probe_distribution(site: Path) -> Iterator[None]:
    """A distribution ``fanout-contract-probe`` whose entry point offers PROBE, importable
    from ``site`` (put on sys.path) until the block ends."""
    info = site / "fanout_contract_probe-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fanout-contract-probe\nVersion: 0.0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[fanout.sinks]\n{PROBE} = {__name__}:PROBE_TYPE\n")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        importlib.invalidate_caches()
        shutil.rmtree(info)


@pytest.fixture
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SinkRegistry]:
    """The sink types of the installed distributions plus the probe distribution's."""
    with probe_distribution(tmp_path_factory.mktemp("site")):
        yield SinkRegistry()


# -- contract targets, one per sink type -------------------------------------------------


def _poisoned(record: Record) -> Record:
    record["dynamodb"]["NewImage"]["poison"] = {"BOOL": True}
    return record


def _json_lines(data: bytes) -> list[str]:
    return [orjson.loads(line)["eventID"] for line in data.splitlines() if line]


def _file_target(
    sink_type: SinkType[Any], tmp_path: Path, mp: pytest.MonkeyPatch
) -> ContractTarget:
    path = tmp_path / "out" / "records.jsonl"
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")

    def arrived() -> list[str]:
        return _json_lines(path.read_bytes()) if path.exists() else []

    return ContractTarget(
        sink_type,
        {"type": "file", "path": str(path)},
        arrived,
        broken_options={"type": "file", "path": str(blocker / "records.jsonl")},
    )


def _stdout_target(
    sink_type: SinkType[Any], tmp_path: Path, mp: pytest.MonkeyPatch
) -> ContractTarget:
    # The sink writes to sys.stdout.buffer: give it one of our own for the test.
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    mp.setattr(sys, "stdout", out)
    buffer = out.buffer
    assert isinstance(buffer, io.BytesIO)
    return ContractTarget(sink_type, {"type": "stdout"}, lambda: _json_lines(buffer.getvalue()))


def _handler_target(
    sink_type: SinkType[Any], tmp_path: Path, mp: pytest.MonkeyPatch
) -> ContractTarget:
    module = contract_handlers.__name__
    return ContractTarget(
        sink_type,
        {"type": "handler", "handler": f"{module}:receive"},
        lambda: contract_handlers.ARRIVED.get("contract", []),
        broken_options={"type": "handler", "handler": f"{module}:missing"},
        poison=_poisoned,
    )


def _probe_target(
    sink_type: SinkType[Any], tmp_path: Path, mp: pytest.MonkeyPatch
) -> ContractTarget:
    return ContractTarget(
        sink_type,
        {"type": PROBE},
        lambda: PROBE_ARRIVED,
        broken_options={"type": PROBE, "fail_start": True},
        poison=_poisoned,
    )


# The opensearch target's stand-in cluster, one for the module (each target gets an index).
_SEARCH: list[SearchServer] = []


@pytest.fixture(scope="module", autouse=True)
def search_server() -> Iterator[SearchServer]:
    with ServerThread(SearchServer(username="contract", password="s3cret")) as server:
        server.refuse(lambda doc: "poison" in doc)
        _SEARCH.append(server)
        yield server
        _SEARCH.remove(server)


def _opensearch_target(
    sink_type: SinkType[Any], tmp_path: Path, mp: pytest.MonkeyPatch
) -> ContractTarget:
    server = _SEARCH[0]
    auth = {"type": "basic", "username": "contract", "password": "s3cret"}
    options: dict[str, Any] = {
        "type": "opensearch",
        "endpoint": server.url,
        "index": f"contract-{uuid.uuid4().hex[:12]}",
        "document_id": "{pk}#{sk}",
        "auth": auth,
    }
    return ContractTarget(
        sink_type,
        options,
        server.event_ids,
        broken_options={**options, "auth": {**auth, "password": "wrong"}},
        poison=_poisoned,
    )


# DynamoDB Local's endpoint for the aggregate target; started only for its cases.
_DYNAMODB: list[str] = []


@pytest.fixture(autouse=True)
def dynamodb_for_aggregate(request: pytest.FixtureRequest) -> None:
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("kind") == "aggregate":
        _DYNAMODB[:] = [request.getfixturevalue("dynamodb_local").endpoint_url]


def _aggregate_target(
    sink_type: SinkType[Any], tmp_path: Path, mp: pytest.MonkeyPatch
) -> ContractTarget:
    import boto3

    (endpoint,) = _DYNAMODB
    table = f"contract-{uuid.uuid4().hex[:12]}"
    options: dict[str, Any] = {
        "type": "aggregate",
        "table": table,
        "group_by": ["status"],
        "measures": {"orders": "count", "total": {"sum": "total"}},
        "region": "us-east-1",
        "endpoint_url": endpoint,
        "create_table": True,
    }
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")

    def arrived() -> list[str]:
        # Each contract record is its own item: its state row names the change applied.
        pages = client.get_paginator("scan").paginate(
            TableName=f"{table}-fanout-state", ConsistentRead=True
        )
        return [row["event"]["S"] for page in pages for row in page["Items"]]

    def poisoned(record: Record) -> Record:
        # A group value DynamoDB cannot take as a partition key (over 2048 bytes).
        record["dynamodb"]["NewImage"]["status"] = {"S": "x" * 3000}
        return record

    return ContractTarget(
        sink_type,
        options,
        arrived,
        broken_options={**options, "table": f"missing-{table}", "create_table": False},
        poison=poisoned,
    )


TARGETS: dict[str, Callable[[SinkType[Any], Path, pytest.MonkeyPatch], ContractTarget]] = {
    "aggregate": _aggregate_target,
    "file": _file_target,
    "stdout": _stdout_target,
    "handler": _handler_target,
    "opensearch": _opensearch_target,
    PROBE: _probe_target,
}

# Targets that need service fixtures (moto, a local receiver): made from the test's request.
SERVICE_TARGETS: dict[
    str, Callable[[SinkType[Any], Path, pytest.FixtureRequest], ContractTarget]
] = {**NOTIFY_TARGETS}

# Collected from what is installed now, so a sink type added to pyproject.toml without a
# target above is a failing test, not a missing one.
KINDS = sorted({*SinkRegistry(), PROBE})


def test_every_sink_type_has_a_contract_target(registry: SinkRegistry) -> None:
    assert PROBE in registry
    missing = sorted(set(registry) - set(TARGETS) - set(SERVICE_TARGETS))
    assert not missing, f"sink types without a contract target in {__file__}: {missing}"


def test_the_test_only_sink_type_comes_and_goes_with_its_distribution(tmp_path: Path) -> None:
    assert PROBE not in SinkRegistry()
    with probe_distribution(tmp_path):
        found = SinkRegistry()
        assert PROBE in found
        assert found[PROBE] is PROBE_TYPE
    assert PROBE not in SinkRegistry()
    assert str(tmp_path) not in sys.path


# Checks that cannot apply to a target, and why. They are asserted to report that, never
# skipped; every other (type, check) pair must pass.
NOT_APPLICABLE = {
    ("file", "refused_record"): "a file takes any record",
    ("stdout", "refused_record"): "standard output takes any record",
    ("stdout", "stop_after_failed_start"): "no option makes stdout fail to start",
    ("handler", "records_not_mutated"): "a handler may change its event: the worker gives "
    "it records of its own (tests/unit/test_private_records.py)",
}
CASES = [
    pytest.param(kind, check, id=f"{kind}-{check.__name__}")
    for kind in KINDS
    for check in CHECKS
    if (kind, check.__name__) not in NOT_APPLICABLE
]


def _target(
    kind: str,
    registry: SinkRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> ContractTarget:
    service = SERVICE_TARGETS.get(kind)
    if service is not None:
        return service(registry[kind], tmp_path, request)
    make = TARGETS.get(kind)
    if make is None:
        pytest.fail(f"sink type {kind!r} has no contract target in TARGETS")
    return make(registry[kind], tmp_path, monkeypatch)


@pytest.mark.parametrize(("kind", "check"), CASES)
async def test_sink_type_keeps_the_contract(
    kind: str,
    check: Callable[[ContractTarget], Any],
    registry: SinkRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    await check(_target(kind, registry, tmp_path, monkeypatch, request))


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_a_handler_in_worker_processes_keeps_the_contract(
    check: Callable[[ContractTarget], Any],
    registry: SinkRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "arrived.txt"
    monkeypatch.setenv("FANOUT_CONTRACT_OUT", str(out))
    module = contract_handlers.__name__
    options = {"type": "handler", "isolation": "process", "max_concurrency": 3}
    target = ContractTarget(
        registry["handler"],
        {**options, "handler": f"{module}:receive_in_a_worker_process"},
        lambda: out.read_text().split() if out.exists() else [],
        broken_options={**options, "handler": f"{module}:missing"},
        poison=_poisoned,
    )
    await check(target)


@pytest.mark.parametrize(("kind", "name"), sorted(NOT_APPLICABLE))
async def test_checks_that_cannot_apply_say_so(
    kind: str,
    name: str,
    registry: SinkRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    (check,) = [c for c in CHECKS if c.__name__ == name]
    with pytest.raises(NotApplicable):
        await check(_target(kind, registry, tmp_path, monkeypatch, request))
