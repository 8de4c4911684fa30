"""Take a backup: pg_dump custom format streamed to `<name>.partial`, hashed as it is written,
checked with `pg_restore --list`, then fsynced and renamed. Also the backup directory's upkeep:
leftover partial files, retention, and reconciliation with the catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from core.errors import NotFound, RunbookFailed
from runbooks.pg_tools import (
    PgTools,
    check_tools_match_server,
    child_env,
    connect_target,
    count_rows_in,
    end_process_group,
    server_version_of,
    tail,
    tool_env,
)
from runbooks.progress import ProgressCallback, Step, report

__all__ = ["ProgressCallback", "Step", "report"]  # re-exported for the restore runbooks

log = logging.getLogger(__name__)

LOCK_WAIT_TIMEOUT_S = 60.0  # how long pg_dump (and the row counts) wait for a table another session locked
DUMP_TIMEOUT_S = 7200.0  # a whole backup, dump and check, after which it is abandoned
CHUNK_BYTES = 1 << 20
PROGRESS_INTERVAL_S = 0.5
PARTIAL_SUFFIX = ".partial"
DUMP_SUFFIX = ".dump"
F_SETPIPE_SZ = 1031  # Linux fcntl; a bigger pipe means fewer wake-ups per MiB


@dataclass(frozen=True)
class BackupFile:
    """A dump that was written completely, checked, and renamed into place."""

    path: Path
    size_bytes: int
    sha256: str
    row_counts: dict[str, int]
    pg_dump_version: str
    server_version: str
    duration_ms: int
    table_count: int
    toc_entries: int


class CatalogEntry(Protocol):
    """What the directory upkeep needs to know of a catalog record (store.backups.BackupRecord)."""

    @property
    def id(self) -> int: ...
    @property
    def file_name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def size_bytes(self) -> int | None: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime | None: ...


Entry = TypeVar("Entry", bound=CatalogEntry)


def backup_file_name(label: str, at: datetime | None = None) -> str:
    """garden_dx-20261128T020000Z.dump, always in UTC so names sort by time."""
    moment = (at or datetime.now(UTC)).astimezone(UTC)
    return f"{label}-{moment:%Y%m%dT%H%M%SZ}{DUMP_SUFFIX}"


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in chunks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class OpenedBackup:
    """A backup file held open: what is hashed is what the pg tools read, whatever the path becomes.

    The tools get `archive` (/proc/self/fd/N, the same open file, handed over with pass_fds), so a
    file swapped in at the path after the checksum is never read.
    """

    path: Path
    fd: int
    size_bytes: int
    checked_sha256: str | None = None  # set once the open file was hashed and matched

    @property
    def archive(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self.fd,)

    def sha256(self) -> str:
        """SHA-256 of the open file from its first byte (pread: no shared offset to disturb)."""
        digest = hashlib.sha256()
        offset = 0
        while chunk := os.pread(self.fd, CHUNK_BYTES, offset):
            digest.update(chunk)
            offset += len(chunk)
        return digest.hexdigest()


@contextmanager
def open_backup(path: Path) -> Iterator[OpenedBackup]:
    """Open a backup for reading; a symlink or anything but a regular file is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound("backup.file_missing", file=path.name) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunbookFailed("backup.not_a_regular_file", file=path.name) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RunbookFailed("backup.not_a_regular_file", file=path.name)
        yield OpenedBackup(path=path, fd=fd, size_bytes=info.st_size)
    finally:
        os.close(fd)


def _create_partial(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


@dataclass
class _Meter:
    written: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


def _copy_and_hash(source_fd: int, target_fd: int, meter: _Meter) -> None:
    """Pipe to file in 1 MiB chunks, hashing as it goes (runs in a worker thread)."""
    while chunk := os.read(source_fd, CHUNK_BYTES):
        view = memoryview(chunk)
        while view:
            done = os.write(target_fd, view)
            view = view[done:]
        meter.digest.update(chunk)
        meter.written += len(chunk)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_full(exc: OSError, folder: Path) -> RunbookFailed | None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RunbookFailed("backup.disk_full", dir=str(folder))
    return None


async def _dump_to(
    *,
    fd: int,
    snapshot: str,
    env: dict[str, str],
    tools: PgTools,
    meter: _Meter,
    progress: ProgressCallback | None,
    expected_bytes: int | None,
    lock_wait_timeout_s: float,
    compress: int | None = None,
) -> None:
    """Run pg_dump into a pipe and copy it to fd; raise RunbookFailed if pg_dump fails."""
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(read_fd, F_SETPIPE_SZ, CHUNK_BYTES)
    args = [
        "--format=custom",
        "--no-password",
        f"--snapshot={snapshot}",
        f"--lock-wait-timeout={max(1, int(lock_wait_timeout_s * 1000))}",  # milliseconds
    ]
    if compress is not None:
        args.append(f"--compress={compress}")
    try:
        proc = await asyncio.create_subprocess_exec(
            str(tools.pg_dump),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group, so a kill reaches anything it started
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    assert proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    copy_task = asyncio.create_task(asyncio.to_thread(_copy_and_hash, read_fd, fd, meter))
    try:
        while not copy_task.done():
            await asyncio.wait([copy_task], timeout=PROGRESS_INTERVAL_S)
            percent = min(99, meter.written * 100 // expected_bytes) if expected_bytes else -1
            await report(progress, Step("dumping", percent, {"written_bytes": meter.written}))
        copy_task.result()
        await proc.wait()
    finally:
        await end_process_group(proc)
        # The copy thread ends once pg_dump is gone (EOF); only then may the fds be closed.
        await asyncio.wait([copy_task])
        os.close(read_fd)
        stderr = await stderr_task
    if proc.returncode != 0:
        if b"could not obtain lock" in stderr:
            seconds = f"{lock_wait_timeout_s:g}"
            raise RunbookFailed("backup.table_locked", seconds=seconds, detail=tail(stderr))
        raise RunbookFailed("backup.pg_dump_failed", code=proc.returncode, detail=tail(stderr))


async def check_backup_file(*, path: Path, tools: PgTools) -> int:
    """`pg_restore --list`: the number of table-of-contents entries; RunbookFailed if unreadable."""
    with open_backup(path) as backup:
        return await count_toc_entries(backup, tools=tools)


async def count_toc_entries(backup: OpenedBackup, *, tools: PgTools) -> int:
    """`pg_restore --list` of the open file; RunbookFailed if it is no readable archive. An empty
    database's archive is readable and lists nothing: 0."""
    path = backup.path
    proc = await asyncio.create_subprocess_exec(
        str(tools.pg_restore),
        "--list",
        backup.archive,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=tool_env(),
        pass_fds=backup.pass_fds,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    entries = 0
    async for line in proc.stdout:
        if line.strip() and not line.startswith(b";"):
            entries += 1
    await proc.wait()
    stderr = await stderr_task
    if proc.returncode != 0:
        raise RunbookFailed("backup.unreadable", file=path.name, detail=tail(stderr))
    return entries


@dataclass(frozen=True)
class _DumpLimits:
    lock_wait_timeout_s: float
    timeout_s: float
    compress: int | None = None  # pg_dump's zlib level; None: its default


async def _dump_in_snapshot(
    conn: psycopg.AsyncConnection[Any],
    *,
    fd: int,
    dsn: str,
    tools: PgTools,
    meter: _Meter,
    limits: _DumpLimits,
    expected_bytes: int | None,
    progress: ProgressCallback | None,
) -> dict[str, int]:
    """pg_dump in the snapshot this connection exports, and its row counts from the same snapshot."""
    async with conn.transaction():
        # The counts wait for a locked table no longer than pg_dump does.
        lock_ms = max(1, int(limits.lock_wait_timeout_s * 1000))
        await conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_ms)))
        row = await (await conn.execute("SELECT pg_export_snapshot()")).fetchone()
        assert row is not None
        await report(progress, Step("dumping", 0, {"written_bytes": 0}))
        dump = asyncio.create_task(
            _dump_to(
                fd=fd,
                snapshot=str(row[0]),
                env=child_env(dsn),
                tools=tools,
                meter=meter,
                progress=progress,
                expected_bytes=expected_bytes,
                lock_wait_timeout_s=limits.lock_wait_timeout_s,
                compress=limits.compress,
            )
        )
        # The exporting transaction stays open until pg_dump is done with the snapshot.
        try:
            row_counts = await count_rows_in(conn)
            await dump
        except pg_errors.LockNotAvailable:
            dump.cancel()
            await asyncio.wait([dump])
            seconds = f"{limits.lock_wait_timeout_s:g}"
            raise RunbookFailed("backup.table_locked", seconds=seconds, detail="") from None
        except BaseException:
            dump.cancel()
            await asyncio.wait([dump])
            raise
    return row_counts


async def take_backup(
    *,
    dsn: str,
    backup_dir: Path,
    tools: PgTools,
    label: str = "garden_dx",
    file_name: str | None = None,
    expected_bytes: int | None = None,
    progress: ProgressCallback | None = None,
    lock_wait_timeout_s: float = LOCK_WAIT_TIMEOUT_S,
    timeout_s: float = DUMP_TIMEOUT_S,
    compress: int | None = None,
) -> BackupFile:
    """Dump the target into backup_dir; only a complete, checked file ever gets the final name.

    Row counts are taken in the snapshot pg_dump uses, so they describe exactly what is in the dump.
    `expected_bytes` (e.g. the previous backup's size) turns progress into a percentage. A table
    locked by another session longer than lock_wait_timeout_s, or a backup longer than timeout_s,
    fails the backup instead of hanging it. `compress` is pg_dump's zlib level (0-9; None: its
    default): a lower level dumps faster into a somewhat bigger file.
    """
    started = time.monotonic()
    name = file_name or backup_file_name(label)
    if Path(name).name != name or not name.endswith(DUMP_SUFFIX):
        raise RunbookFailed("backup.bad_file_name", file=name)
    final = backup_dir / name
    if final.exists():
        raise RunbookFailed("backup.file_exists", file=final.name)
    await asyncio.to_thread(backup_dir.mkdir, parents=True, exist_ok=True)
    limits = _DumpLimits(lock_wait_timeout_s=lock_wait_timeout_s, timeout_s=timeout_s, compress=compress)
    meter = _Meter()
    try:
        async with asyncio.timeout(timeout_s):
            row_counts, toc_entries, version_text = await _write_backup(
                dsn=dsn,
                final=final,
                tools=tools,
                meter=meter,
                limits=limits,
                expected_bytes=expected_bytes,
                progress=progress,
            )
    except TimeoutError:
        raise RunbookFailed("backup.timed_out", seconds=f"{timeout_s:g}") from None
    await report(progress, Step("backup_written", 100))
    return BackupFile(
        path=final,
        size_bytes=meter.written,
        sha256=meter.digest.hexdigest(),
        row_counts=row_counts,
        pg_dump_version=tools.version_text,
        server_version=version_text,
        duration_ms=int((time.monotonic() - started) * 1000),
        table_count=len(row_counts),
        toc_entries=toc_entries,
    )


async def _write_backup(
    *,
    dsn: str,
    final: Path,
    tools: PgTools,
    meter: _Meter,
    limits: _DumpLimits,
    expected_bytes: int | None,
    progress: ProgressCallback | None,
) -> tuple[dict[str, int], int, str]:
    """`<name>.partial` written, checked, fsynced and renamed: (row counts, TOC entries, server version)."""
    backup_dir = final.parent
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    async with connect_target(dsn, autocommit=False) as conn:
        version, version_text = await server_version_of(conn)
        await conn.rollback()
        check_tools_match_server(tools, version)
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        try:
            fd: int | None = _create_partial(partial)
        except FileExistsError:
            raise RunbookFailed("backup.partial_exists", file=partial.name) from None
        try:
            assert fd is not None
            row_counts = await _dump_in_snapshot(
                conn,
                fd=fd,
                dsn=dsn,
                tools=tools,
                meter=meter,
                limits=limits,
                expected_bytes=expected_bytes,
                progress=progress,
            )
            await asyncio.to_thread(os.fsync, fd)
            os.close(fd)
            fd = None
            await report(progress, Step("checking_dump", 99))
            toc_entries = await check_backup_file(path=partial, tools=tools)
            await asyncio.to_thread(os.replace, partial, final)
            await asyncio.to_thread(_fsync_dir, backup_dir)
        except OSError as exc:
            full = _disk_full(exc, backup_dir)
            if full is None:
                raise
            raise full from None
        finally:
            if fd is not None:
                os.close(fd)
            partial.unlink(missing_ok=True)
    return row_counts, toc_entries, version_text


def partial_files(backup_dir: Path) -> list[Path]:
    """The `*.partial` files in the backup folder: a running backup's, or a killed one's."""
    if not backup_dir.is_dir():
        return []
    return sorted(backup_dir.glob(f"*{DUMP_SUFFIX}{PARTIAL_SUFFIX}"))


def cleanup_partials(backup_dir: Path) -> list[Path]:
    """Delete `*.partial` files left by a killed backup. Call it holding the backup lock."""
    removed = []
    for path in partial_files(backup_dir):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class Kept(Protocol):
    """Anything kept for a retention: a database backup, or an archive of the application's files."""

    @property
    def id(self) -> int: ...
    @property
    def status(self) -> str: ...


K = TypeVar("K", bound=Kept)


def past_retention(
    entries: Iterable[K],
    *,
    written: Callable[[K], datetime],
    retention_days: int,
    now: datetime | None = None,
) -> list[K]:
    """Good entries written before the retention, never the newest good one (however old it is)."""
    good = [e for e in entries if e.status == "good"]
    if not good:
        return []
    newest = max(good, key=lambda e: (written(e), e.id))
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    return [e for e in good if e is not newest and written(e) < cutoff]


def backups_past_retention(
    entries: Iterable[Entry], *, retention_days: int, now: datetime | None = None
) -> list[Entry]:
    """Good backups older than the retention, never the newest good one (however old it is)."""
    return past_retention(
        entries, written=lambda e: e.finished_at or e.started_at, retention_days=retention_days, now=now
    )


class HostArchive(Kept, Protocol):
    """What file retention needs of an archive (store.releases.FileArchiveRecord)."""

    @property
    def host(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...


A = TypeVar("A", bound=HostArchive)


def archives_past_retention(
    archives: Iterable[A], *, retention_days: int, now: datetime | None = None
) -> list[A]:
    """Good file archives older than the retention; each host keeps its newest good one however old
    (the archives stay on their hosts: one host's archive does not stand for another's). An old row
    naming the same file as a kept one is never chosen: deleting it would delete the kept archive."""
    by_host: dict[str, list[A]] = {}
    for archive in archives:
        by_host.setdefault(archive.host, []).append(archive)
    chosen: list[A] = []
    for host_archives in by_host.values():
        old = past_retention(
            host_archives, written=lambda a: a.created_at, retention_days=retention_days, now=now
        )
        kept = {a.path for a in host_archives if a.status == "good" and a not in old}
        chosen += [a for a in old if a.path not in kept]
    return sorted(chosen, key=lambda a: a.id)


def prune_backups(
    *,
    backup_dir: Path,
    entries: Iterable[Entry],
    retention_days: int = 30,
    now: datetime | None = None,
) -> list[Entry]:
    """Delete the files of backups past retention; the caller marks the returned ones `pruned`."""
    chosen = backups_past_retention(entries, retention_days=retention_days, now=now)
    for entry in chosen:
        (backup_dir / entry.file_name).unlink(missing_ok=True)
    return chosen


@dataclass(frozen=True)
class Reconciliation:
    """Where the backup directory and the catalog disagree."""

    untracked_files: tuple[Path, ...]
    partial_files: tuple[Path, ...]
    missing_files: tuple[int, ...]
    changed_files: tuple[tuple[int, str], ...]  # (backup id, "size" or "sha256")

    @property
    def clean(self) -> bool:
        return not (self.untracked_files or self.partial_files or self.missing_files or self.changed_files)


def reconcile_backup_dir(
    backup_dir: Path,
    entries: Sequence[CatalogEntry],
    *,
    check_checksums: bool = False,
    catalogued: Collection[str] = (),
) -> Reconciliation:
    """Compare files with good records; checksums only when asked (they cost a full read).

    `catalogued`: every file name the catalog knows, beyond entries (a file named there is never
    untracked, however long the catalog).
    """
    on_disk = sorted(backup_dir.glob(f"*{DUMP_SUFFIX}")) if backup_dir.is_dir() else []
    partials = sorted(backup_dir.glob(f"*{PARTIAL_SUFFIX}")) if backup_dir.is_dir() else []
    known = {e.file_name for e in entries} | set(catalogued)
    missing: list[int] = []
    changed: list[tuple[int, str]] = []
    for entry in entries:
        if entry.status != "good":
            continue
        path = backup_dir / entry.file_name
        if not path.is_file():
            missing.append(entry.id)
        elif entry.size_bytes is not None and path.stat().st_size != entry.size_bytes:
            changed.append((entry.id, "size"))
        elif check_checksums and entry.sha256 and sha256_of(path) != entry.sha256:
            changed.append((entry.id, "sha256"))
    return Reconciliation(
        untracked_files=tuple(p for p in on_disk if p.name not in known),
        partial_files=tuple(partials),
        missing_files=tuple(missing),
        changed_files=tuple(changed),
    )
