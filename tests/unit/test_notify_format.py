"""Notification bodies, templates and FIFO ids (sinks.notify.format), and the plain JSON
conversion of AttributeValues they use (fanout.records)."""

from __future__ import annotations

import decimal
import re
from pathlib import Path as FilePath
from typing import Any

import orjson
import pytest

from fanout.config import build_config, load_config
from fanout.errors import ConfigError
from fanout.records import dumps_plain, plain_image, plain_value
from fanout.testing.contract import make_records
from sinks.notify.format import (
    BodyFormat,
    Path,
    TextTemplate,
    batch_id,
    fifo_id,
    key_text,
    table_name,
)


def record(**ddb: Any) -> dict[str, Any]:
    base = make_records(1, tag="fmt")[0]
    base["dynamodb"].update(ddb)
    return base


def test_numbers_stay_exact_ints_and_decimals_never_floats():
    image = {
        "i": {"N": "42"},
        "neg": {"N": "-7"},
        "exp": {"N": "1E+3"},
        "frac": {"N": "0.1"},
        "big": {"N": "123456789012345678901234567890123456"},
        "tiny": {"N": "1E-130"},
        "ns": {"NS": ["1", "2.50"]},
    }
    plain = plain_image(image)
    assert plain["i"] == 42
    assert type(plain["i"]) is int
    assert plain["exp"] == 1000
    assert type(plain["exp"]) is int
    assert plain["frac"] == decimal.Decimal("0.1")
    assert isinstance(plain["big"], decimal.Decimal)  # beyond 64 bits: kept exact
    assert not any(isinstance(v, float) for v in (*plain.values(), *plain["ns"]))
    text = dumps_plain(plain)
    assert text == (
        b'{"i":42,"neg":-7,"exp":1000,"frac":0.1,"big":123456789012345678901234567890123456,'
        b'"tiny":1E-130,"ns":[1,2.50]}'
    )
    # a JSON parser reading it back with decimals gets the very numbers DynamoDB holds
    import json

    back = json.loads(text, parse_float=decimal.Decimal)
    assert back["big"] == 123456789012345678901234567890123456
    assert back["tiny"] == decimal.Decimal("1E-130")


def test_sets_are_arrays_binary_is_base64_and_nesting_is_kept():
    value = {
        "M": {
            "ss": {"SS": ["b", "a"]},
            "bs": {"BS": ["AAE=", "AgM="]},
            "b": {"B": "AAEC"},
            "l": {"L": [{"S": "x"}, {"NULL": True}, {"BOOL": False}]},
        }
    }
    assert plain_value(value) == {
        "ss": ["b", "a"],
        "bs": ["AAE=", "AgM="],
        "b": "AAEC",
        "l": ["x", None, False],
    }
    with pytest.raises(ValueError, match="unknown AttributeValue"):
        plain_value({"X": "1"})


def test_the_plain_body_has_exactly_its_five_fields_and_leaves_out_missing_images():
    modify = make_records(2, tag="p")[1]  # MODIFY: new and old images
    body = orjson.loads(BodyFormat("plain").dumps(modify))
    assert list(body) == ["eventName", "table", "keys", "new", "old"]
    assert body["eventName"] == "MODIFY"
    assert body["table"] == "Contract"
    assert body["keys"] == {"pk": "item#0-1", "sk": 1}
    assert body["new"]["total"] == 1.25
    assert body["old"] == {"pk": "item#0-1", "sk": 1, "status": "NEW", "total": 0}
    insert = make_records(1, tag="p")[0]
    assert "old" not in orjson.loads(BodyFormat("plain").dumps(insert))
    remove = record(NewImage=None)
    del remove["dynamodb"]["NewImage"]
    assert set(orjson.loads(BodyFormat("plain").dumps(remove))) == {"eventName", "table", "keys"}


def test_the_raw_body_is_the_lambda_record():
    r = make_records(1, tag="raw")[0]
    assert orjson.loads(BodyFormat("raw").dumps(r)) == r


def test_a_template_selects_and_renames_fields_and_leaves_out_what_is_missing():
    fmt = BodyFormat(
        "template",
        {
            "id": "keys.pk",
            "kind": "eventName",
            "status": "new.status",
            "before": "old.status",
            "sku": "new.lines.0.sku",
            "nothing": "new.lines.5.sku",
            "where": "table",
            "seq": "sequenceNumber",
        },
    )
    insert, modify = make_records(2, tag="t")
    assert fmt.render(insert) == {
        "id": "item#0-0",
        "kind": "INSERT",
        "status": "NEW",
        "sku": "sku-0",
        "where": "Contract",
        "seq": insert["dynamodb"]["SequenceNumber"],
    }
    assert fmt.render(modify)["before"] == "NEW"
    assert BodyFormat("template", {"item": "new"}).render(insert)["item"]["total"] == (
        decimal.Decimal("0.25")
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("price", "unknown field 'price'"),
        ("new..x", "empty name"),
        ("eventName.x", "has no fields"),
    ],
)
def test_bad_paths_are_refused(text, error):
    with pytest.raises(ValueError, match=error):
        Path.parse(text)


def test_text_templates_render_values_and_empty_for_missing():
    r = make_records(1, tag="x")[0]
    assert TextTemplate("{table}/{eventName}/{keys.pk}").render(r) == "Contract/INSERT/item#0-0"
    assert TextTemplate("{new.gift} {new.note} {old.status}|").render(r) == "true  |"
    assert TextTemplate("{new.lines}").render(r) == '[{"sku":"sku-0","qty":2}]'
    assert TextTemplate("plain").render(r) == "plain"
    for bad in ("{eventName", "eventName}", "{nope}"):
        with pytest.raises(ValueError, match=r"brace|unknown field"):
            TextTemplate(bad)


def test_fifo_ids_are_the_key_or_a_stable_hash_of_it():
    r = make_records(1, tag="g")[0]
    assert key_text(r) == "item#0-0#0"  # pk then sk, by name
    assert fifo_id("orders#42") == "orders#42"
    odd = fifo_id("naïve key with spaces")
    assert len(odd) == 64
    assert odd == fifo_id("naïve key with spaces")
    assert len(fifo_id("x" * 129)) == 64
    assert batch_id(["a", "b"]) == batch_id(["a", "b"]) != batch_id(["a", "c"])


def test_the_table_comes_from_the_stream_arn():
    r = make_records(1, tag="arn")[0]
    assert table_name(r) == "Contract"
    assert table_name({}) is None
    assert table_name({"eventSourceARN": "arn:aws:sqs:x"}) is None


def _config(sink: dict[str, Any]) -> Any:
    return build_config({"streams": {"s": {"table": "T"}}, "sinks": {"n": sink}})


@pytest.mark.parametrize(
    ("sink", "field"),
    [
        ({"type": "sqs", "queue_url": "u", "format": "template"}, "sinks.n"),
        ({"type": "sqs", "queue_url": "u", "template": {"a": "keys"}}, "sinks.n"),
        (
            {"type": "sns", "topic_arn": "a", "format": "template", "template": {"a": "nope"}},
            "sinks.n.template",
        ),
        ({"type": "sns", "topic_arn": "a", "group_id": "{keys.pk"}, "sinks.n.group_id"),
        ({"type": "sqs", "queue_url": "u", "attributes": {"AWS.x": "1"}}, "sinks.n.attributes"),
        (
            {"type": "sqs", "queue_url": "u", "attributes": {f"a{i}": "x" for i in range(11)}},
            "sinks.n.attributes",
        ),
        ({"type": "sqs", "queue_url": "u", "format": "xml"}, "sinks.n.format"),
        ({"type": "eventbridge", "source": "aws.events"}, "sinks.n.source"),
        ({"type": "eventbridge", "source": "a", "detail_type": "{x}"}, "sinks.n.detail_type"),
        ({"type": "eventbridge"}, "sinks.n.source"),
        ({"type": "webhook", "url": "ftp://x"}, "sinks.n.url"),
        ({"type": "webhook", "url": "http://x", "headers": {"Webhook-Id": "1"}}, "sinks.n.headers"),
        ({"type": "webhook", "url": "http://x", "secret": "whsec_!!"}, "sinks.n.secret"),
        ({"type": "sns", "topic_arn": "a", "max_message_bytes": 2_000_000}, "sinks.n.max_message"),
    ],
)
def test_bad_notification_options_fail_at_start_up_naming_the_field(sink, field):
    with pytest.raises(ConfigError) as info:
        _config(sink)
    assert str(info.value).startswith(field), str(info.value)


def test_the_interface_examples_validate():
    config = build_config(
        {
            "streams": {"s": {"table": "T"}},
            "sinks": {
                "events_queue": {
                    "type": "sqs",
                    "queue_url": "https://sqs.eu-west-1.amazonaws.com/123/orders.fifo",
                    "format": "plain",
                },
                "topic": {
                    "type": "sns",
                    "topic_arn": "arn:aws:sns:eu-west-1:123:orders",
                    "format": "raw",
                },
                "bus": {
                    "type": "eventbridge",
                    "event_bus_name": "orders",
                    "source": "app.orders",
                    "detail_type": "{eventName}",
                },
                "hook": {
                    "type": "webhook",
                    "url": "https://example.com/hook",
                    "secret": "s3cret-value",
                    "mode": "record",
                },
            },
        }
    )
    assert {n: c.type for n, c in config.sinks.items()} == {
        "events_queue": "sqs",
        "topic": "sns",
        "bus": "eventbridge",
        "hook": "webhook",
    }


REPO = FilePath(__file__).parents[2]


def _sink_examples(path: FilePath) -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.DOTALL)
    kinds = ("type: sqs", "type: sns", "type: eventbridge", "type: webhook")
    return [b for b in blocks if b.startswith("sinks:") and any(k in b for k in kinds)]


@pytest.mark.parametrize("doc", ["README.md", "docs/notifications.md"])
def test_the_documented_notification_examples_validate(doc, tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", "whsec_" + "A" * 44)
    examples = _sink_examples(REPO / doc)
    assert examples
    for n, example in enumerate(examples):
        path = tmp_path / f"{n}.yaml"
        path.write_text("streams: {orders: {table: Orders}}\n" + example)
        config = load_config(path)
        assert config.sinks
