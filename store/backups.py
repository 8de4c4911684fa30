"""The backup catalog in the bot's store: one row per backup attempt, good or not.

A row is `running` from the start and becomes `good` only with the finished file's size,
checksum and row counts, so a failed or interrupted backup never reads as good.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from psycopg.types.json import Jsonb

from core.errors import NotFound
from store.db import Store
from store.releases import ARCHIVE_COLUMNS, FileArchiveRecord

BackupKind = Literal["regular", "safety"]

COLUMNS = (
    "id, job_id, kind, database_name, file_name, status, size_bytes, sha256, row_counts,"
    " pg_dump_version, server_version, started_at, finished_at, duration_ms, verified_at,"
    " verify_status, verify_detail, error, created_by"
)


@dataclass(frozen=True)
class BackupRecord:
    id: int
    job_id: int | None
    kind: str
    database_name: str
    file_name: str
    status: str  # running, good, failed, interrupted, pruned
    size_bytes: int | None
    sha256: str | None
    row_counts: dict[str, int]
    pg_dump_version: str | None
    server_version: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    verified_at: datetime | None
    verify_status: str | None
    verify_detail: dict[str, Any] | None
    error: str | None
    created_by: str

    @property
    def is_good(self) -> bool:
        return self.status == "good"


class FinishedBackup(Protocol):
    """What a written backup tells the catalog (runbooks.backups.BackupFile has these)."""

    @property
    def size_bytes(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def row_counts(self) -> dict[str, int]: ...
    @property
    def pg_dump_version(self) -> str: ...
    @property
    def server_version(self) -> str: ...
    @property
    def duration_ms(self) -> int: ...


def _record(row: dict[str, Any]) -> BackupRecord:
    return BackupRecord(**{**row, "row_counts": dict(row["row_counts"] or {}), "id": int(row["id"])})


async def start_backup_record(
    store: Store,
    *,
    job_id: int | None,
    kind: BackupKind,
    database_name: str,
    file_name: str,
    created_by: str,
) -> int:
    async with store.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO backups (job_id, kind, database_name, file_name, created_by)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (job_id, kind, database_name, file_name, created_by),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(str(row["id"]))


async def finish_backup_record(store: Store, backup_id: int, file: FinishedBackup) -> None:
    """Mark good. Only a `running` row can become good (not one already marked interrupted)."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "UPDATE backups SET status = 'good', size_bytes = %s, sha256 = %s, row_counts = %s,"
            " pg_dump_version = %s, server_version = %s, duration_ms = %s, finished_at = now()"
            " WHERE id = %s AND status = 'running'",
            (
                file.size_bytes,
                file.sha256,
                Jsonb(file.row_counts),
                file.pg_dump_version,
                file.server_version,
                file.duration_ms,
                backup_id,
            ),
        )
        if cur.rowcount != 1:
            raise NotFound("backup.not_running", backup_id=backup_id)


async def fail_backup_record(store: Store, backup_id: int, error: str) -> None:
    async with store.connection() as conn:
        await conn.execute(
            "UPDATE backups SET status = 'failed', error = %s, finished_at = now()"
            " WHERE id = %s AND status = 'running'",
            (error, backup_id),
        )


async def get_backup(store: Store, backup_id: int) -> BackupRecord:
    async with store.connection() as conn:
        cur = await conn.execute(f"SELECT {COLUMNS} FROM backups WHERE id = %s", (backup_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound("backup.not_found", backup_id=backup_id)
    return _record(row)


async def file_name_taken(store: Store, file_name: str) -> bool:
    """Whether any catalog row, whatever its status, already uses this file name."""
    async with store.connection() as conn:
        cur = await conn.execute("SELECT 1 FROM backups WHERE file_name = %s", (file_name,))
        return await cur.fetchone() is not None


LIST_SQL = (
    f"SELECT {COLUMNS} FROM backups"
    " WHERE (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))"
    " ORDER BY started_at DESC, id DESC LIMIT %(limit)s"
)
FILE_NAMES_SQL = "SELECT DISTINCT file_name FROM backups"
ARCHIVES_SQL = (
    f"SELECT {ARCHIVE_COLUMNS} FROM file_backups WHERE status = 'good'"
    " ORDER BY created_at DESC, id DESC LIMIT %s"
)


def _list_params(limit: int | None, statuses: Sequence[str] | None) -> dict[str, Any]:
    return {"statuses": list(statuses) if statuses is not None else None, "limit": limit}


async def list_backups(
    store: Store, *, limit: int | None = 50, statuses: Sequence[str] | None = None
) -> list[BackupRecord]:
    """Newest first; limit None: all of them."""
    async with store.connection() as conn:
        cur = await conn.execute(LIST_SQL, _list_params(limit, statuses))
        return [_record(row) for row in await cur.fetchall()]


async def file_names(store: Store) -> set[str]:
    """Every file name the catalog knows, whatever the row's status."""
    async with store.connection() as conn:
        cur = await conn.execute(FILE_NAMES_SQL)
        return {str(row["file_name"]) for row in await cur.fetchall()}


@dataclass(frozen=True)
class CatalogView:
    """What `backup list` shows and checks the folder against."""

    shown: list[BackupRecord]  # the newest rows of the statuses asked for
    good: list[BackupRecord]  # every good backup
    file_names: set[str]  # every file name the catalog knows, whatever the row's status
    archives: list[FileArchiveRecord]  # the newest good archives of the application's files


async def catalog_view(store: Store, *, limit: int, statuses: Sequence[str], archives: int) -> CatalogView:
    """The four reads of `backup list` sent together: one round trip to the store."""
    async with store.connection() as conn:
        async with conn.pipeline():  # sent together; the results are all in when the block ends
            shown = await conn.execute(LIST_SQL, _list_params(limit, statuses))
            good = await conn.execute(LIST_SQL, _list_params(None, ("good",)))
            names = await conn.execute(FILE_NAMES_SQL)
            files = await conn.execute(ARCHIVES_SQL, (archives,))
        return CatalogView(
            shown=[_record(row) for row in await shown.fetchall()],
            good=[_record(row) for row in await good.fetchall()],
            file_names={str(row["file_name"]) for row in await names.fetchall()},
            archives=[FileArchiveRecord(**row) for row in await files.fetchall()],
        )


async def newest_good_backup(store: Store) -> BackupRecord | None:
    async with store.connection() as conn:
        cur = await conn.execute(
            f"SELECT {COLUMNS} FROM backups WHERE status = 'good' ORDER BY finished_at DESC, id DESC LIMIT 1"
        )
        row = await cur.fetchone()
    return _record(row) if row is not None else None


async def record_verification(store: Store, backup_id: int, *, passed: bool, detail: dict[str, Any]) -> None:
    async with store.connection() as conn:
        cur = await conn.execute(
            "UPDATE backups SET verified_at = now(), verify_status = %s, verify_detail = %s WHERE id = %s",
            ("passed" if passed else "failed", Jsonb(detail), backup_id),
        )
        if cur.rowcount != 1:
            raise NotFound("backup.not_found", backup_id=backup_id)


async def mark_interrupted(store: Store, *, job_ids: Sequence[int]) -> list[BackupRecord]:
    """`running` backups of jobs that died become `interrupted`; returns them."""
    async with store.connection() as conn:
        cur = await conn.execute(
            f"UPDATE backups SET status = 'interrupted', finished_at = now(),"
            f" error = 'the job running it stopped' WHERE status = 'running'"
            f" AND job_id = ANY(%s) RETURNING {COLUMNS}",
            (list(job_ids),),
        )
        return [_record(row) for row in await cur.fetchall()]


async def mark_pruned(store: Store, backup_ids: Sequence[int]) -> int:
    """After retention deleted their files."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "UPDATE backups SET status = 'pruned' WHERE id = ANY(%s) AND status = 'good'",
            (list(backup_ids),),
        )
        return cur.rowcount
