"""Several configurations and workers on one SQLite file, as users run them: two
configurations are two applications with their own checkpoints; two workers of one
configuration share the shards; a worker with other sinks under the same application name
refuses to start."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.progress.sqlite import SQLiteCheckpointStore
from fanout.testing.streamserver import Change, Stream, StreamServer
from tests.integration.leasekit import Worker, wait_until

pytestmark = pytest.mark.integration

RECORDS = 400


@pytest.fixture
def server() -> Iterator[StreamServer]:
    server = StreamServer()
    with server.run_in_thread():
        yield server


def fill(server: StreamServer, stream: Stream) -> set[str]:
    seqs: list[str] = []
    for i in range(RECORDS):
        keys = {"pk": {"S": f"k{i % 40}"}, "sk": {"S": "v"}}
        shard = stream.shards[i % len(stream.shards)]
        seqs += server.put(shard, Change("MODIFY", keys, {**keys, "v": {"N": str(i)}}, None))
    return set(seqs)


def config(
    path: Path,
    server: StreamServer,
    stream: Stream,
    db: Path,
    sinks: str,
    application: str | None = None,
) -> Path:
    head = f"application: {application}\n" if application else ""
    path.write_text(
        head
        + f"""
streams:
  orders:
    stream_arn: "{stream.arn}"
    endpoint_url: {server.endpoint_url}
    region: us-east-1
    max_idle_interval: 100ms
checkpoints: {{path: {db}, interval: 100ms, lease_duration: 2s}}
http: {{enabled: false}}
shutdown_grace: 5s
sinks:
{sinks}
"""
    )
    return path


def owners(db: Path, application: str = "orders") -> Counter[str]:
    """Leases held per worker in the SQLite file."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT owner FROM checkpoints WHERE application = ? AND owner IS NOT NULL",
            (application,),
        ).fetchall()
    except sqlite3.OperationalError:
        rows = []
    finally:
        con.close()
    return Counter(owner for (owner,) in rows)


def handler_sink(name: str, handler: str = "log_delivery", batch: int = 10) -> str:
    return (
        f"  {name}:\n    type: handler\n    handler: tests.integration.leasekit:{handler}\n"
        f"    batch_size: {batch}\n"
    )


def seqs_of(worker: Worker, sink: str) -> set[str]:
    return {line["seq"] for line in worker.deliveries() if line["sink"] == sink}


def test_two_configurations_on_one_file_are_two_applications(tmp_path, server):
    stream = server.add_stream("Orders", shards=4)
    every = fill(server, stream)
    db = tmp_path / "state" / "fanout.db"
    fast_cfg = config(tmp_path / "fast.yaml", server, stream, db, handler_sink("fast", batch=100))
    slow_cfg = config(
        tmp_path / "slow.yaml", server, stream, db, handler_sink("slow", "log_slowly", batch=5)
    )
    fast = Worker(fast_cfg, tmp_path, "fast")
    slow = Worker(slow_cfg, tmp_path, "slow")
    wait_until(lambda: seqs_of(fast, "fast") == every, 30, "the fast one done")
    wait_until(lambda: len(seqs_of(slow, "slow")) >= 60, 30, "the slow one under way")
    slow.kill()
    assert len(seqs_of(slow, "slow")) < RECORDS
    restarted = Worker(slow_cfg, tmp_path, "slow-again")
    wait_until(
        lambda: seqs_of(slow, "slow") | seqs_of(restarted, "slow") == every,
        60,
        "every record at the slow sink after the restart",
    )
    assert fast.stop() == 0
    assert restarted.stop() == 0
    assert seqs_of(fast, "fast") == every

    async def applications() -> set[str]:
        found = set()
        for app in ("fast", "slow"):
            store = SQLiteCheckpointStore(db, app)
            if await store.all():
                found.add(app)
            await store.aclose()
        return found

    import anyio

    assert anyio.run(applications) == {"fast", "slow"}


def test_one_configuration_twice_shares_and_other_sinks_under_its_name_refuse(tmp_path, server):
    stream = server.add_stream("Orders", shards=4)
    every = fill(server, stream)
    db = tmp_path / "fanout.db"
    shared = config(tmp_path / "orders.yaml", server, stream, db, handler_sink("audit"))
    a = Worker(shared, tmp_path, "a")
    b = Worker(shared, tmp_path, "b")
    try:
        wait_until(lambda: sorted(owners(db).values()) == [2, 2], 30, "two shards each")
        more = fill(server, stream)
        every |= more
        wait_until(lambda: seqs_of(a, "audit") | seqs_of(b, "audit") == every, 30, "every record")
        # both read the new records: the shards were shared, not read twice
        assert seqs_of(a, "audit") & more
        assert seqs_of(b, "audit") & more
        time.sleep(1.0)
        lines = a.deliveries() + b.deliveries()
        twice = [seq for seq, n in Counter(line["seq"] for line in lines).items() if n > 1]
        assert len(twice) < RECORDS / 4  # only what was in flight when a shard moved
        other = config(
            tmp_path / "other.yaml",
            server,
            stream,
            db,
            handler_sink("audit") + handler_sink("notify"),
            application="orders",
        )
        third = Worker(other, tmp_path, "third")
        assert third.wait(60) == 2
        failed = third.events("worker_failed")
        assert failed
        assert "must run the same sinks" in failed[0]["error"]
        assert "added notify" in failed[0]["error"]
        assert not third.deliveries()
    finally:
        for w in (a, b):
            if w.proc.poll() is None:
                w.signal(signal.SIGTERM)
        assert a.wait() == 0
        assert b.wait() == 0


def free_port_pair() -> int:
    """A port P such that P and P + 1 were both free just now (one per worker process)."""
    import socket

    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two consecutive free ports")


def test_run_with_processes_starts_a_group_that_shares_the_shards_and_stops_as_one(
    tmp_path, server
):
    import urllib.request

    stream = server.add_stream("Orders", shards=4)
    every = fill(server, stream)
    db = tmp_path / "fanout.db"
    port = free_port_pair()
    path = config(tmp_path / "group.yaml", server, stream, db, handler_sink("audit"))
    path.write_text(
        path.read_text().replace(
            "http: {enabled: false}", f"http: {{host: 127.0.0.1, port: {port}}}"
        )
    )
    group = Worker(path, tmp_path, "group", FANOUT_PROCESSES="2")
    # the supervisor's argv has no --processes: the environment sets the config's processes
    try:
        wait_until(lambda: len(owners(db, "group")) == 2, 60, "two worker processes")
        wait_until(lambda: sorted(owners(db, "group").values()) == [2, 2], 30, "shares")
        wait_until(lambda: seqs_of(group, "audit") == every, 30, "every record")
        for offset in (0, 1):  # one endpoint per process, on consecutive ports
            with urllib.request.urlopen(f"http://127.0.0.1:{port + offset}/healthz") as answer:
                assert answer.status == 200
        pids = {line["pid"] for line in group.deliveries()}
        assert len(pids) == 2
        assert group.proc.pid not in pids
    finally:
        group.signal(signal.SIGTERM)
        code = group.wait(60)
    assert code == 0
    assert owners(db, "group") == Counter()  # every lease released on the way out
    started = group.events("processes_started")
    assert started[0]["processes"] == 2
