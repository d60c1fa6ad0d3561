"""Window states in the DynamoDB checkpoint store (``fanout.progress.dynamodb``).

A window state (``WindowState``) can be up to 1 MB of handler state, more than the 400 KB a
DynamoDB item holds, and the lease cycle reads the application's whole partition every few
seconds. So window states live apart from the checkpoint rows: partition key
``windows#<application>``, sort key ``<stream arn>#<shard id>#<part>#<sink>``. The state's
JSON is compressed with zlib (less to write) and cut into parts of at most ``PART_BYTES``
(attribute ``data``, binary; every part holds ``parts``, how many there are). A checkpoint
written with window states is one ``TransactWriteItems``: the checkpoint's conditional
update and a put of every part, so the state and the checkpoint are stored together or not
at all. A transaction holds at most 100 items and 4 MB. ``DynamoDBWindows`` reads, writes
and drops them through the store's table.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

from fanout.progress.dynamodb_table import DynamoDBTable, counted
from fanout.progress.store import CheckpointRow, WindowState

PART_BYTES = 350_000


def windows_pk(application: str) -> str:
    """The partition of an application's window states."""
    return f"windows#{application}"


def shard_prefix(stream_arn: str, shard_id: str) -> str:
    """The sort-key prefix of one shard's window parts."""
    return f"{stream_arn}#{shard_id}#"


def window_puts(
    table: str, application: str, stream_arn: str, shard_id: str, windows: Iterable[WindowState]
) -> list[dict[str, Any]]:
    """The ``Put`` actions (for ``TransactWriteItems``) that store ``windows``."""
    puts: list[dict[str, Any]] = []
    pk = {"S": windows_pk(application)}
    prefix = shard_prefix(stream_arn, shard_id)
    for window in windows:
        data = zlib.compress(window.to_json(), 1)
        parts = [data[i : i + PART_BYTES] for i in range(0, len(data), PART_BYTES)] or [b""]
        for n, part in enumerate(parts):
            item = {
                "pk": pk,
                "sk": {"S": f"{prefix}{n}#{window.sink}"},
                "data": {"B": part},
                "parts": {"N": str(len(parts))},
            }
            puts.append({"Put": {"TableName": table, "Item": item}})
    return puts


def assemble(prefix: str, items: Iterable[dict[str, Any]]) -> dict[str, WindowState]:
    """The window states stored in ``items`` (the parts under ``prefix``), by sink name.

    Parts beyond ``parts`` are left over from a larger state written earlier: ignored.
    """
    found: dict[str, dict[int, bytes]] = {}
    counts: dict[str, int] = {}
    for item in items:
        number, _, sink = str(item["sk"]["S"]).removeprefix(prefix).partition("#")
        n = int(number)
        found.setdefault(sink, {})[n] = bytes(item["data"]["B"])
        if n == 0:
            counts[sink] = int(item["parts"]["N"])
    states: dict[str, WindowState] = {}
    for sink, count in counts.items():
        parts = found[sink]
        if any(n not in parts for n in range(count)):
            continue  # cannot happen with transactional writes; never guess a state
        data = zlib.decompress(b"".join(parts[n] for n in range(count)))
        states[sink] = WindowState.from_json(sink, data)
    return states


class DynamoDBWindows(DynamoDBTable):
    """The window states of one application (part of ``DynamoDBCheckpointStore``)."""

    async def _save_with_windows(self, row: CheckpointRow, update: dict[str, Any]) -> None:
        puts = window_puts(self.table, self._application, row.stream_arn, row.shard_id, row.windows)
        await self._call("transact_write_items", TransactItems=[{"Update": update}, *puts])

    async def _window_items(self, stream_arn: str, shard_id: str) -> list[dict[str, Any]]:
        return await self._query(
            shard_prefix(stream_arn, shard_id), pk=windows_pk(self._application)
        )

    async def _drop_windows(self, stream_arn: str, shard_id: str) -> None:
        for item in await self._window_items(stream_arn, shard_id):
            await self._call(
                "delete_item", TableName=self.table, Key={"pk": item["pk"], "sk": item["sk"]}
            )

    @counted
    async def load_windows(self, stream_arn: str, shard_id: str) -> dict[str, WindowState]:
        """The window states stored for one shard, by sink name."""
        items = await self._window_items(stream_arn, shard_id)
        return assemble(shard_prefix(stream_arn, shard_id), items)
