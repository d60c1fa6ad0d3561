"""DynamoDB Local (AWS's emulator, with Streams) for development and tests.

The emulator ships inside the npm package ``amplify-dynamodb-simulator`` as
``emulator/DynamoDBLocal.jar`` plus ``emulator/DynamoDBLocal_lib``. :func:`fetch` downloads it
once with ``npm pack`` into a cache directory; :class:`DynamoDBLocal` runs it with ``java``
(Java 17 on ``PATH``) in memory on a free port and stops it again.

Cache directory: ``$FANOUT_CACHE_DIR`` if set, otherwise ``.cache/dynamodb-local`` relative to
the current working directory. The emulator lands in ``<cache>/emulator``.

Command line::

    python -m fanout.testing.dynamodb_local fetch             # download into the cache (once)
    python -m fanout.testing.dynamodb_local start [--port N]  # run until Ctrl-C / SIGTERM

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

import argparse
import atexit
import collections
import hashlib
import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from types import FrameType, TracebackType
from typing import IO, Self

log = logging.getLogger("fanout.testing.dynamodb_local")

PACKAGE = "amplify-dynamodb-simulator"
PACKAGE_VERSION = "2.9.30"
"""Pinned npm package version; it carries DynamoDB Local 1.25.1."""
JAR_SHA256 = "454305e9bc3e6ebcca5b62569869e31563b8d7e346474e94557b2600702146c7"
"""SHA-256 of ``DynamoDBLocal.jar`` in :data:`PACKAGE_VERSION`; update both together."""
ARCHIVE_PREFIX = "package/emulator/"
JAR = "DynamoDBLocal.jar"
LIB = "DynamoDBLocal_lib"
HOST = "127.0.0.1"

_STALE_TEMP_SECONDS = 3600.0
_OUTPUT_LINES = 200
# DynamoDB Local keeps running after these (bind failures); treat them as a failed start.
_FATAL_OUTPUT = ('Exception in thread "main"', "Failed to bind", "Address already in use")
_BIND_FAILURE = ("Failed to bind", "Address already in use")
_PORT_ATTEMPTS = 3


class LocalServiceError(RuntimeError):
    """DynamoDB Local could not be fetched, started or reached."""


class UnsafeArchiveError(LocalServiceError):
    """The package archive holds a member that would land outside the target directory."""


# --------------------------------------------------------------------------- fetch


def default_cache_dir(base: Path | None = None) -> Path:
    """``$FANOUT_CACHE_DIR``, else ``.cache/dynamodb-local`` under `base` (default: cwd)."""
    env = os.environ.get("FANOUT_CACHE_DIR")
    if env:
        return Path(env)
    return (base if base is not None else Path.cwd()) / ".cache" / "dynamodb-local"


def fetch(cache_dir: Path | None = None, *, npm: str = "npm") -> Path:
    """Make sure DynamoDB Local is in `cache_dir` and return its ``emulator`` directory.

    Nothing is downloaded when ``<cache_dir>/emulator/DynamoDBLocal.jar`` exists. Otherwise
    ``npm pack amplify-dynamodb-simulator@<PACKAGE_VERSION>`` runs in a private temporary
    directory inside `cache_dir`, only ``package/emulator/`` is extracted, the jar's checksum
    is verified and the finished tree is renamed into place, so an interrupted or concurrent
    fetch never leaves a partial ``emulator`` directory behind.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    emulator = cache_dir / "emulator"
    if (emulator / JAR).is_file():
        return emulator

    npm_path = shutil.which(npm)
    if npm_path is None:
        raise LocalServiceError(
            f"{npm!r} not found on PATH: it is needed once to download DynamoDB Local "
            f"(npm pack {PACKAGE}@{PACKAGE_VERSION}) into {emulator}. Install Node.js/npm."
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(cache_dir)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_dir))
    try:
        started = time.monotonic()
        log.info("downloading %s@%s with npm pack", PACKAGE, PACKAGE_VERSION)
        archive = _npm_pack(npm_path, work / "pack")
        staged = work / "emulator"
        safe_extract(archive, staged, ARCHIVE_PREFIX)
        jar = staged / JAR
        if not jar.is_file():
            raise LocalServiceError(f"{PACKAGE}@{PACKAGE_VERSION} has no {ARCHIVE_PREFIX}{JAR}")
        digest = _sha256(jar)
        if digest != JAR_SHA256:
            raise LocalServiceError(
                f"{JAR} from {PACKAGE}@{PACKAGE_VERSION} has SHA-256 {digest}, "
                f"expected {JAR_SHA256}"
            )
        _install(staged, emulator)
        log.info("DynamoDB Local fetched into %s (%.1fs)", emulator, time.monotonic() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return emulator


def _npm_pack(npm: str, dest: Path) -> Path:
    dest.mkdir()
    spec = f"{PACKAGE}@{PACKAGE_VERSION}"
    try:
        result = subprocess.run(
            [npm, "pack", spec, "--silent"],
            cwd=dest,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalServiceError(f"npm pack {spec} did not finish in {exc.timeout:.0f}s") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise LocalServiceError(f"npm pack {spec} failed ({result.returncode}):\n{output}")
    archives = sorted(dest.glob("*.tgz"))
    if len(archives) != 1:
        raise LocalServiceError(f"npm pack {spec} left {len(archives)} archives in {dest}")
    return archives[0]


def safe_extract(archive: Path, dest: Path, prefix: str) -> None:
    """Extract the members of `archive` under `prefix` into `dest`, with `prefix` removed.

    Only regular files and directories are accepted; absolute names, ``..`` components,
    links and device files raise :class:`UnsafeArchiveError` before anything is written
    outside `dest`. File modes are reduced to 0644 / 0755.
    """
    prefix = prefix.strip("/") + "/"
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            relative = _member_path(member.name, prefix)
            if relative is None:
                continue
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(f"{member.name!r} in {archive} is not a regular file")
            target = root.joinpath(*relative.parts)
            if not target.resolve().is_relative_to(root):
                raise UnsafeArchiveError(f"{member.name!r} in {archive} leaves {dest}")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # regular files always have data
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
            target.chmod(0o755 if member.mode & 0o111 else 0o644)


def _member_path(name: str, prefix: str) -> PurePosixPath | None:
    """The path of archive member `name` below `prefix`; None when it is outside `prefix`."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name:
        # checked before the prefix so that "package/emulator/../../x" is refused, not skipped
        raise UnsafeArchiveError(f"unsafe member name {name!r}")
    top = PurePosixPath(prefix)
    if path == top or not path.is_relative_to(top):
        return None
    return path.relative_to(top)


def _install(staged: Path, emulator: Path) -> None:
    """Rename the finished tree into place; a tree that is already complete wins."""
    try:
        staged.rename(emulator)
        return
    except OSError:
        if (emulator / JAR).is_file():
            return  # a concurrent fetch finished first
    # an incomplete tree that did not come from fetch(): move it aside, then retry
    aside = emulator.with_name(f".stale-{os.getpid()}-{time.monotonic_ns()}")
    emulator.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)
    staged.rename(emulator)


def _remove_stale_temp_dirs(cache_dir: Path) -> None:
    """Remove temporary directories of fetches that were killed long ago."""
    cutoff = time.time() - _STALE_TEMP_SECONDS
    for pattern in (".fetch-*", ".stale-*"):
        for path in cache_dir.glob(pattern):
            try:
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- run


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


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fanout.testing.dynamodb_local", description="Fetch and run DynamoDB Local."
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="cache directory (default: $FANOUT_CACHE_DIR or ./.cache/dynamodb-local)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download DynamoDB Local into the cache (no-op when cached)")
    start = sub.add_parser("start", help="run DynamoDB Local in the foreground until stopped")
    start.add_argument("--port", type=int, help="port to listen on (default: a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        emulator = fetch(args.cache_dir)
        if args.command == "fetch":
            print(emulator)
            return 0
        return _serve(DynamoDBLocal(args.port, emulator_dir=emulator))
    except LocalServiceError as exc:
        print(f"fanout.testing.dynamodb_local: {exc}", file=sys.stderr)
        return 1


def _serve(ddb: DynamoDBLocal) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ddb:
            print(ddb.endpoint_url, flush=True)
            while not stop.wait(0.5):
                # Ctrl-C in a terminal reaches DynamoDB Local too: give our handler a moment
                if not ddb.running and not stop.wait(0.5):
                    print(
                        f"fanout.testing.dynamodb_local: DynamoDB Local exited\n{ddb.output}",
                        file=sys.stderr,
                    )
                    return 1
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
