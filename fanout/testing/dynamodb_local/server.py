"""Running DynamoDB Local: one in-memory process on a free port, started and stopped.

:class:`DynamoDBLocal` runs the emulator that :func:`fanout.testing.dynamodb_local.fetch`
downloaded with ``java`` (Java 17 on ``PATH``).

Notes on DynamoDB Local 1.25.1:

* it has no option to choose the listen address and binds every interface; clients always
  use ``http://127.0.0.1:<port>``. The port is random unless given and the data lives in
  memory only;
* it runs with ``-sharedDb`` by default so every client sees the same tables whatever
  credentials and region it signs with, and with telemetry off (``-disableTelemetry`` and
  ``DDB_LOCAL_TELEMETRY=0``);
* when it cannot bind its port it prints a stack trace but keeps running, and it exits with
  status 0 on unknown options, so start-up watches the output as well as the exit status.
"""

from __future__ import annotations

import atexit
import collections
import http.client
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from fanout.testing.dynamodb_local.download import JAR, LIB, LocalServiceError, fetch

log = logging.getLogger("fanout.testing.dynamodb_local")

HOST = "127.0.0.1"

_OUTPUT_LINES = 200
# DynamoDB Local keeps running after these (bind failures); treat them as a failed start.
_FATAL_OUTPUT = ('Exception in thread "main"', "Failed to bind", "Address already in use")
_BIND_FAILURE = ("Failed to bind", "Address already in use")
_PORT_ATTEMPTS = 3


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def probe(endpoint_url: str, timeout: float = 2.0) -> bool:
    """True when a DynamoDB API answers ListTables at `endpoint_url` (``http://`` only).

    The request carries made-up credentials (DynamoDB Local checks only their shape) and
    goes straight to the given host: proxy settings do not apply.
    """
    url = urllib.parse.urlsplit(endpoint_url)
    if url.scheme != "http" or not url.hostname:
        raise ValueError(f"not an http:// endpoint: {endpoint_url!r}")
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
    try:
        conn.request(
            "POST",
            url.path or "/",
            body=b"{}",
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": "DynamoDB_20120810.ListTables",
                "X-Amz-Date": "20240101T000000Z",
                "Authorization": (
                    "AWS4-HMAC-SHA256 Credential=local/20240101/us-east-1/dynamodb/"
                    "aws4_request, SignedHeaders=content-type;host;x-amz-target, Signature=00"
                ),
            },
        )
        response = conn.getresponse()
        return response.status == 200 and b"TableNames" in response.read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class DynamoDBLocal:
    """One DynamoDB Local process, in memory, reachable at :attr:`endpoint_url`.

    Use as a context manager or call :meth:`start` and :meth:`stop`. `port` None picks a free
    port (and retries with another if it was taken meanwhile). `emulator_dir` None runs
    :func:`fetch` with the default cache directory. `java` is the Java launcher (name on
    ``PATH`` or a path). A process still running at interpreter exit is stopped then.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        emulator_dir: Path | None = None,
        java: str = "java",
        java_options: Sequence[str] = (),
        shared_db: bool = True,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.requested_port = port
        self.emulator_dir = emulator_dir
        self.java = java
        self.java_options = tuple(java_options)
        self.shared_db = shared_db
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES)
        self._lock = threading.Lock()
        self._fatal = threading.Event()

    # ---- public API

    @property
    def endpoint_url(self) -> str:
        if self.port is None or self._proc is None:
            raise LocalServiceError("DynamoDB Local is not running; call start() first")
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def output(self) -> str:
        """The last lines DynamoDB Local printed (stdout and stderr)."""
        with self._lock:
            return "".join(self._lines)

    def command(self, port: int, emulator: Path) -> list[str]:
        """The command line that runs DynamoDB Local from `emulator` on `port`."""
        java = shutil.which(self.java)
        if java is None:
            raise LocalServiceError(
                f"{self.java!r} not found on PATH: DynamoDB Local needs a Java runtime "
                "(Java 17, e.g. apt-get install openjdk-17-jre-headless)"
            )
        args = [
            java,
            f"-Djava.library.path={emulator / LIB}",
            *self.java_options,
            "-jar",
            str(emulator / JAR),
            "-inMemory",
            "-port",
            str(port),
            "-disableTelemetry",
        ]
        if self.shared_db:
            args.append("-sharedDb")
        return args

    def start(self) -> Self:
        """Start DynamoDB Local and wait until it answers; raise LocalServiceError if not."""
        if self._proc is not None:
            raise LocalServiceError("DynamoDB Local is already started")
        emulator = self.emulator_dir if self.emulator_dir is not None else fetch()
        if not (emulator / JAR).is_file():
            raise LocalServiceError(
                f"{emulator / JAR} is missing; run: python -m fanout.testing.dynamodb_local fetch"
            )
        attempts = 1 if self.requested_port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self.requested_port if self.requested_port is not None else free_port()
            try:
                self._launch(port, emulator)
                return self
            except LocalServiceError:
                bind_failure = any(text in self.output for text in _BIND_FAILURE)
                if attempt == attempts or not bind_failure:
                    raise
                log.info("port %d was taken meanwhile; trying another", port)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the process: SIGTERM, then SIGKILL after `stop_timeout`. Safe to repeat."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        self.port = None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(5.0)
            self._reader = None
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running at {self.endpoint_url}" if self.running else "stopped"
        return f"<DynamoDBLocal {state}>"

    # ---- internals

    def _launch(self, port: int, emulator: Path) -> None:
        command = self.command(port, emulator)
        with self._lock:
            self._lines.clear()
        self._fatal.clear()
        env = dict(os.environ, DDB_LOCAL_TELEMETRY="0")
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                command,
                cwd=emulator,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            raise LocalServiceError(f"cannot run {command[0]}: {exc}") from exc
        assert proc.stdout is not None
        self._proc, self.port = proc, port
        atexit.register(self.stop)
        self._reader = threading.Thread(
            target=self._drain, args=(proc.stdout,), name=f"dynamodb-local-{port}", daemon=True
        )
        self._reader.start()
        try:
            self._wait_ready(proc, started)
        except BaseException:
            self.stop()
            raise
        log.info(
            "DynamoDB Local at %s (pid %d, %.1fs)",
            self.endpoint_url,
            proc.pid,
            time.monotonic() - started,
        )

    def _wait_ready(self, proc: subprocess.Popen[bytes], started: float) -> None:
        url = f"http://{HOST}:{self.port}"
        deadline = started + self.startup_timeout
        while True:
            code = proc.poll()
            if code is not None:
                self._join_reader()
                raise LocalServiceError(
                    f"DynamoDB Local exited during start-up with status {code}"
                    f"{self._output_for_error()}"
                )
            if self._fatal.is_set():
                time.sleep(0.2)  # let the rest of the stack trace arrive
                raise LocalServiceError(
                    f"DynamoDB Local failed to start on port {self.port}{self._output_for_error()}"
                )
            if probe(url, timeout=min(2.0, max(0.1, deadline - time.monotonic()))):
                return
            if time.monotonic() >= deadline:
                raise LocalServiceError(
                    f"DynamoDB Local did not answer at {url} within "
                    f"{self.startup_timeout:g}s{self._output_for_error()}"
                )
            time.sleep(0.1)

    def _drain(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            with self._lock:
                self._lines.append(line)
            if any(text in line for text in _FATAL_OUTPUT):
                self._fatal.set()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(2.0)

    def _output_for_error(self) -> str:
        output = self.output.strip()
        return f"; its output:\n{output}" if output else " (no output)"
