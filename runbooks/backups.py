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
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, TypeVar

import psycopg

from core.errors import RunbookFailed
from runbooks.pg_tools import (
    PgTools,
    check_tools_match_server,
    child_env,
    connect_target,
    count_rows_in,
    end_process_group,
    server_version_of,
    tail,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, str], Awaitable[None]]
"""percent 0-100 (or -1 when unknown) and a short text."""

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


async def report(progress: ProgressCallback | None, percent: int, text: str) -> None:
    """Progress is cosmetic: a failing callback is logged, never fails the operation."""
    if progress is None:
        return
    try:
        await progress(percent, text)
    except Exception:
        log.warning("progress callback failed", exc_info=True)


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
) -> None:
    """Run pg_dump into a pipe and copy it to fd; raise RunbookFailed if pg_dump fails."""
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(read_fd, F_SETPIPE_SZ, CHUNK_BYTES)
    try:
        proc = await asyncio.create_subprocess_exec(
            str(tools.pg_dump),
            "--format=custom",
            "--no-password",
            f"--snapshot={snapshot}",
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
            await report(progress, percent, f"dumping: {meter.written / 1e6:.1f} MB written")
        copy_task.result()
        await proc.wait()
    finally:
        await end_process_group(proc)
        # The copy thread ends once pg_dump is gone (EOF); only then may the fds be closed.
        await asyncio.wait([copy_task])
        os.close(read_fd)
        stderr = await stderr_task
    if proc.returncode != 0:
        raise RunbookFailed("backup.pg_dump_failed", code=proc.returncode, detail=tail(stderr))


async def check_backup_file(*, path: Path, tools: PgTools) -> int:
    """`pg_restore --list`: the number of table-of-contents entries; RunbookFailed if unreadable."""
    proc = await asyncio.create_subprocess_exec(
        str(tools.pg_restore),
        "--list",
        str(path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    entries = 0
    async for line in proc.stdout:
        if line.strip() and not line.startswith(b";"):
            entries += 1
    await proc.wait()
    stderr = await stderr_task
    if proc.returncode != 0 or entries == 0:
        raise RunbookFailed("backup.unreadable", file=path.name, detail=tail(stderr))
    return entries


async def take_backup(
    *,
    dsn: str,
    backup_dir: Path,
    tools: PgTools,
    label: str = "garden_dx",
    file_name: str | None = None,
    expected_bytes: int | None = None,
    progress: ProgressCallback | None = None,
) -> BackupFile:
    """Dump the target into backup_dir; only a complete, checked file ever gets the final name.

    Row counts are taken in the snapshot pg_dump uses, so they describe exactly what is in the dump.
    `expected_bytes` (e.g. the previous backup's size) turns progress into a percentage.
    """
    started = time.monotonic()
    name = file_name or backup_file_name(label)
    if Path(name).name != name or not name.endswith(DUMP_SUFFIX):
        raise RunbookFailed("backup.bad_file_name", file=name)
    final = backup_dir / name
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    if final.exists():
        raise RunbookFailed("backup.file_exists", file=final.name)
    await asyncio.to_thread(backup_dir.mkdir, parents=True, exist_ok=True)
    async with connect_target(dsn, autocommit=False) as conn:
        version, version_text = await server_version_of(conn)
        await conn.rollback()
        check_tools_match_server(tools, version)
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        meter = _Meter()
        try:
            fd: int | None = _create_partial(partial)
        except FileExistsError:
            raise RunbookFailed("backup.partial_exists", file=partial.name) from None
        try:
            async with conn.transaction():
                row = await (await conn.execute("SELECT pg_export_snapshot()")).fetchone()
                assert row is not None and fd is not None
                await report(progress, 0, "dumping")
                dump = asyncio.create_task(
                    _dump_to(
                        fd=fd,
                        snapshot=str(row[0]),
                        env=child_env(dsn),
                        tools=tools,
                        meter=meter,
                        progress=progress,
                        expected_bytes=expected_bytes,
                    )
                )
                # The exporting transaction stays open until pg_dump is done with the snapshot.
                try:
                    row_counts = await count_rows_in(conn)
                    await dump
                except BaseException:
                    dump.cancel()
                    await asyncio.wait([dump])
                    raise
            await asyncio.to_thread(os.fsync, fd)
            os.close(fd)
            fd = None
            await report(progress, 99, "checking the dump")
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
    await report(progress, 100, "backup written and checked")
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


def cleanup_partials(backup_dir: Path) -> list[Path]:
    """Delete `*.partial` files left by a killed backup. Call it holding the backup lock."""
    if not backup_dir.is_dir():
        return []
    removed = []
    for path in sorted(backup_dir.glob(f"*{DUMP_SUFFIX}{PARTIAL_SUFFIX}")):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def backups_past_retention(
    entries: Iterable[Entry], *, retention_days: int, now: datetime | None = None
) -> list[Entry]:
    """Good backups older than the retention, never the newest good one (however old it is)."""
    good = [e for e in entries if e.status == "good"]
    if not good:
        return []
    newest = max(good, key=lambda e: (e.finished_at or e.started_at, e.id))
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    return [e for e in good if e is not newest and (e.finished_at or e.started_at) < cutoff]


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
    backup_dir: Path, entries: Sequence[CatalogEntry], *, check_checksums: bool = False
) -> Reconciliation:
    """Compare files with good records; checksums only when asked (they cost a full read)."""
    on_disk = sorted(backup_dir.glob(f"*{DUMP_SUFFIX}")) if backup_dir.is_dir() else []
    partials = sorted(backup_dir.glob(f"*{PARTIAL_SUFFIX}")) if backup_dir.is_dir() else []
    known = {e.file_name for e in entries}
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
