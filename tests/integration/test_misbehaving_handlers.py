"""No handler can take the worker down: a real worker process per misbehaving handler.

Each case runs ``fanout run`` against the controllable stream server with two sinks on one
stream: ``bad``, a handler that misbehaves on the records whose key starts with ``bad-``
(``misbehaving_handlers``), and ``audit``, a file sink. For every case it shows:

* the worker stays up (and ``/healthz`` answers: its event loop runs);
* ``audit`` gets every record, once, in stream order;
* the handler gets every good record, and exactly the bad ones are dead-lettered, with
  the reason;
* the worker's thread count stays bounded (``/proc/<pid>/status``, sampled all along);
* SIGTERM ends it within ``shutdown_grace`` with exit code 0, and no handler worker
  process outlives it.

The cases run at once, one worker process each, to keep the suite short.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from fanout.testing.streamserver import Change, StreamServer
from tests.integration.process import WorkerProcess, read_lines

pytestmark = pytest.mark.integration

HANDLERS = "tests.integration.misbehaving_handlers"
RECORDS = 20
BAD = {6, 15}  # positions of the records the handlers misbehave on
KEYS = [f"bad-{i:02d}" if i in BAD else f"ok-{i:02d}" for i in range(RECORDS)]
GRACE = 3.0
# Threads of a worker besides its handler's: main, watchdog, the file sink's, the dead-letter
# file's, the store's, asyncio's default executor (DNS); 5 or 6 measured, room for more.
# With isolation: process, one thread per worker process waits for its exit (asyncio's child
# watcher): max_concurrency at most, as with threads.
BASE_THREADS = 10


@dataclass
class Case:
    """One misbehaving handler, how it is isolated, and what its dead letters say."""

    name: str
    handler: str
    isolation: str
    error_class: str
    message: str  # in the dead-letter reason
    options: dict[str, Any] = field(default_factory=dict)
    concurrency: int = 2


CASES = [
    Case("sys.exit(0)", "exits", "thread", "HandlerCrashed", "SystemExit: 0"),
    Case("KeyboardInterrupt", "interrupts", "thread", "HandlerCrashed", "KeyboardInterrupt"),
    Case("custom BaseException", "dooms", "process", "HandlerCrashed", "Doom: a BaseException"),
    Case("CancelledError", "cancels", "thread", "HandlerCrashed", "CancelledError"),
    # A plain function cannot be stopped: each timed-out call keeps one of the 10 threads.
    Case("sync infinite loop", "hangs", "thread", "HandlerTimeout", "timed out", concurrency=10),
    Case("sync infinite loop, spinning", "spins", "process", "HandlerTimeout", "was killed"),
    Case("async time.sleep", "blocks_the_loop", "process", "HandlerTimeout", "was killed"),
    Case("garbage response", "garbage", "thread", "InvalidResponse", "unknown itemIdentifier"),
    Case(
        "memory leak",
        "leaks",
        "process",
        "HandlerCrashed",
        "ran out of memory",
        # Touching 256 MB takes a while on a busy machine: the timeout is not what stops it.
        {"memory_limit_in_mb": 256, "timeout": 20},
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def threads_of(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads")))


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class Watcher:
    """Samples a worker's thread count and child processes until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_threads = 0
        self.children: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.max_threads = max(self.max_threads, threads_of(self.pid))
            self.children |= children_of(self.pid)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Run:
    case: Case
    dir: Path
    port: int
    worker: WorkerProcess
    watcher: Watcher

    @property
    def audit(self) -> list[dict[str, Any]]:
        return read_lines(self.dir / "audit.jsonl")

    @property
    def dead_letters(self) -> list[dict[str, Any]]:
        return read_lines(self.dir / "dlq-bad.jsonl")

    @property
    def handled(self) -> list[dict[str, Any]]:
        return read_lines(self.dir / "handled.jsonl")

    def done(self) -> bool:
        return (
            len(self.audit) >= RECORDS
            and len(self.dead_letters) >= len(BAD)
            and {r["key"] for r in self.handled} >= set(KEYS) - {KEYS[i] for i in BAD}
        )

    def log(self) -> str:
        return (self.dir / "worker.log").read_text(errors="replace")[-6000:]


def start(case: Case, table: str, endpoint: str, root: Path, **more: Any) -> Run:
    directory = root / table
    directory.mkdir()
    port = free_port()
    bad: dict[str, Any] = {
        "type": "handler",
        "handler": f"{HANDLERS}:{case.handler}",
        "isolation": case.isolation,
        "timeout": 1.0,
        "batch_size": 5,
        "max_concurrency": case.concurrency,
        "retry": {"max_attempts": 2, "initial_backoff": 0.05, "max_backoff": 0.1},
        "dead_letter": {"type": "file", "path": str(directory / "dlq-bad.jsonl")},
        **case.options,
    }
    config = {
        "streams": {
            "orders": {
                "table": table,
                "endpoint_url": endpoint,
                "region": "us-east-1",
                "max_idle_interval": 0.2,
            }
        },
        "checkpoints": {"path": str(directory / "fanout.db"), "interval": 0.2},
        "http": {"host": "127.0.0.1", "port": port},
        "shutdown_grace": GRACE,
        "sinks": {
            "bad": bad,
            "audit": {"type": "file", "path": str(directory / "audit.jsonl"), "batch_size": 7},
        },
        **more,
    }
    path = directory / "fanout.yaml"
    path.write_text(yaml.safe_dump(config))
    worker = WorkerProcess(path, directory / "handled.jsonl", directory / "worker.log")
    return Run(case, directory, port, worker, Watcher(worker.proc.pid))


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def terminate_all(runs: list[Run]) -> dict[str, tuple[int | None, float]]:
    """SIGTERM every worker at once; (exit code, seconds to exit) per case."""
    sent = time.monotonic()
    for run in runs:
        run.worker.proc.send_signal(signal.SIGTERM)
    result: dict[str, tuple[int | None, float]] = {}
    deadline = sent + GRACE + 20
    pending = list(runs)
    while pending and time.monotonic() < deadline:
        for run in list(pending):
            code = run.worker.proc.poll()
            if code is not None:
                result[run.case.name] = (code, time.monotonic() - sent)
                pending.remove(run)
        time.sleep(0.02)
    for run in pending:
        run.worker.kill()
        result[run.case.name] = (None, float("inf"))
    for run in runs:
        run.watcher.stop()
        run.worker.log.close()
    return result


@contextlib.contextmanager
def stream_server(tables: list[str]) -> Iterator[StreamServer]:
    server = StreamServer()
    for table in tables:
        stream = server.add_stream(table, keys=("pk",))
        server.put(
            stream.shards[0],
            [Change("INSERT", {"pk": {"S": k}}, {"pk": {"S": k}, "n": {"N": "1"}}) for k in KEYS],
        )
    with server.run_in_thread():
        yield server


def test_no_misbehaving_handler_takes_the_worker_down(tmp_path):
    tables = [f"T{i}" for i in range(len(CASES))]
    with stream_server(tables) as server:
        runs = [
            start(case, table, server.endpoint_url, tmp_path)
            for case, table in zip(CASES, tables, strict=True)
        ]
        try:
            finished = wait_until(lambda: all(run.done() for run in runs), timeout=90)
            assert finished, "\n\n".join(
                f"{run.case.name}: audit {len(run.audit)}, dead letters "
                f"{len(run.dead_letters)}, handled {len(run.handled)}\n{run.log()}"
                for run in runs
                if not run.done()
            )
            for run in runs:
                assert run.worker.proc.poll() is None, f"{run.case.name}: the worker exited"
                assert healthz(run.port), f"{run.case.name}: /healthz did not answer"
            time.sleep(0.5)  # anything left to happen (a duplicate, a stray write) happens
            exits = terminate_all(runs)
        finally:
            for run in runs:
                if run.worker.proc.poll() is None:
                    run.worker.kill()

    problems = []
    for run in runs:
        case = run.case
        try:
            check_run(run, exits[case.name])
        except AssertionError as exc:
            problems.append(f"{case.name}: {exc}\n{run.log()}")
    assert not problems, "\n\n".join(problems)


def check_run(run: Run, exit: tuple[int | None, float]) -> None:
    case = run.case
    # the other sink got every record, once, in stream order
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in run.audit] == KEYS
    # the handler got every good record; exactly the bad ones were given up, with a reason
    good = [k for i, k in enumerate(KEYS) if i not in BAD]
    assert sorted({r["key"] for r in run.handled}) == good
    letters = run.dead_letters
    assert sorted(e["record"]["dynamodb"]["Keys"]["pk"]["S"] for e in letters) == [
        KEYS[i] for i in sorted(BAD)
    ]
    for entry in letters:
        assert entry["sink"] == "bad"
        assert entry["error"]["class"] == case.error_class, entry["error"]
        assert case.message in entry["error"]["message"], entry["error"]
        assert entry["attempts"] == 2
    # bounded threads, all along
    bound = BASE_THREADS + case.concurrency
    assert 0 < run.watcher.max_threads <= bound, (run.watcher.max_threads, bound)
    # a handler never ran in the worker itself with process isolation, and never outlived it
    if case.isolation == "process":
        assert run.worker.proc.pid not in {r["pid"] for r in run.handled}
        assert run.watcher.children, "no worker process was seen"
        assert not [pid for pid in run.watcher.children if alive(pid)]
    code, seconds = exit
    assert code == 0, f"exit code {code}"
    assert seconds < GRACE + 1.5, f"took {seconds:.1f}s to exit after SIGTERM"


def test_sigterm_ends_a_worker_whose_handler_never_returns_within_the_grace(tmp_path):
    # Every call hangs (a plain function: its thread cannot be stopped); the timeout is far
    # away. SIGTERM drains for shutdown_grace, writes the checkpoint and exits.
    case = Case("hangs always", "hangs_always", "thread", "", "", {"timeout": 600})
    with stream_server(["T"]) as server:
        run = start(case, "T", server.endpoint_url, tmp_path)
        try:
            assert wait_until(lambda: len(run.audit) == RECORDS, timeout=60), run.log()
            assert wait_until(lambda: threads_of(run.worker.proc.pid) > 0, timeout=5)
            ((code, seconds),) = terminate_all([run]).values()
        finally:
            if run.worker.proc.poll() is None:
                run.worker.kill()
    assert code == 0, run.log()
    assert seconds < GRACE + 1.5, run.log()
    assert run.dead_letters == []
    lines = [orjson.loads(line) for line in run.log().splitlines() if line.startswith("{")]
    assert any(line["event"] == "drain_timed_out" for line in lines)


def test_a_handler_blocking_the_event_loop_is_reported_and_sigterm_still_ends_it(tmp_path):
    # An async handler calling time.sleep without process isolation stops the worker's event
    # loop: the watchdog names it, and SIGTERM still ends the process (forced, exit code 1).
    case = Case("blocks the loop", "blocks_the_loop", "thread", "", "", {"timeout": 600})
    with stream_server(["T"]) as server:
        run = start(case, "T", server.endpoint_url, tmp_path, loop_block_threshold=0.5)
        try:
            assert wait_until(lambda: "event_loop_blocked" in run.log(), timeout=60), run.log()
            assert not healthz(run.port)
            ((code, seconds),) = terminate_all([run]).values()
        finally:
            if run.worker.proc.poll() is None:
                run.worker.kill()
    lines = [orjson.loads(line) for line in run.log().splitlines() if line.startswith("{")]
    (blocked,) = [line for line in lines if line["event"] == "event_loop_blocked"]
    assert blocked["stack"][0].endswith("in blocks_the_loop"), blocked
    assert blocked["blocked_s"] > 0.5
    assert any(line["event"] == "shutdown_forced" for line in lines)
    assert code == 1
    assert GRACE + 4 < seconds < GRACE + 7.5  # shutdown_grace + EXIT_MARGIN_S
