"""Crash-safe appends to a JSON-lines file: a write that fails leaves no fragment behind.

A full disk (``ENOSPC``), a file size limit (``EFBIG``) or an I/O error can stop a write
part way. Left alone, the fragment stays at the end of the file, and the retry appends the
whole entry onto it: one line that no reader can parse, and a record that looks written
but is not. ``AppendFile.append`` therefore remembers where the write started and, if any
part of it fails (write, or fsync), cuts the file back to there before raising. A tail
without a newline found when the file is opened (a write cut short by a crash: it was
never acknowledged) is cut off the same way.

The methods block: call them from a thread (``fanout.isolation.Offload``), one at a time.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

log = logging.getLogger("fanout.files")

DEFAULT_MODE = 0o600
"""Files are created readable and writable by their owner only: they hold whole records."""

# Every write goes through here: the seam tests use to fill the disk.
_write = os.write

_CHUNK = 1 << 16


class AppendFile:
    """A file that whole lines are appended to, by this process only.

    Args:
        path: the file; it and its directory are created on first use.
        mode: permission bits of a file this creates (exactly these, whatever the umask);
            an existing file keeps its own.
        fsync: fsync after every append (before ``append`` returns).
    """

    def __init__(self, path: str | Path, mode: int = DEFAULT_MODE, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.mode = mode
        self.fsync = fsync
        self._fd: int | None = None

    def open(self) -> None:
        """Open (creating the file and its directory), and cut off a torn last line."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, self.mode)
        except FileExistsError:
            fd = os.open(self.path, flags)
        else:
            try:
                os.fchmod(fd, self.mode)  # the umask narrowed what os.open was given
            except OSError:
                os.close(fd)
                raise
        try:
            self._cut_torn_tail(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def append(self, data: bytes) -> None:
        """Append ``data`` (whole lines) and, with ``fsync``, make it durable.

        Raises:
            OSError: nothing of ``data`` is left in the file (it was cut back), or, if even
                that failed, the file is reopened and repaired before the next append.
        """
        self.open()
        fd = self._fd
        assert fd is not None
        start = os.fstat(fd).st_size  # O_APPEND: the write lands at the end
        try:
            view = memoryview(data)
            while view:
                written = _write(fd, view)
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            self._cut(fd, start, exc)
            raise

    def close(self) -> None:
        """Close the file (the next ``append`` opens it again)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _cut(self, fd: int, start: int, cause: OSError) -> None:
        try:
            if os.fstat(fd).st_size != start:
                os.ftruncate(fd, start)
                os.fsync(fd)
        except OSError as exc:
            # The fragment may still be there: close, so the next append reopens the file
            # and cuts its torn tail first.
            log.error(
                "append_not_undone",
                extra={"path": str(self.path), "error": str(exc), "cause": str(cause)},
            )
            self.close()

    def _cut_torn_tail(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        end = size
        keep = 0
        while end > 0:  # find the last newline, reading backwards
            begin = max(0, end - _CHUNK)
            chunk = os.pread(fd, end - begin, begin)
            newline = chunk.rfind(b"\n")
            if newline != -1:
                keep = begin + newline + 1
                break
            end = begin
        os.ftruncate(fd, keep)
        os.fsync(fd)
        log.warning(
            "torn_line_removed",
            extra={
                "path": str(self.path),
                "bytes": size - keep,
                "note": "a write cut short by a crash; it was never acknowledged",
            },
        )
