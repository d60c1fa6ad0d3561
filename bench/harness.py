"""Plumbing shared by the scenarios: the environment, measured child processes, statistics."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

REPO = Path(__file__).resolve().parents[1]
REGION = "us-east-1"

# Variables that could point a client at a real account, profile or endpoint.
_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
)


def local_env(tree: Path = REPO) -> dict[str, str]:
    """The environment for every process of the benchmark: dummy credentials, loopback only.

    ``tree`` is the source tree the process imports fanout and bench from (``PYTHONPATH``).
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _AWS_VARIABLES and not k.startswith("AWS_ENDPOINT_URL_")
    }
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONPATH=str(tree),
    )
    return env


def use_local_env() -> None:
    """Apply :func:`local_env` to this process (for clients the driver itself runs)."""
    os.environ.clear()
    os.environ.update(local_env())


class ChildError(RuntimeError):
    """A measured child process failed."""


class Child:
    """A ``python -m bench.child`` process running one consumer from a JSON spec.

    ``tree`` is the source tree whose ``bench/child.py`` runs, with that tree as working
    directory and ``PYTHONPATH`` (an older checkout for a baseline; this one by default).
    """

    def __init__(
        self,
        spec: dict[str, Any],
        log: Path,
        *,
        profile: Path | None = None,
        tree: Path = REPO,
    ) -> None:
        self.spec = spec
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log.open("wb")
        command = [sys.executable, "-m", "bench.child"]
        if profile is not None:
            # py-spy samples the child from outside; it adds no work to the measured process.
            spy = str(Path(sys.executable).with_name("py-spy"))
            command = [spy, "record", "-o", str(profile), "-f", "raw", "-r", "250", "--nonblocking"]
            command += ["--", sys.executable, "-m", "bench.child"]
        self.proc = subprocess.Popen(
            command,
            cwd=tree,
            env=local_env(tree),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(spec))
        self.proc.stdin.close()
        self._lines: list[bytes] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == b"READY":
                self._ready.set()
            else:
                self._lines.append(line)
        self._ready.set()

    def wait_ready(self, timeout: float) -> None:
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            self.result(timeout=5)  # raises with the child's output
            raise ChildError(f"{self.spec['consumer']} was not ready within {timeout:.0f}s")

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = -9
        self._reader.join(5)
        self._log.close()
        for line in reversed(self._lines):
            if line.startswith(b"{"):
                result: dict[str, Any] = orjson.loads(line)
                if code == 0:
                    return result
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise ChildError(
            f"{self.spec['consumer']} exited with {code}; log {self.log_path}:\n{tail}"
        )

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the child used so far, from /proc (Linux)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return float("nan")
        # fields[11] and fields[12] are utime and stime (fields 14 and 15 of proc(5))
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        """Kill the child if it still runs and release its pipes and log file."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


@contextmanager
def child(
    spec: dict[str, Any], log: Path, *, profile: Path | None = None, tree: Path = REPO
) -> Iterator[Child]:
    proc = Child(spec, log, profile=profile, tree=tree)
    try:
        yield proc
    finally:
        proc.close()


def run_child(
    spec: dict[str, Any],
    log: Path,
    timeout: float,
    *,
    profile: Path | None = None,
    tree: Path = REPO,
) -> dict[str, Any]:
    with child(spec, log, profile=profile, tree=tree) as proc:
        return proc.result(timeout)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)
