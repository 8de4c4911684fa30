"""A local file that keeps audit lines while the bot's store is down, until they can be written.

One JSON object per line, appended with flush + fsync. Two locks, both `fcntl.flock`:

- the spool lock, on the spool file itself, is held only for local file work (append one line,
  read a snapshot, cut the drained lines off): never across a store query, so an append never
  waits on a drain whose store hangs;
- the drain lock, on `<spool>.drain`, is held by one drainer, across its store writes: a second
  drainer (this process or another) finds it busy and leaves the lines to the first.

A drain reads a snapshot, writes it elsewhere, then removes exactly those bytes from the head of
the spool (writing the rest to a new file and renaming it in place), so lines appended meanwhile
stay for the next drain. An appender that locked a file which was renamed away meanwhile opens the
new one and tries again. Locks are polled (never blocking the event loop) with a bounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_MODE = 0o600  # audit lines name people and actions: not for other local users
LOCK_POLL_S = (0.005, 0.2)  # first and longest wait between lock attempts
LOCK_WAIT_S = 5.0  # the spool lock guards local file work only: longer means a stuck process


class SpoolBusy(OSError):
    """The spool lock was not free within LOCK_WAIT_S (another process stopped while holding it)."""


@dataclass
class SpoolBatch:
    """A snapshot of the spool's lines; `clear()` removes them once they are safely elsewhere.

    `busy` is True when another drainer holds the spool: the batch is empty and left to it.
    """

    lines: list[dict[str, Any]]
    unreadable: list[bytes] = field(default_factory=list)
    busy: bool = False
    _snapshot: bytes = b""
    _spool: AuditSpool | None = None

    def clear(self) -> None:
        # Lines that never parsed (a crash mid-write) are kept aside rather than silently lost.
        if self.unreadable and self._spool is not None:
            _append_bytes(self._spool.rejected_path, b"".join(line + b"\n" for line in self.unreadable))
            log.warning("audit spool: %d unreadable line(s) kept aside", len(self.unreadable))
        if self._spool is not None and self._snapshot:
            self._spool.remove_head(self._snapshot)
        self.lines = []
        self.unreadable = []
        self._snapshot = b""


class AuditSpool:
    """The spool file at `path`; the folder is created on first append."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rejected_path = path.with_name(path.name + ".rejected")
        self.drain_lock_path = path.with_name(path.name + ".drain")

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
        """Add one line durably (flush + fsync) before returning; SpoolBusy if the lock never frees."""
        data = json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        fd = await self._locked_spool()
        try:
            _write_line(fd, data)
        finally:
            os.close(fd)  # closing releases the flock

    @asynccontextmanager
    async def taken(self) -> AsyncIterator[SpoolBatch]:
        """Be the one drainer and yield a snapshot; `batch.clear()` once its lines are stored."""
        if not self.path.exists():
            yield SpoolBatch(lines=[])
            return
        drain_fd = _open_private(self.drain_lock_path, os.O_RDWR | os.O_CREAT)
        try:
            if _try_lock(drain_fd):
                fd = await self._locked_spool()
                try:
                    raw = _read_fd(fd)
                finally:
                    os.close(fd)
                lines, unreadable = _parse(raw)
                batch = SpoolBatch(lines=lines, unreadable=unreadable, _snapshot=raw, _spool=self)
            else:
                batch = SpoolBatch(lines=[], busy=True)
            yield batch
        finally:
            os.close(drain_fd)  # closing releases the drain lock

    def remove_head(self, snapshot: bytes) -> None:
        """Cut `snapshot` off the head of the spool, keeping whatever was appended after it."""
        fd = _lock_blocking(self.path)
        try:
            current = _read_fd(fd)
            if not current.startswith(snapshot):
                log.error("audit spool changed under its drainer: every line kept (replays are idempotent)")
                return
            rest = current[len(snapshot) :].lstrip(b"\n")
            _replace(self.path, rest)
        finally:
            os.close(fd)

    async def _locked_spool(self) -> int:
        """An fd of the current spool file with its lock held (a file renamed away is left)."""
        give_up = time.monotonic() + LOCK_WAIT_S
        while True:
            fd = _open_spool(self.path)
            try:
                await _lock(fd, give_up)
                if _same_file(fd, self.path):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


async def _lock(fd: int, give_up: float) -> None:
    wait = LOCK_POLL_S[0]
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= give_up:
                raise SpoolBusy("audit spool lock held too long by another process") from None
            await asyncio.sleep(wait)
            wait = min(wait * 2, LOCK_POLL_S[1])


def _lock_blocking(path: Path) -> int:
    """The spool lock for a short synchronous step (its holders only do local file work)."""
    give_up = time.monotonic() + LOCK_WAIT_S
    while True:
        fd = _open_spool(path)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= give_up:
                        raise SpoolBusy("audit spool lock held too long by another process") from None
                    time.sleep(LOCK_POLL_S[0])
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _replace(path: Path, data: bytes) -> None:
    """Write `data` to a new file and rename it over `path` (durable, never half-written)."""
    temp = path.with_name(path.name + ".new")
    fd = _open_private(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    temp.replace(path)
    _fsync_dir(path.parent)


def _open_private(path: Path, flags: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, flags, FILE_MODE)


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
