"""Trigger files imported unchanged behave as their declarations say: a triggers.json, a SAM
template and a serverless.yml, each with a filter, bounded retries, bisection and an SQS
failure destination, run in the worker against DynamoDB Local and moto's SQS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from fanout.triggers import import_trigger_file
from tests.integration import trigger_recorder
from tests.integration.process import read_lines, wait_for

pytestmark = pytest.mark.integration

TRIGGERS = Path(__file__).parent / "triggers"
FILES = {
    "triggers.json": ("orders", "shop-triggers-dlq"),
    "template.yaml": ("OrdersFunction", "shop-sam-dlq"),
    "serverless.yml": ("orders", "shop-sls-dlq"),
}


@pytest.fixture(autouse=True)
def _reset():
    trigger_recorder.reset()
    yield
    trigger_recorder.reset()


@pytest.fixture
def queue(moto_server, monkeypatch):
    """A queue on moto under the name a file's failure destination names."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=moto_server.endpoint_url, region_name="eu-west-1")
    made = []

    def make(name: str) -> str:
        url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
        sqs.purge_queue(QueueUrl=url)
        made.append(url)
        return url

    # The imported dead_letter names the real queue URL; the SDK's endpoint override sends
    # the calls to moto instead.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_server.endpoint_url)
    yield make, sqs
    for url in made:
        sqs.delete_queue(QueueUrl=url)


@pytest.mark.parametrize("name", list(FILES))
def test_an_imported_trigger_filters_retries_bisects_and_dead_letters_to_sqs(
    name, fanout_table, fanout_worker, queue
):
    sink, queue_name = FILES[name]
    make_queue, sqs = queue
    url = make_queue(queue_name)
    orders = fanout_table("Orders")
    orders.put({"pk": "a"})
    orders.put({"pk": "b", "poison": True})
    orders.put({"pk": "c"})
    orders.put({"pk": "d"})
    orders.put({"pk": "d", "status": "PAID"})  # a MODIFY: the filter keeps INSERTs only

    worker = fanout_worker(
        TRIGGERS / name,
        table="Orders",  # triggers.json names no table; the others name Orders themselves
        keep_dead_letters=True,
        env={"AWS_DEFAULT_REGION": "eu-west-1"},  # where the queues are
    )
    worker.drain()

    attempts = trigger_recorder.ATTEMPTS[name]
    delivered = trigger_recorder.DELIVERED[name]
    # bisection isolated the poison record: its batch's healthy records went through
    assert sorted(delivered) == ["a", "c", "d"]
    # MaximumRetryAttempts 2: three rounds in all (the halves bisection sends in a round
    # are not attempts of their own), then the failure destination
    assert attempts["b"] >= 3
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    (message,) = messages
    entry = orjson.loads(message["Body"])
    assert entry["sink"] == sink
    assert entry["record"]["dynamodb"]["Keys"] == {"pk": {"S": "b"}}
    assert entry["record"]["dynamodb"]["NewImage"]["poison"] == {"BOOL": True}  # whole record
    assert entry["attempts"] == 3
    # the filter: the MODIFY of "d" never reached the handler
    assert trigger_recorder.EVENT_NAMES[name] == {"INSERT"}


def test_the_three_files_import_to_the_same_behaviour():
    def essentials(path: Path) -> dict[str, object]:
        imported = import_trigger_file(path, table="Orders")
        assert imported is not None
        (stream,) = imported.config["streams"].values()
        (options,) = imported.config["sinks"].values()
        return {
            "table": stream["table"],
            "filters": options["filters"],
            "retry": {k: v for k, v in options["retry"].items() if k != "max_record_age"},
            "batch_size": options["batch_size"],
            "dead_letter": options["dead_letter"]["type"],
        }

    found = [essentials(TRIGGERS / name) for name in FILES]
    assert found[0] == found[1] == found[2]
    assert found[0] == {
        "table": "Orders",
        "filters": [{"eventName": ["INSERT"]}],
        "retry": {"max_attempts": 3, "bisect_on_error": True},
        "batch_size": 10,
        "dead_letter": "sqs",
    }


def test_fanout_run_runs_a_triggers_json_as_it_is(tmp_path, fanout_table, fanout_dynamodb):
    project = tmp_path / "project"
    (project / "app").mkdir(parents=True)
    (project / "app" / "echo.py").write_text(
        "import json, os\n\n\n"
        "def handle(event, context):\n"
        "    with open(os.environ['OUT'], 'a') as out:\n"
        "        for r in event['Records']:\n"
        "            out.write(json.dumps(r['dynamodb']['Keys']) + '\\n')\n"
    )
    (project / "triggers.json").write_text(json.dumps({"echo": {"handler": "app.echo.handle"}}))
    orders = fanout_table("Orders")
    orders.put({"pk": "a"})
    orders.put({"pk": "b"})
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        OUT=str(out),
        AWS_ENDPOINT_URL_DYNAMODB=fanout_dynamodb.endpoint_url,
        AWS_ENDPOINT_URL_DYNAMODB_STREAMS=fanout_dynamodb.endpoint_url,
        FANOUT_CHECKPOINTS__PATH=str(tmp_path / "fanout.db"),
        FANOUT_HTTP__ENABLED="false",
    )
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "fanout"),
            "run",
            "--config",
            str(project / "triggers.json"),
            "--table",
            orders.real_name,
        ],
        cwd=tmp_path,  # not the project: the handler is found through code_path
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        wait_for(lambda: len(read_lines(out)) >= 2, 60, "the handler's output")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "worker.log").read_text()
    assert read_lines(out) == [{"pk": {"S": "a"}}, {"pk": {"S": "b"}}]
