"""``fanout run --processes N``: N worker processes on this host, one group.

One process is one core (the GIL), so a host with more cores runs several workers. They
share the shards through the checkpoint store's leases like workers on different hosts, and
each gets ``--group-size N`` so they wait for one another (at most one lease duration)
before taking shards, and start with even shares.

The supervisor (this process) only starts, watches and stops them:

* worker *i* serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``http.port + i``
  (consecutive ports; ``http.port: 0`` gives each a free port of its own);
* SIGTERM or SIGINT is passed to every worker; each drains, checkpoints and releases its
  leases; the supervisor exits 0 when all of them did;
* a worker that exits on its own is not restarted: the supervisor stops the others the same
  way and exits with that worker's code (1 if it was 0), so whatever runs the supervisor
  (systemd, Kubernetes, Docker) restarts the group.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from fanout.config import Config

log = logging.getLogger("fanout.supervisor")

# Extra seconds past shutdown_grace a worker gets to exit before it is killed.
_EXIT_SLACK_S = 30.0


def supervise(config: Config, path: str, processes: int, log_format: str | None = None) -> int:
    """Run ``processes`` workers of ``path`` until they stop; returns the exit code."""
    settings = config.settings
    http = settings.http
    children: list[subprocess.Popen[bytes]] = []
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            log.info("signal_received", extra={"signal": signal.Signals(signum).name})
            stopping.append(signum)
            _terminate(children)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(processes):
            env = dict(os.environ)
            if http.enabled and http.port != 0:
                env["FANOUT_HTTP__PORT"] = str(http.port + index)
            argv = [sys.executable, "-m", "fanout", "run", "--config", path]
            argv += ["--group-size", str(processes)]
            if log_format:
                argv += ["--log-format", log_format]
            children.append(subprocess.Popen(argv, env=env))
        log.info(
            "processes_started",
            extra={
                "application": config.application,
                "processes": processes,
                "pids": [c.pid for c in children],
                "ports": [http.port + i for i in range(processes)]
                if http.enabled and http.port
                else None,
            },
        )
        code = _watch(children, stopping, settings.shutdown_grace)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    log.info("processes_stopped", extra={"code": code})
    return code


def _terminate(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            try:
                child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass


def _watch(children: list[subprocess.Popen[bytes]], stopping: list[int], grace: float) -> int:
    """Wait until every worker exited; the first to exit unasked stops the others."""
    code = 0
    while any(c.poll() is None for c in children):
        if not stopping:
            for child in children:
                status = child.poll()
                if status is not None:
                    code = status or 1
                    log.error(
                        "process_exited",
                        extra={"pid": child.pid, "code": status, "note": "stopping the others"},
                    )
                    stopping.append(0)
                    _terminate(children)
                    break
        if stopping:
            break
        time.sleep(0.2)
    deadline = time.monotonic() + grace + _EXIT_SLACK_S
    for child in children:
        try:
            status = child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("process_killed", extra={"pid": child.pid, "grace_s": grace})
            child.kill()
            status = child.wait()
        if status and not code:
            code = status if status > 0 else 1
    return code
