"""The sink contract suite catches each way a sink can break the contract."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import pytest

from fanout.config import SinkConfig
from fanout.records import Record
from fanout.sink import Failure, Failures, SinkContext, SinkType
from fanout.testing import contract
from fanout.testing.contract import ContractTarget, ContractViolation, NotApplicable

Flaw = Literal[
    "none",
    "mutates",
    "bad_index",
    "bool_index",
    "not_failure",
    "raises",
    "raises_on_refusal",
    "loses",
    "invents",
    "stop_twice",
    "stop_unstarted",
    "empty",
    "start_never_fails",
    "wrong_name",
]


class FlawedConfig(SinkConfig):
    type: Literal["flawed"] = "flawed"
    flaw: Flaw = "none"
    fail_start: bool = False


class FlawedSink:
    """An in-memory sink that breaks the contract in the one way its config says."""

    ordered = True

    def __init__(self, name: str, config: FlawedConfig, arrived: list[str]) -> None:
        self.name = "other" if config.flaw == "wrong_name" else name
        self.flaw = config.flaw
        self.fail_start = config.fail_start and config.flaw != "start_never_fails"
        self.arrived = arrived
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError("broken")
        self.started = True

    async def send(self, batch: Sequence[Record]) -> Failures:
        flaw = self.flaw
        if flaw == "empty" and not batch:
            raise ValueError("empty batch")
        failures: Failures = {}
        for i, record in enumerate(batch):
            if "poison" in record["dynamodb"]["NewImage"]:
                if flaw == "raises_on_refusal":
                    raise ValueError("refused")
                failures[i] = Failure(False, "refused")
            elif not (flaw == "loses" and i == 1):
                self.arrived.append(record["eventID"])
        if flaw == "invents" and batch:
            self.arrived.append(batch[0]["eventID"] + "-extra")
        if flaw == "mutates" and batch:
            batch[0]["dynamodb"]["NewImage"]["touched"] = {"BOOL": True}
        if flaw == "raises":
            raise ConnectionError("down")
        result: dict[Any, Any] = failures
        if flaw == "bad_index":
            result = {len(batch): Failure(True, "x")}
        elif flaw == "bool_index":
            result = {True: Failure(True, "x")}
        elif flaw == "not_failure" and batch:
            result = {0: "failed"}
        return result

    async def stop(self) -> None:
        if self.flaw == "stop_unstarted" and not self.started:
            raise RuntimeError("never started")
        if self.flaw == "stop_twice" and self.stopped:
            raise RuntimeError("already stopped")
        self.stopped = True


def target(flaw: Flaw, *, poison: bool = True) -> ContractTarget:
    arrived: list[str] = []

    def build(name: str, config: FlawedConfig, context: SinkContext) -> FlawedSink:
        return FlawedSink(name, config, arrived)

    return ContractTarget(
        SinkType(FlawedConfig, build),
        {"type": "flawed", "flaw": flaw},
        lambda: arrived,
        broken_options={"type": "flawed", "flaw": flaw, "fail_start": True},
        poison=(lambda r: {**r, "dynamodb": {**r["dynamodb"], "NewImage": {"poison": 1}}})
        if poison
        else None,
        concurrency=5,
        batch_size=4,
    )


async def test_a_sink_that_keeps_the_contract_passes_every_check() -> None:
    assert await contract.check_sink(target("none")) == []


async def test_checks_that_need_what_a_target_lacks_are_not_applicable() -> None:
    bare = target("none", poison=False)
    bare = ContractTarget(bare.sink_type, bare.options, bare.arrived)
    assert await contract.check_sink(bare) == ["stop_after_failed_start", "refused_record"]
    with pytest.raises(NotApplicable):
        await contract.refused_record(bare)


Check = Callable[[ContractTarget], Awaitable[None]]


@pytest.mark.parametrize(
    ("flaw", "check", "message"),
    [
        ("mutates", contract.records_not_mutated, "changed the records"),
        ("bad_index", contract.lifecycle, "index 4 for a batch of 4"),
        ("bool_index", contract.lifecycle, "keys are batch indexes"),
        ("not_failure", contract.lifecycle, "not a Failure"),
        ("raises", contract.lifecycle, "exceptions are for whole-batch failures only"),
        ("raises", contract.concurrent_sends, "raised ConnectionError"),
        ("raises_on_refusal", contract.refused_record, "raised ValueError"),
        ("loses", contract.lifecycle, "have not arrived"),
        ("loses", contract.concurrent_sends, "have not arrived"),
        ("invents", contract.lifecycle, "never sent arrived"),
        ("stop_twice", contract.lifecycle, "second stop() raised"),
        ("stop_unstarted", contract.stop_without_start, "first stop() raised"),
        ("stop_unstarted", contract.stop_after_failed_start, "first stop() raised"),
        ("empty", contract.empty_batch, "send() of 0 records"),
        ("start_never_fails", contract.stop_after_failed_start, "did not fail"),
        ("wrong_name", contract.lifecycle, "sink.name is 'other'"),
    ],
)
async def test_each_broken_rule_is_reported(flaw: Flaw, check: Check, message: str) -> None:
    with pytest.raises(ContractViolation, match=re.escape(message)):
        await check(target(flaw))


async def test_a_refusal_not_reported_at_its_index_is_a_violation() -> None:
    flawless = target("none")
    silent = ContractTarget(
        flawless.sink_type, flawless.options, flawless.arrived, poison=lambda r: r
    )
    with pytest.raises(ContractViolation, match="not reported as a Failure"):
        await contract.refused_record(silent)


async def test_invalid_options_are_reported_with_the_sink_path() -> None:
    flawless = target("none")
    bad = ContractTarget(flawless.sink_type, {"type": "flawed", "flaw": "??"}, flawless.arrived)
    with pytest.raises(ContractViolation, match=r"sinks\.contract: options are not valid"):
        await contract.lifecycle(bad)


def test_records_are_realistic_and_unique() -> None:
    records = contract.make_records(3, tag="t", shard=2) + contract.make_records(3, tag="t")
    assert len({r["eventID"] for r in records}) == 6
    assert len({r["dynamodb"]["SequenceNumber"] for r in records}) == 6
    first = records[0]
    assert first["eventID"] == "t-2-0"
    assert set(first) == {
        "eventID",
        "eventName",
        "eventVersion",
        "eventSource",
        "awsRegion",
        "eventSourceARN",
        "dynamodb",
    }
    assert first["dynamodb"]["Keys"] == {"pk": {"S": "item#2-0"}, "sk": {"N": "0"}}
