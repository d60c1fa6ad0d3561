"""Crash-safe appends: a failed write leaves no fragment, files are created 0600."""

from __future__ import annotations

import errno
import os
import stat

import orjson
import pytest

from fanout import appendfile
from fanout.appendfile import AppendFile


def lines(n: int, start: int = 0) -> bytes:
    return b"".join(orjson.dumps({"n": i, "pad": "x" * 50}) + b"\n" for i in range(start, n))


class FullDisk:
    """``os.write`` with room for ``room`` more bytes: a write past it is cut short, the
    next one fails with ENOSPC, as a full file system answers."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.refused = 0

    def __call__(self, fd: int, data: memoryview | bytes) -> int:
        if self.room <= 0:
            self.refused += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        part = bytes(data[: self.room])
        self.room -= len(part)
        return os.write(fd, part)


def test_a_write_that_fails_part_way_is_cut_back(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    file = AppendFile(path)
    file.append(lines(3))
    disk = FullDisk(room=100)
    monkeypatch.setattr(appendfile, "_write", disk)
    with pytest.raises(OSError, match="No space"):
        file.append(lines(6, start=3))
    assert disk.refused == 1
    assert path.read_bytes() == lines(3)  # nothing of the failed write is left
    disk.room = 1 << 20  # space is back: the retry lands whole, on a line of its own
    file.append(lines(6, start=3))
    assert path.read_bytes() == lines(6)


def test_a_failed_fsync_cuts_the_write_back(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    file = AppendFile(path)
    file.append(lines(2))

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as mp:
        mp.setattr(os, "fsync", broken)
        with pytest.raises(OSError, match="Input/output"):
            file.append(lines(4, start=2))
    assert path.read_bytes() == lines(2)


def test_a_torn_last_line_from_a_crash_is_cut_off_on_open(tmp_path, caplog):
    path = tmp_path / "out.jsonl"
    path.write_bytes(lines(2) + b'{"n": 2, "pad": "xx')
    file = AppendFile(path)
    file.append(lines(3, start=2))
    assert path.read_bytes() == lines(3)
    assert "torn_line_removed" in caplog.text


def test_a_file_without_any_newline_is_cut_to_nothing(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"x" * 200_000)
    AppendFile(path).append(lines(1))
    assert path.read_bytes() == lines(1)


def test_files_are_created_with_the_mode_asked_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        AppendFile(tmp_path / "a" / "private.jsonl").append(b"{}\n")
        AppendFile(tmp_path / "shared.jsonl", mode=0o660).append(b"{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "private.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "shared.jsonl").stat().st_mode) == 0o660


def test_an_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"")
    path.chmod(0o644)
    AppendFile(path).append(b"{}\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
