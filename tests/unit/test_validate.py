"""``fanout validate`` reports every error it can find in one run, checks the shape of URLs and
ARNs, and finds handlers as Lambda does: in the ``code_path`` (the config file's directory)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fanout.cli import main
from fanout.config import build_config, load_config
from fanout.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_config(data)
    return str(info.value).splitlines()


STREAMS = {"orders": {"table": "Orders"}}


def test_every_error_is_reported_in_one_run(tmp_path, capsys):
    config = write(
        tmp_path / "fanout.yaml",
        """
        streams:
          orders: {table: Orders, max_shards: 0}
        sinks:
          a: {type: handler, handler: "nowhere.at_all:fn"}
          b: {type: handler, handler: "also.missing:fn", batch_size: 0}
          c: {type: kafka, brokers: x}
          d: {type: file, path: /tmp/d, streams: [nope], dead_letter: {type: sqs, queue_url: x}}
        """,
    )
    assert main(["validate", "--config", str(config)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "fanout: invalid configuration:"
    text = "\n".join(lines)
    assert "streams.orders.max_shards" in text
    assert "sinks.a.handler: cannot import module 'nowhere.at_all'" in text
    assert "sinks.b.batch_size" in text
    assert "sinks.c.type: unknown sink type 'kafka'; the types are: " in text
    assert "sinks.d.streams: unknown stream 'nope'" not in text  # the streams failed first
    assert "sinks.d.dead_letter.queue_url: 'x' is not an http:// or https:// SQS queue URL" in text
    assert len(lines) == 6, lines


def test_two_bad_handlers_are_both_reported():
    lines = errors(
        {
            "streams": STREAMS,
            "sinks": {
                "one": {"type": "handler", "handler": "missing_one:fn"},
                "two": {"type": "handler", "handler": "missing_two:fn"},
            },
        }
    )
    assert [line.split(":")[0] for line in lines] == ["sinks.one.handler", "sinks.two.handler"]


def test_an_unknown_sink_type_lists_the_valid_ones():
    (line,) = errors({"streams": STREAMS, "sinks": {"x": {"type": "kafka"}}})
    listed = line.split("the types are: ")[1].split(", ")
    assert {"file", "handler", "opensearch", "stdout"} <= set(listed)
    assert listed == sorted(listed)


@pytest.mark.parametrize(
    ("where", "value", "words"),
    [
        ("queue_url", "x", "not an http:// or https:// SQS queue URL"),
        (
            "queue_url",
            "https://sqs.eu-west-1.amazonaws.com/dlq",
            "path must be /ACCOUNT_ID/QUEUE_NAME",
        ),
        ("queue_url", "ftp://sqs.example/123456789012/q", "not an http:// or https://"),
        ("endpoint_url", "localhost:4566", "not an http:// or https:// endpoint URL"),
    ],
)
def test_dead_letter_urls_are_checked_for_shape(where, value, words):
    dead_letter = {
        "type": "sqs",
        "queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q",
        where: value,
    }
    (line,) = errors(
        {"streams": STREAMS, "sinks": {"s": {"type": "stdout", "dead_letter": dead_letter}}}
    )
    assert line.startswith(f"sinks.s.dead_letter.{where}: ")
    assert words in line


@pytest.mark.parametrize(
    "url",
    [
        "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-dlq",
        "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-dlq.fifo",
        "https://eu-west-1.queue.amazonaws.com/123456789012/q",
        "http://127.0.0.1:4566/000000000000/q",
    ],
)
def test_real_queue_urls_pass(url):
    dead_letter = {"type": "sqs", "queue_url": url}
    build_config(
        {"streams": STREAMS, "sinks": {"s": {"type": "stdout", "dead_letter": dead_letter}}}
    )


@pytest.mark.parametrize(
    ("arn", "words"),
    [
        ("arn:aws:dynamodb:eu-west-1:123456789012:table/Orders", "not a DynamoDB stream ARN"),
        ("arn:aws:sqs:eu-west-1:123456789012:q", "is not an ARN of dynamodb"),
        ("orders-stream", "is not an ARN"),
        ("arn:aws:dynamodb:eu-west-1:12a45:table/Orders/stream/x", "is not an ARN"),
    ],
)
def test_stream_arns_are_checked_for_shape(arn, words):
    (line,) = errors({"streams": {"o": {"stream_arn": arn}}, "sinks": {"s": {"type": "stdout"}}})
    assert line.startswith("streams.o.stream_arn: ")
    assert words in line


def handler_project(root: Path, package: str = "app", reply: str = "one") -> None:
    write(root / package / "__init__.py", "")
    write(root / package / "h.py", f"def run(event, context):\n    return {reply!r}\n")


def test_handlers_are_found_next_to_the_config_from_any_directory(tmp_path):
    project = tmp_path / "project"
    handler_project(project, "nextdoor_app")
    config = write(
        project / "fanout.yaml",
        """
        streams: {orders: {table: Orders}}
        sinks: {h: {type: handler, handler: "nextdoor_app.h:run"}}
        """,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "fanout"), "validate", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert load_config(config).code_path == str(project)


def test_code_path_is_relative_to_the_config_and_settable_per_sink(tmp_path):
    handler_project(tmp_path / "src", "toplevel_app")
    handler_project(tmp_path / "other", "persink_app")
    config = load_config(
        write(
            tmp_path / "conf" / "fanout.yaml",
            """
            code_path: ../src
            streams: {orders: {table: Orders}}
            sinks:
              a: {type: handler, handler: "toplevel_app.h:run"}
              b: {type: handler, handler: "persink_app.h:run", code_path: ../other}
            """,
        )
    )
    assert config.code_path == str(tmp_path / "src")
    assert config.sinks["a"].code_path == str(tmp_path / "src")  # type: ignore[attr-defined]
    assert config.sinks["b"].code_path == str(tmp_path / "other")  # type: ignore[attr-defined]


def test_two_code_paths_with_the_same_module_name_are_refused(tmp_path):
    handler_project(tmp_path / "one", "twin_app", "one")
    handler_project(tmp_path / "two", "twin_app", "two")
    lines = errors(
        {
            "streams": STREAMS,
            "sinks": {
                "a": {
                    "type": "handler",
                    "handler": "twin_app.h:run",
                    "code_path": str(tmp_path / "one"),
                },
                "b": {
                    "type": "handler",
                    "handler": "twin_app.h:run",
                    "code_path": str(tmp_path / "two"),
                },
            },
        }
    )
    (line,) = lines
    assert line.startswith("sinks.b.handler: module 'twin_app' was already imported from")


def test_a_missing_code_path_is_named():
    (line,) = errors(
        {
            "streams": STREAMS,
            "sinks": {"a": {"type": "handler", "handler": "x:y", "code_path": "/no/such/dir"}},
        }
    )
    assert line == "sinks.a.handler: code_path '/no/such/dir' is not a directory"


def test_status_needs_only_the_variables_of_what_it_reads(tmp_path, capsys, monkeypatch):
    for name in ("ENDPOINT", "HOOK_SECRET", "STATE"):
        monkeypatch.delenv(name, raising=False)
    config = write(
        tmp_path / "fanout.yaml",
        """
        streams:
          orders: {table: Orders, endpoint_url: "${ENDPOINT}"}
        checkpoints: {path: "${STATE:-./missing}/fanout.db"}
        sinks:
          h: {type: handler, handler: "not.importable.here:fn", function_name: "${HOOK_SECRET}"}
        """,
    )
    # neither the endpoint, the handler's secret nor its import matter to status
    assert main(["status", "--config", str(config)]) == 1
    assert "no checkpoint store" in capsys.readouterr().err
    assert main(["validate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "environment variable ENDPOINT is not set" in err
    config.write_text(config.read_text().replace('"${STATE:-./missing}', '"${STATE}'))
    assert main(["status", "--config", str(config)]) == 2
    assert "checkpoints.path: environment variable STATE is not set" in capsys.readouterr().err
