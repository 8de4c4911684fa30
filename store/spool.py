"""A local file that keeps audit lines while the bot's store is down, until they can be written.

One JSON object per line, appended with flush + fsync. Every reader and writer takes an exclusive
`fcntl.flock` on the spool file itself, so two processes never drain the same lines twice and an
append never lands between a drain's read and its truncation. The lock is polled (never blocking
the event loop), so a drain and an append in the same process cannot deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_MODE = 0o600  # audit lines name people and actions: not for other local users
LOCK_POLL_S = (0.005, 0.2)  # first and longest wait between lock attempts


@dataclass
class SpoolBatch:
    """The lines read under the lock; `clear()` empties the spool once they are safely elsewhere."""

    lines: list[dict[str, Any]]
    unreadable: list[bytes] = field(default_factory=list)
    _fd: int = -1
    _rejected_path: Path | None = None

    def clear(self) -> None:
        # Lines that never parsed (a crash mid-write) are kept aside rather than silently lost.
        if self.unreadable and self._rejected_path is not None:
            _append_bytes(self._rejected_path, b"".join(line + b"\n" for line in self.unreadable))
            log.warning("audit spool: %d unreadable line(s) kept aside", len(self.unreadable))
        if self._fd >= 0:
            # Truncate in place, never unlink: a waiting appender holds this very inode.
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
        self.lines = []
        self.unreadable = []


class AuditSpool:
    """The spool file at `path`; the folder is created on first append."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rejected_path = path.with_name(path.name + ".rejected")

    def count(self) -> int:
        """How many complete lines wait in the spool."""
        try:
            return _read_all(self.path).count(b"\n")
        except FileNotFoundError:
            return 0

    def has_lines(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    async def append(self, line: dict[str, Any]) -> None:
        """Add one line durably (flush + fsync) before returning."""
        data = json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        fd = _open_spool(self.path)
        try:
            await _lock(fd)
            _write_line(fd, data)
        finally:
            os.close(fd)  # closing releases the flock

    @asynccontextmanager
    async def taken(self) -> AsyncIterator[SpoolBatch]:
        """Hold the spool exclusively, yield its lines; `batch.clear()` once they are stored."""
        if not self.path.exists():
            yield SpoolBatch(lines=[])
            return
        fd = _open_spool(self.path)
        try:
            await _lock(fd)
            lines, unreadable = _parse(_read_fd(fd))
            yield SpoolBatch(lines=lines, unreadable=unreadable, _fd=fd, _rejected_path=self.rejected_path)
        finally:
            os.close(fd)


async def _lock(fd: int) -> None:
    wait = LOCK_POLL_S[0]
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            await asyncio.sleep(wait)
            wait = min(wait * 2, LOCK_POLL_S[1])


def _open_spool(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
    if not existed:
        _fsync_dir(path.parent)  # the new file's name survives a power cut too
    return fd


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _write_line(fd: int, data: bytes) -> None:
    size = os.fstat(fd).st_size
    if size > 0:
        os.lseek(fd, size - 1, os.SEEK_SET)
        if os.read(fd, 1) != b"\n":
            data = b"\n" + data  # a crash left half a line: keep ours on its own line
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks: list[bytes] = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_all(path: Path) -> bytes:
    return path.read_bytes()


def _append_bytes(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse(raw: bytes) -> tuple[list[dict[str, Any]], list[bytes]]:
    lines: list[dict[str, Any]] = []
    unreadable: list[bytes] = []
    for chunk in raw.split(b"\n"):
        if not chunk.strip():
            continue
        try:
            value = json.loads(chunk)
        except ValueError:
            unreadable.append(chunk)
            continue
        if isinstance(value, dict):
            lines.append(value)
        else:
            unreadable.append(chunk)
    return lines, unreadable
