"""Releases and host file archives in the bot's store (migration 0007).

A release row is `running` from the moment its job starts; it ends as the release playbook said
(`released`, `rolled_back`, `rollback_failed`), `failed` (it never reached the hosts' release, or the
playbook could not run) or `interrupted` (the bot stopped while it ran).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from core.errors import NotFound
from store.db import Store

ReleaseStatus = Literal["running", "released", "rolled_back", "rollback_failed", "failed", "interrupted"]
LIST_LIMIT = 20

RELEASE_COLUMNS = (
    "id, job_id, version, requested_by, approved_by, status, previous_version, current_version,"
    " migrations, failed_step, error, backup_id, run_id, started_at, finished_at, duration_ms"
)
ARCHIVE_COLUMNS = "id, job_id, release_id, host, path, size_bytes, sha256, created_by, created_at, status"


@dataclass(frozen=True)
class ReleaseRecord:
    id: int
    job_id: int | None
    version: str
    requested_by: str
    approved_by: str | None
    status: str
    previous_version: str | None
    current_version: str | None
    migrations: str | None
    failed_step: str | None
    error: str | None
    backup_id: int | None
    run_id: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None


@dataclass(frozen=True)
class ReleaseEnd:
    """How a release ended, as the command read it from the playbook's report."""

    status: ReleaseStatus
    previous_version: str | None = None
    current_version: str | None = None
    migrations: str | None = None
    failed_step: str | None = None
    error: str | None = None
    run_id: str | None = None


class ArchiveFacts(Protocol):
    """What a written archive tells the store (runbooks.hosts.FileArchive has these)."""

    @property
    def path(self) -> str: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def sha256(self) -> str: ...


@dataclass(frozen=True)
class FileArchiveRecord:
    id: int
    job_id: int | None
    release_id: int | None
    host: str
    path: str
    size_bytes: int
    sha256: str
    created_by: str
    created_at: datetime
    status: str  # good, or pruned (past backup.files_retention_days: deleted on its host)


async def start_release(
    store: Store, *, job_id: int | None, version: str, requested_by: str, approved_by: str | None
) -> int:
    async with store.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO releases (job_id, version, requested_by, approved_by) VALUES (%s, %s, %s, %s)"
            " RETURNING id",
            (job_id, version, requested_by, approved_by),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def attach_backup(store: Store, release_id: int, backup_id: int) -> None:
    async with store.connection() as conn:
        await conn.execute("UPDATE releases SET backup_id = %s WHERE id = %s", (backup_id, release_id))


async def finish_release(store: Store, release_id: int, end: ReleaseEnd) -> bool:
    """Record the end of a running release; False when it was no longer running."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "UPDATE releases SET status = %s, previous_version = %s, current_version = %s,"
            " migrations = %s, failed_step = %s, error = %s, run_id = %s, finished_at = now(),"
            " duration_ms = (extract(epoch FROM now() - started_at) * 1000)::integer"
            " WHERE id = %s AND status = 'running'",
            (
                end.status,
                end.previous_version,
                end.current_version,
                end.migrations,
                end.failed_step,
                (end.error or "")[:2000] or None,
                end.run_id,
                release_id,
            ),
        )
        return cur.rowcount == 1


async def interrupt_releases(store: Store, *, job_ids: list[int], error: str) -> list[ReleaseRecord]:
    """The running releases of these (dead) jobs become interrupted, saying what is known."""
    async with store.connection() as conn:
        cur = await conn.execute(
            f"UPDATE releases SET status = 'interrupted', error = %s, finished_at = now(),"
            f" duration_ms = (extract(epoch FROM now() - started_at) * 1000)::integer"
            f" WHERE job_id = ANY(%s) AND status = 'running' RETURNING {RELEASE_COLUMNS}",
            (error[:2000], job_ids),
        )
        rows = await cur.fetchall()
    return [ReleaseRecord(**row) for row in rows]


async def note_release_error(store: Store, release_id: int, error: str) -> None:
    async with store.connection() as conn:
        await conn.execute("UPDATE releases SET error = %s WHERE id = %s", (error[:2000], release_id))


async def get_release(store: Store, release_id: int) -> ReleaseRecord:
    async with store.connection() as conn:
        cur = await conn.execute(f"SELECT {RELEASE_COLUMNS} FROM releases WHERE id = %s", (release_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound("release.not_found", release_id=release_id)
    return ReleaseRecord(**row)


async def list_releases(store: Store, *, limit: int = LIST_LIMIT) -> list[ReleaseRecord]:
    async with store.connection() as conn:
        cur = await conn.execute(
            f"SELECT {RELEASE_COLUMNS} FROM releases ORDER BY started_at DESC, id DESC LIMIT %s", (limit,)
        )
        rows = await cur.fetchall()
    return [ReleaseRecord(**row) for row in rows]


async def record_file_archive(
    store: Store,
    *,
    job_id: int | None,
    release_id: int | None,
    host: str,
    archive: ArchiveFacts,
    created_by: str,
) -> int:
    async with store.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO file_backups (job_id, release_id, host, path, size_bytes, sha256, created_by)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (job_id, release_id, host, archive.path, archive.size_bytes, archive.sha256, created_by),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def list_file_archives(
    store: Store, *, limit: int | None = LIST_LIMIT, statuses: Sequence[str] = ("good", "pruned")
) -> list[FileArchiveRecord]:
    """The newest archives first; `limit` None: all of them (retention reads every good one)."""
    async with store.connection() as conn:
        cur = await conn.execute(
            f"SELECT {ARCHIVE_COLUMNS} FROM file_backups WHERE status = ANY(%s)"
            " ORDER BY created_at DESC, id DESC LIMIT %s",
            (list(statuses), limit),
        )
        rows = await cur.fetchall()
    return [FileArchiveRecord(**row) for row in rows]


async def mark_archives_pruned(store: Store, archive_ids: Sequence[int]) -> int:
    """After retention deleted their files on the hosts; only good rows change."""
    if not archive_ids:
        return 0
    async with store.connection() as conn:
        cur = await conn.execute(
            "UPDATE file_backups SET status = 'pruned', pruned_at = now()"
            " WHERE id = ANY(%s) AND status = 'good'",
            (list(archive_ids),),
        )
        return cur.rowcount
