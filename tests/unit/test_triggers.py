"""Trigger files as fanout configs: each event source mapping parameter, what is noted, what
fails (every problem at once), and ``fanout import``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from fanout.cli import main
from fanout.config import build_config
from fanout.errors import ConfigError
from fanout.triggers import import_trigger_file, parse_file
from fanout.triggers.model import lambda_handler

INTEGRATION = Path(__file__).parents[1] / "integration" / "triggers"


def triggers(tmp_path: Path, spec: dict[str, Any]) -> Path:
    path = tmp_path / "triggers.json"
    path.write_text(json.dumps(spec))
    return path


def imported(path: Path, table: str | None = "Orders") -> dict[str, Any]:
    result = import_trigger_file(path, table=table)
    assert result is not None
    return result.config


def one_sink(path: Path, table: str | None = "Orders") -> dict[str, Any]:
    (sink,) = imported(path, table)["sinks"].values()
    assert isinstance(sink, dict)
    return sink


def errors_of(path: Path, table: str | None = "Orders") -> list[str]:
    with pytest.raises(ConfigError) as info:
        import_trigger_file(path, table=table)
    return str(info.value).splitlines()


@pytest.mark.parametrize(
    ("given", "handler"),
    [
        ("app.badges.process", "app.badges:process"),
        ("app/badges.process", "app.badges:process"),
        ("src/handlers/badges.award", "src.handlers.badges:award"),
        ("index.handler", "index:handler"),
        ("pkg.mod:fn", "pkg.mod:fn"),
    ],
)
def test_lambda_handler_strings_become_import_paths(given, handler):
    assert lambda_handler(given) == handler


def test_a_handler_without_a_function_is_refused():
    with pytest.raises(ValueError, match="not a Lambda handler"):
        lambda_handler("nodots")


def test_every_event_source_mapping_parameter_maps_to_an_option(tmp_path):
    path = triggers(
        tmp_path,
        {
            "t": {
                "handler": "app.h.run",
                "BatchSize": 500,
                "MaximumBatchingWindowInSeconds": 5,
                "StartingPosition": "LATEST",
                "FilterCriteria": {"Filters": [{"Pattern": '{"eventName": ["REMOVE"]}'}]},
                "MaximumRetryAttempts": 0,
                "MaximumRecordAgeInSeconds": 120,
                "BisectBatchOnFunctionError": False,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                "ParallelizationFactor": 4,
                "TumblingWindowInSeconds": 0,
                "DestinationConfig": {
                    "OnFailure": {"Destination": "arn:aws:sqs:eu-west-1:123456789012:dlq"}
                },
            }
        },
    )
    config = imported(path)
    assert config["streams"] == {"Orders": {"table": "Orders", "starting_position": "LATEST"}}
    assert one_sink(path) == {
        "type": "handler",
        "handler": "app.h:run",
        "streams": ["Orders"],
        "batch_size": 500,
        "batch_window": 5,
        "filters": [{"eventName": ["REMOVE"]}],
        "retry": {"max_attempts": 1, "max_record_age": 120, "bisect_on_error": False},
        "parallelization_factor": 4,
        "dead_letter": {
            "type": "sqs",
            "queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/dlq",
            "region": "eu-west-1",
        },
    }


def test_unbounded_retries_stay_unbounded_and_unset_ones_keep_fanouts_bounds(tmp_path):
    unbounded = one_sink(
        triggers(
            tmp_path,
            {"t": {"handler": "a.b", "MaximumRetryAttempts": -1, "MaximumRecordAgeInSeconds": -1}},
        )
    )
    assert unbounded["retry"] == {"max_attempts": -1, "max_record_age": -1}
    assert "retry" not in one_sink(triggers(tmp_path, {"t": {"handler": "a.b"}}))


def test_triggers_json_fields_map_and_lambda_only_ones_are_noted_once(tmp_path):
    path = triggers(
        tmp_path,
        {
            "one": {"handler": "a.b", "reserved_concurrency": 3, "memory_size": 256},
            "two": {"handler": "a.c", "memory_size": 512, "uses_vpc": True, "timeout": 60},
            "off": {"handler": "a.d", "enabled": False},
            "throttled": {"handler": "a.e", "reserved_concurrency": 0},
        },
    )
    result = import_trigger_file(path, table="Orders")
    assert result is not None
    sinks = result.config["sinks"]
    assert set(sinks) == {"one", "two"}
    assert sinks["one"]["max_in_flight"] == 3
    assert sinks["two"]["timeout"] == 60
    assert sinks["two"]["memory_limit_in_mb"] == 512
    memory = [n for n in result.notes if n.startswith("memory_size")]
    assert len(memory) == 1
    assert memory[0].endswith("(one, two)")
    assert any(n.startswith("uses_vpc") and n.endswith("(two)") for n in result.notes)
    assert any("disabled" in n and "(off)" in n for n in result.notes)
    assert any("reserved concurrency of 0" in n and "(throttled)" in n for n in result.notes)


def test_tumbling_window_in_seconds_maps_to_tumbling_window(tmp_path):
    path = triggers(tmp_path, {"t": {"handler": "app.h.run", "TumblingWindowInSeconds": 30}})
    assert one_sink(path)["tumbling_window"] == 30


def test_every_problem_is_reported_at_once(tmp_path):
    path = triggers(
        tmp_path,
        {
            "t": {
                "handler": "a.b",
                "TumblingWindowInSeconds": 901,
                "on_failure": "arn:aws:sns:eu-west-1:123456789012:topic",
                "ScalingConfig": {"MaximumConcurrency": 2},
                "BatchSize": 0,
                "memroy_size": 128,
                "FunctionResponseTypes": ["Sometimes"],
            }
        },
    )
    lines = errors_of(path)
    assert len(lines) == 6, lines
    text = "\n".join(lines)
    assert "t.TumblingWindowInSeconds: 901 is not between 0 and 900" in text
    assert "on-failure destination of sns" in text
    assert "t.ScalingConfig: is not a parameter of DynamoDB stream" in text
    assert "t.BatchSize: 0 is not between 1 and 10000" in text
    assert "t.memroy_size: unknown trigger setting" in text
    assert "unknown function response type 'Sometimes'" in text


def test_a_file_that_names_no_table_needs_table(tmp_path):
    path = triggers(tmp_path, {"t": {"handler": "a.b"}})
    assert errors_of(path, table=None) == ["t: the triggers.json names no table: pass --table NAME"]
    spec = {"t": {"handler": "a.b", "table": "Carts"}}
    assert imported(triggers(tmp_path, spec), None)["streams"] == {"Carts": {"table": "Carts"}}


def test_a_stream_arn_names_the_stream_and_its_region(tmp_path):
    arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/Orders/stream/2024-01-01T00:00:00.000"
    config = imported(triggers(tmp_path, {"t": {"handler": "a.b", "stream_arn": arn}}), None)
    assert config["streams"] == {"Orders": {"stream_arn": arn, "region": "eu-west-1"}}


def template(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_cloudformation_mapping_finds_its_function_and_table(tmp_path):
    path = template(
        tmp_path,
        """
        AWSTemplateFormatVersion: "2010-09-09"
        Parameters:
          Stage: {Type: String, Default: prod}
        Resources:
          Table:
            Type: AWS::DynamoDB::Table
            Properties: {TableName: !Sub "orders-${Stage}"}
          Fn:
            Type: AWS::Lambda::Function
            Properties:
              FunctionName: order-events
              Handler: app/orders.handle
              Runtime: python3.12
              Timeout: 45
              Code: {S3Bucket: b, S3Key: k}
              Environment: {Variables: {TOKEN: x, TABLE: y}}
              Layers: [arn:aws:lambda:eu-west-1:123456789012:layer:deps:1]
          Mapping:
            Type: AWS::Lambda::EventSourceMapping
            Properties:
              FunctionName: !GetAtt Fn.Arn
              EventSourceArn: !GetAtt Table.StreamArn
              StartingPosition: TRIM_HORIZON
              BatchSize: 100
              MetricsConfig: {Metrics: [EventCount]}
        """,
    )
    result = import_trigger_file(path)
    assert result is not None
    assert result.config == {
        "streams": {"orders-prod": {"table": "orders-prod", "starting_position": "TRIM_HORIZON"}},
        "sinks": {
            "Fn": {
                "type": "handler",
                "handler": "app.orders:handle",
                "streams": ["orders-prod"],
                "function_name": "order-events",
                "timeout": 45,
                "batch_size": 100,
            }
        },
    }
    notes = "\n".join(result.notes)
    assert "TABLE, TOKEN" in notes
    assert "layers are not loaded" in notes
    assert "MetricsConfig is ignored" in notes
    assert "the code is in S3" in notes


def test_a_queue_only_the_stack_can_place_is_named(tmp_path):
    path = template(
        tmp_path,
        """
        Resources:
          Dlq:
            Type: AWS::SQS::Queue
            Properties: {QueueName: orders-dlq}
          Fn:
            Type: AWS::Serverless::Function
            Properties:
              Handler: app.run
              Events:
                S:
                  Type: DynamoDB
                  Properties:
                    Stream: arn:aws:dynamodb:eu-west-1:123456789012:table/T/stream/2024
                    DestinationConfig: {OnFailure: {Destination: !GetAtt Dlq.Arn}}
          Other:
            Type: AWS::Serverless::Function
            Properties:
              Handler: app.other
              Events:
                S:
                  Type: DynamoDB
                  Properties:
                    Stream: arn:aws:dynamodb:eu-west-1:123456789012:table/T/stream/2024
                    DestinationConfig:
                      OnFailure:
                        Destination: !Sub "arn:aws:sqs:eu-west-1:${AWS::AccountId}:other-dlq"
        """,
    )
    sinks = imported(path, None)["sinks"]
    assert sinks["Fn"]["dead_letter"] == {"type": "sqs", "queue_name": "orders-dlq"}
    assert sinks["Other"]["dead_letter"] == {
        "type": "sqs",
        "queue_name": "other-dlq",
        "region": "eu-west-1",
    }


def test_what_a_template_cannot_tell_is_named(tmp_path):
    path = template(
        tmp_path,
        """
        Resources:
          Table:
            Type: AWS::DynamoDB::Table
            Properties: {}
          Node:
            Type: AWS::Lambda::Function
            Properties: {Handler: index.handler, Runtime: nodejs20.x, Code: {ZipFile: "x"}}
          Inline:
            Type: AWS::Lambda::Function
            Properties: {Handler: index.handler, Runtime: python3.12, Code: {ZipFile: "x"}}
          M1:
            Type: AWS::Lambda::EventSourceMapping
            Properties:
              FunctionName: !Ref Node
              EventSourceArn: !GetAtt Table.StreamArn
          M2:
            Type: AWS::Lambda::EventSourceMapping
            Properties:
              FunctionName: !Ref Inline
              EventSourceArn: !GetAtt Table.StreamArn
              StartingPosition: LATEST
          M3:
            Type: AWS::Lambda::EventSourceMapping
            Properties:
              FunctionName: elsewhere
              EventSourceArn: !GetAtt Table.StreamArn
        """,
    )
    text = "\n".join(errors_of(path, table=None))
    assert (
        "Resources.M1.Properties.runtime: fanout runs Python handlers; this function is nodejs20.x"
        in text
    )
    assert "Resources.Inline.Properties.Code.ZipFile: inline code cannot be imported" in text
    assert (
        "Resources.M2.Properties.EventSourceArn: the template does not name the table: "
        "pass --table NAME" in text
    )
    assert (
        "Resources.M3.Properties.FunctionName: 'elsewhere' is not a function of this template"
        in text
    )


def test_one_stream_has_one_starting_position(tmp_path):
    path = triggers(
        tmp_path,
        {
            "a": {"handler": "a.b", "starting_position": "LATEST"},
            "b": {"handler": "a.c", "starting_position": "TRIM_HORIZON"},
        },
    )
    (line,) = errors_of(path)
    assert line.startswith("b.StartingPosition: TRIM_HORIZON, but a read Orders from LATEST")


def test_serverless_variables_it_cannot_resolve_need_table(tmp_path):
    path = tmp_path / "serverless.yml"
    path.write_text(
        textwrap.dedent(
            """
            service: s
            provider: {name: aws, runtime: python3.11}
            functions:
              f:
                handler: h.run
                events:
                  - stream: ${ssm:/orders/stream-arn}
                  - stream: {type: kinesis, arn: arn:aws:kinesis:eu-west-1:123456789012:stream/x}
            """
        )
    )
    assert "pass --table NAME" in errors_of(path, table=None)[0]
    config = imported(path, "Orders")
    assert list(config["sinks"]) == ["f-0"]


def test_files_that_are_not_trigger_files_are_read_as_configs(tmp_path):
    config = tmp_path / "fanout.yaml"
    config.write_text("streams: {o: {table: T}}\nsinks: {a: {type: stdout}}\n")
    assert parse_file(config) is None
    assert import_trigger_file(config) is None


def test_fanout_import_prints_a_config_validate_accepts(tmp_path, capsys):
    for name in ("triggers.json", "template.yaml", "serverless.yml"):
        assert main(["import", "--from", str(INTEGRATION / name), "--table", "Orders"]) == 0
        captured = capsys.readouterr()
        assert captured.out.startswith("# fanout config imported from")
        out = INTEGRATION / f".imported-{name}.yaml"  # next to the file: code_path is relative
        try:
            out.write_text(captured.out)
            code = main(["validate", "--config", str(out)])
            assert code == 0, capsys.readouterr().err
            capsys.readouterr()
        finally:
            out.unlink()
        assert yaml.safe_load(captured.out)["sinks"]


def test_fanout_import_of_something_else_fails_with_code_2(tmp_path, capsys):
    path = tmp_path / "x.yaml"
    path.write_text("just: a mapping\n")
    assert main(["import", "--from", str(path)]) == 2
    assert "is not a triggers.json" in capsys.readouterr().err
    assert main(["import", "--from", str(triggers(tmp_path, {"t": {"handler": "a.b"}}))]) == 2
    assert "pass --table NAME" in capsys.readouterr().err


def test_validate_and_run_take_a_trigger_file_and_table(tmp_path, capsys):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "h.py").write_text("def run(event, context):\n    return None\n")
    path = triggers(tmp_path, {"t": {"handler": "app.h.run", "memory_size": 256}})
    assert main(["validate", "--config", str(path), "--table", "Orders"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().startswith("ok: 1 stream(s), 1 sink(s), application ")
    assert "fanout: note: memory_size" in captured.err
    config = build_config(imported(path), base_dir=tmp_path)
    assert config.sinks["t"].code_path == str(tmp_path)  # type: ignore[attr-defined]
    assert main(["validate", "--config", str(path)]) == 2
    assert "--table" in capsys.readouterr().err
