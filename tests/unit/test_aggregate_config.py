from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from fanout.cli import main
from fanout.config import build_config
from fanout.errors import ConfigError
from sinks.aggregate.config import AggregateSinkConfig, stream_table

ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/Orders/stream/2026-01-01T00:00:00.000"


def settings(sink: dict[str, Any], **streams: dict[str, Any]) -> dict[str, Any]:
    base = {"type": "aggregate", "group_by": ["customer"], "measures": {"orders": "count"}}
    return {
        "streams": streams or {"orders": {"table": "Orders", "region": "eu-west-1"}},
        "sinks": {"totals": {**base, **sink}},
    }


def test_the_documented_example_is_valid():
    config = build_config(
        settings(
            {
                "table": "OrderTotals",
                "create_table": True,
                "window": "none",
                "measures": {"orders": "count", "revenue": {"sum": "amount"}},
            }
        )
    )
    cfg = config.sinks["totals"]
    assert isinstance(cfg, AggregateSinkConfig)
    assert cfg.window_seconds is None
    assert cfg.state_table_name == "OrderTotals-fanout-state"
    assert cfg.measures["orders"] == "count"


@pytest.mark.parametrize(
    ("window", "seconds"), [("1h", 3600), ("1d", 86400), ("1m", 60), (900, 900), (None, None)]
)
def test_windows_are_whole_seconds_or_none(window, seconds):
    cfg = AggregateSinkConfig.model_validate(
        {"type": "aggregate", "table": "T12", "group_by": ["a"], "measures": {"n": "count"}}
        | {"window": window}
    )
    assert cfg.window_seconds == seconds


@pytest.mark.parametrize(
    ("options", "path", "words"),
    [
        ({"table": "Totals", "window": "90ms"}, "sinks.totals.window", "whole number"),
        ({"table": "Totals", "window": "weekly"}, "sinks.totals.window", "invalid duration"),
        ({"table": "x"}, "sinks.totals.table", "not a DynamoDB table name"),
        ({"table": "Totals", "group_by": []}, "sinks.totals.group_by", "at least 1"),
        ({"table": "Totals", "group_by": ["a", "a"]}, "sinks.totals.group_by", "twice"),
        ({"table": "Totals", "measures": {}}, "sinks.totals.measures", "at least 1"),
        ({"table": "Totals", "measures": {"group": "count"}}, "sinks.totals.measures", "key"),
        (
            {"table": "Totals", "measures": {"fanout:items": "count"}},
            "sinks.totals.measures",
            "bookkeeping",
        ),
        ({"table": "Totals", "measures": {"n": {"avg": "x"}}}, "sinks.totals.measures.n", ""),
        ({"table": "Totals", "state_table": "Totals"}, "sinks.totals", "must not be the target"),
        ({"table": "Totals", "colour": "red"}, "sinks.totals.colour", "Extra inputs"),
    ],
)
def test_invalid_options_name_the_field(options, path, words):
    with pytest.raises(ConfigError) as info:
        build_config(settings(options))
    assert path in str(info.value)
    assert words in str(info.value)


def test_a_target_that_is_its_own_source_fails_with_a_clear_message():
    with pytest.raises(ConfigError) as info:
        build_config(settings({"table": "Orders"}))
    assert info.value.path == "sinks.totals.table"
    message = str(info.value)
    assert "'Orders' is also the source of stream 'orders'" in message
    assert "re-trigger itself" in message
    assert "allow_source_target: true" in message


def test_a_state_table_that_is_a_source_fails_too():
    with pytest.raises(ConfigError) as info:
        build_config(settings({"table": "Totals", "state_table": "Orders"}))
    assert info.value.path == "sinks.totals.state_table"


def test_a_source_given_by_stream_arn_is_recognised():
    with pytest.raises(ConfigError, match="also the source of stream 'orders'"):
        build_config(settings({"table": "Orders"}, orders={"stream_arn": ARN}))
    # the same name in another region is another table
    build_config(settings({"table": "Orders", "region": "us-east-1"}, orders={"stream_arn": ARN}))
    assert stream_table(ARN) == ("eu-west-1", "Orders")
    assert stream_table("not an arn") is None


def test_the_same_name_at_another_endpoint_is_another_table():
    streams = {"table": "Orders", "endpoint_url": "http://127.0.0.1:8000"}
    build_config(
        settings({"table": "Orders", "endpoint_url": "http://127.0.0.1:9000"}, orders=streams)
    )
    with pytest.raises(ConfigError):
        build_config(settings({"table": "Orders"}, orders=streams))


def test_allow_source_target_lets_it_through():
    config = build_config(settings({"table": "Orders", "allow_source_target": True}))
    assert config.sinks["totals"].allow_source_target  # type: ignore[attr-defined]


def test_two_aggregates_cannot_share_a_table():
    data = settings({"table": "Totals"})
    data["sinks"]["again"] = dict(data["sinks"]["totals"])
    with pytest.raises(ConfigError, match="also used by the aggregate sink"):
        build_config(data)
    data["sinks"]["again"]["table"] = "Other"
    data["sinks"]["again"]["state_table"] = "Totals-fanout-state"
    with pytest.raises(ConfigError, match="also used by the aggregate sink"):
        build_config(data)
    data["sinks"]["again"]["state_table"] = "Other-state"
    build_config(data)


def test_fanout_validate_rejects_a_loop_with_exit_code_2(tmp_path: Path, capsys):
    config = tmp_path / "fanout.yaml"
    config.write_text(
        textwrap.dedent(
            """
            streams:
              orders: {table: Orders}
            sinks:
              order_totals:
                type: aggregate
                table: Orders
                group_by: [customer_id]
                window: none
                measures:
                  orders: count
                  revenue: {sum: amount}
            """
        )
    )
    assert main(["validate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "sinks.order_totals.table" in err
    assert "also the source of stream 'orders'" in err
