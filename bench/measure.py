"""What a measured child process reports about itself: its measured window, its peak RSS,
and the READY line the driver waits for (``bench.child`` and ``bench.budget`` use them)."""

from __future__ import annotations

import resource
import sys
import time


class Window:
    """Wall and CPU time of the measured part of a run."""

    def __init__(self) -> None:
        self.wall0 = self.cpu0 = 0.0
        self.wall = self.cpu = 0.0

    def start(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def peak_rss_mb() -> float:
    """This process's peak resident set size.

    ``VmHWM`` belongs to the process's own address space; ``ru_maxrss`` would not do: Linux
    carries it over ``execve`` from the parent's address space (the benchmark driver, which
    holds the stream server's records).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def ready() -> None:
    """Tell the driver the child is ready (it reads the child's standard output)."""
    sys.stdout.write("READY\n")
    sys.stdout.flush()
