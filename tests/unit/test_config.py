from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from fanout.cli import main
from fanout.config import build_config, load_config
from fanout.config.types import parse_duration
from fanout.errors import ConfigError

VALID = """
streams:
  orders: {table: Orders, endpoint_url: "http://127.0.0.1:8000", region: us-east-1}
checkpoints: {store: sqlite, path: ./fanout.db}
sinks:
  audit: {type: file, path: ./audit.jsonl}
  badges:
    type: handler
    handler: "tests.unit.helpers.handlers:record_all"
    streams: [orders]
    batch_size: 100
    batch_window: 0.5
    timeout: 30
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fanout.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_config_loads_with_defaults(tmp_path):
    config = load_config(write(tmp_path, VALID))
    assert config.streams["orders"].table == "Orders"
    assert config.streams["orders"].starting_position == "TRIM_HORIZON"
    badges = config.sinks["badges"]
    assert badges.batch_window == 0.5
    assert badges.retry.max_attempts == 10
    assert badges.retry.max_record_age == 6 * 3600
    assert config.sinks["audit"].batch_size == 100


def test_environment_overrides_yaml_per_sink(tmp_path, monkeypatch):
    monkeypatch.setenv("FANOUT_SINKS__AUDIT__PATH", "/tmp/other.jsonl")
    monkeypatch.setenv("FANOUT_CHECKPOINTS__INTERVAL", "250ms")
    config = load_config(write(tmp_path, VALID))
    assert config.sinks["audit"].path == "/tmp/other.jsonl"  # type: ignore[attr-defined]
    assert config.settings.checkpoints.interval == 0.25


def test_variable_references_are_substituted(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_FILE", "/var/log/audit.jsonl")
    text = VALID.replace("./audit.jsonl", '"${AUDIT_FILE}"').replace(
        "./fanout.db", '"${DB_PATH:-/data/fanout.db}"'
    )
    config = load_config(write(tmp_path, text))
    assert config.sinks["audit"].path == "/var/log/audit.jsonl"  # type: ignore[attr-defined]
    assert config.settings.checkpoints.path == "/data/fanout.db"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        (0.5, 0.5),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("6h", 21600.0),
        ("1d", 86400.0),
        ("-1", -1.0),
    ],
)
def test_durations_accept_numbers_and_units(value, seconds):
    assert parse_duration(value) == seconds


def _base() -> dict[str, Any]:
    return {
        "streams": {"orders": {"table": "Orders"}},
        "sinks": {"audit": {"type": "file", "path": "/tmp/a.jsonl"}},
    }


def _with(path: str, value: object) -> dict[str, Any]:
    data = _base()
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return data


INVALID = [
    # (name, data, expected field path, words in the message)
    ("unknown top-level key", _with("sinkz", {}), "sinkz", "Extra inputs"),
    (
        "table and stream_arn",
        _with(
            "streams.orders.stream_arn",
            "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2024-01-01T00:00:00.000",
        ),
        "streams.orders",
        "exactly one",
    ),
    (
        "neither table nor arn",
        {"streams": {"orders": {}}, "sinks": _base()["sinks"]},
        "streams.orders",
        "exactly one",
    ),
    (
        "bad starting position",
        _with("streams.orders.starting_position", "EARLIEST"),
        "streams.orders.starting_position",
        "TRIM_HORIZON",
    ),
    (
        "AT_TIMESTAMP without timestamp",
        _with("streams.orders.starting_position", "AT_TIMESTAMP"),
        "streams.orders",
        "starting_timestamp",
    ),
    (
        "bad duration",
        _with("sinks.audit.batch_window", "soon"),
        "sinks.audit.batch_window",
        "invalid duration",
    ),
    (
        "batch size zero",
        _with("sinks.audit.batch_size", 0),
        "sinks.audit.batch_size",
        "greater than or equal to 1",
    ),
    (
        "unknown sink type",
        _with("sinks.audit.type", "carrier-pigeon"),
        "sinks.audit.type",
        "unknown sink type",
    ),
    (
        "missing sink type",
        {"streams": _base()["streams"], "sinks": {"audit": {"path": "x"}}},
        "sinks.audit.type",
        "missing sink type",
    ),
    (
        "file sink without path",
        {"streams": _base()["streams"], "sinks": {"audit": {"type": "file"}}},
        "sinks.audit.path",
        "Field required",
    ),
    (
        "typo in a sink option",
        _with("sinks.audit.batchsize", 5),
        "sinks.audit.batchsize",
        "Extra inputs",
    ),
    (
        "unknown stream for a sink",
        _with("sinks.audit.streams", ["payments"]),
        "sinks.audit.streams",
        "unknown stream 'payments'",
    ),
    (
        "zero attempts",
        _with("sinks.audit.retry", {"max_attempts": 0}),
        "sinks.audit.retry.max_attempts",
        "at least 1",
    ),
    (
        "sqs dead letter without url",
        _with("sinks.audit.dead_letter", {"type": "sqs"}),
        "sinks.audit.dead_letter",
        "queue_url",
    ),
    (
        "dead letter to unknown sink",
        _with("sinks.audit.dead_letter", {"type": "sink", "sink": "nope"}),
        "sinks.audit.dead_letter.sink",
        "unknown sink",
    ),
    (
        "parallelization too high",
        _with("sinks.audit.parallelization_factor", 11),
        "sinks.audit.parallelization_factor",
        "less than or equal to 10",
    ),
    (
        "handler path without function",
        {"streams": _base()["streams"], "sinks": {"h": {"type": "handler", "handler": "os.path"}}},
        "sinks.h.handler",
        "package.module:function",
    ),
    (
        "handler module missing",
        {
            "streams": _base()["streams"],
            "sinks": {"h": {"type": "handler", "handler": "no_such_module_x:fn"}},
        },
        "sinks.h.handler",
        "cannot import module",
    ),
    (
        "handler function missing",
        {
            "streams": _base()["streams"],
            "sinks": {"h": {"type": "handler", "handler": "json:nope"}},
        },
        "sinks.h.handler",
        "has no attribute",
    ),
    ("no sinks", {"streams": _base()["streams"], "sinks": {}}, "sinks", "at least one"),
    (
        "wrong type for streams",
        {"streams": ["orders"], "sinks": _base()["sinks"]},
        "streams",
        "dictionary",
    ),
    (
        "invalid filter pattern",
        _with("sinks.audit.filters", [{"eventName": "INSERT"}]),
        "sinks.audit.filters[0].eventName",
        "",
    ),
]


@pytest.mark.parametrize(("name", "data", "path", "words"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_config_names_the_field(name, data, path, words):
    with pytest.raises(ConfigError) as info:
        build_config(data)
    assert info.value.path.startswith(path), str(info.value)
    assert path in str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize(("name", "data", "path", "words"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_config_exits_2_from_validate(name, data, path, words, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_bytes(orjson.dumps(data))  # JSON is YAML
    assert main(["validate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert path in err


def test_unset_variable_names_the_field(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    path = write(tmp_path, VALID.replace("./audit.jsonl", '"${NOPE_NOT_SET}"'))
    with pytest.raises(ConfigError, match=r"sinks\.audit\.path: environment variable NOPE_NOT_SET"):
        load_config(path)


def test_file_that_is_not_yaml_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "streams: {a: [\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_run_with_bad_config_exits_2_as_a_process(tmp_path):
    path = write(tmp_path, VALID.replace("batch_size: 100", "batch_size: -3"))
    proc = subprocess.run(
        [sys.executable, "-m", "fanout", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "sinks.badges.batch_size" in proc.stderr


def test_validate_ok_and_missing_config(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FANOUT_CONFIG", raising=False)
    assert main(["validate", "--config", str(write(tmp_path, VALID))]) == 0
    assert "2 sink(s)" in capsys.readouterr().out
    assert main(["validate"]) == 2


def test_committed_schema_is_current():
    from fanout.cli.schema import json_schema

    committed = Path(__file__).parents[2] / "config" / "schema.json"
    assert orjson.loads(committed.read_bytes()) == orjson.loads(orjson.dumps(json_schema())), (
        "config/schema.json is stale: run `make schema`"
    )


def test_schema_describes_sink_types():
    from fanout.cli.schema import json_schema

    schema = json_schema()
    variants = schema["properties"]["sinks"]["additionalProperties"]["oneOf"]
    names = {v["$ref"].rsplit("/", 1)[1] for v in variants}
    assert {"FileSinkConfig", "HandlerSinkConfig", "StdoutSinkConfig"} <= names
    assert "path" in schema["$defs"]["FileSinkConfig"]["properties"]


# -- applications, the lease stores, processes -----------------------------------------------


def test_the_application_defaults_to_the_config_files_name(tmp_path):
    path = tmp_path / "orders.prod.yaml"
    path.write_text(textwrap.dedent(VALID))
    config = load_config(path)
    assert config.application == "orders.prod"
    assert config.sink_set() == {"audit": "file", "badges": "handler"}
    named = load_config(write(tmp_path, "application: shop\n" + VALID))
    assert named.application == "shop"
    from fanout.config import build_config as bare

    assert bare(orjson.loads(orjson.dumps(_data(VALID)))).application == "fanout"


def _data(text: str) -> dict[str, Any]:
    import yaml

    data: dict[str, Any] = yaml.safe_load(textwrap.dedent(text))
    return data


@pytest.mark.parametrize("name", ["-x", "a b", "", "x" * 129])
def test_a_bad_application_name_names_the_field(tmp_path, name):
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, f"application: '{name}'\n" + VALID))
    assert raised.value.path == "application"


def test_the_dynamodb_store_and_lease_duration(tmp_path):
    text = VALID.replace(
        "checkpoints: {store: sqlite, path: ./fanout.db}",
        "checkpoints: {store: dynamodb, create_table: true, endpoint_url: 'http://x:8000', "
        "region: eu-west-1, lease_duration: 3s}",
    )
    cp = load_config(write(tmp_path, text)).settings.checkpoints
    assert (cp.store, cp.table_name, cp.create_table, cp.lease_duration) == (
        "dynamodb",
        "fanout-leases",
        True,
        3.0,
    )
    assert load_config(write(tmp_path, VALID)).settings.checkpoints.lease_duration == 10.0


@pytest.mark.parametrize(
    ("checkpoints", "field"),
    [
        ("{store: sqlite, table: t}", "checkpoints"),
        ("{store: sqlite, create_table: true}", "checkpoints"),
        ("{lease_duration: 0.1}", "checkpoints.lease_duration"),
        ("{store: redis}", "checkpoints.store"),
    ],
)
def test_bad_checkpoint_settings_name_the_field(tmp_path, checkpoints, field):
    text = VALID.replace(
        "checkpoints: {store: sqlite, path: ./fanout.db}", f"checkpoints: {checkpoints}"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    assert raised.value.path == field


def test_processes(tmp_path, monkeypatch):
    assert load_config(write(tmp_path, VALID)).processes == 1
    assert load_config(write(tmp_path, "processes: 3\n" + VALID)).processes == 3
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert load_config(write(tmp_path, "processes: auto\n" + VALID)).processes == 6
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, "processes: 0\n" + VALID))
    assert raised.value.path == "processes"


def test_run_rejects_a_bad_processes_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["run", "--config", str(write(tmp_path, VALID)), "--processes", "many"])
    assert raised.value.code == 2
    assert "a number of processes, or auto" in capsys.readouterr().err
