"""Background jobs in the bot's store: state, progress, result, and who owns a running job."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from core.errors import NotFound
from store.db import Store

log = logging.getLogger(__name__)

INTERRUPTED_ERROR = "the process running it stopped"  # an interrupted job's error, until recovery says more

# Whether the named lock is held, right now, by this job (store/coordination.py and store/locks.py answer).
LockHeld = Callable[[str, int], Awaitable[bool]]


@dataclass(frozen=True)
class Instance:
    """This process, as the owner of the jobs it runs."""

    host: str
    pid: int
    id: str

    @classmethod
    def current(cls) -> Instance:
        return cls(host=socket.gethostname(), pid=os.getpid(), id=uuid.uuid4().hex[:12])


@dataclass(frozen=True)
class Job:
    id: int
    command: str
    args: dict[str, Any]
    requested_by: str
    approved_by: str | None
    approval_id: int | None
    channel: str | None
    source: str
    correlation_id: str
    status: str
    progress: int
    progress_text: str
    result: dict[str, Any] | None
    error: str | None
    owner_host: str | None
    owner_pid: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    message_ref: dict[str, Any]

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")


_COLUMNS = (
    "id, command, args, requested_by, approved_by, approval_id, channel, source, correlation_id,"
    " status, progress, progress_text, result, error, owner_host, owner_pid, created_at,"
    " started_at, finished_at, message_ref"
)


def _job(row: dict[str, Any]) -> Job:
    return Job(**row)


async def reserve_job_id(store: Store) -> int:
    """A job id before the job exists, so a lock can name its job from the first instant."""
    async with store.connection() as conn:
        cur = await conn.execute("SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS id")
        row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def create_job(
    store: Store,
    *,
    job_id: int | None = None,
    command: str,
    args: dict[str, Any],
    requested_by: str,
    approved_by: str | None,
    approval_id: int | None,
    channel: str | None,
    source: str,
    correlation_id: str,
    owner: Instance,
    lock_name: str | None = None,
) -> Job:
    """Create the job already 'running' and owned by this process: it starts at once."""
    async with store.connection() as conn:
        cur = await conn.execute(
            f"INSERT INTO jobs (id, command, args, requested_by, approved_by, approval_id, channel,"
            f" source, correlation_id, status, owner_host, owner_pid, owner_instance, lock_name,"
            f" heartbeat_at, started_at)"
            f" VALUES (COALESCE(%s, nextval(pg_get_serial_sequence('jobs', 'id'))),"
            f" %s, %s, %s, %s, %s, %s, %s, %s, 'running', %s, %s, %s, %s, now(), now())"
            f" RETURNING {_COLUMNS}",
            (
                job_id,
                command,
                Jsonb(args),
                requested_by,
                approved_by,
                approval_id,
                channel,
                source,
                correlation_id,
                owner.host,
                owner.pid,
                owner.id,
                lock_name,
            ),
        )
        row = await cur.fetchone()
    assert row is not None
    return _job(row)


async def report_progress(store: Store, job_id: int, percent: int, text: str) -> None:
    async with store.connection() as conn:
        await conn.execute(
            "UPDATE jobs SET progress = %s, progress_text = %s, heartbeat_at = now()"
            " WHERE id = %s AND status = 'running'",
            (max(0, min(100, percent)), text[:500], job_id),
        )


async def beat(store: Store, owner: Instance) -> None:
    async with store.connection() as conn:
        await conn.execute(
            "UPDATE jobs SET heartbeat_at = now() WHERE owner_instance = %s AND status = 'running'",
            (owner.id,),
        )


async def finish_job(
    store: Store, job_id: int, *, status: str, result: dict[str, Any] | None, error: str | None
) -> Job:
    async with store.connection() as conn:
        cur = await conn.execute(
            f"UPDATE jobs SET status = %s, result = %s, error = %s, finished_at = now(),"
            f" progress = CASE WHEN %s = 'succeeded' THEN 100 ELSE progress END"
            f" WHERE id = %s RETURNING {_COLUMNS}",
            (status, Jsonb(result) if result is not None else None, error, status, job_id),
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound("job.not_found", job_id=job_id)
    return _job(row)


async def get_job(store: Store, job_id: int) -> Job:
    async with store.connection() as conn:
        cur = await conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound("job.not_found", job_id=job_id)
    return _job(row)


async def recent_jobs(store: Store, *, limit: int = 15) -> list[Job]:
    """Active jobs first, then the most recent others."""
    async with store.connection() as conn:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM jobs ORDER BY (status IN ('queued', 'running')) DESC, id DESC LIMIT %s",
            (limit,),
        )
        rows = await cur.fetchall()
    return [_job(row) for row in rows]


async def remember_message(store: Store, job_id: int, message_ref: dict[str, Any]) -> None:
    async with store.connection() as conn:
        await conn.execute("UPDATE jobs SET message_ref = %s WHERE id = %s", (Jsonb(message_ref), job_id))


async def record_spooled_end(
    store: Store,
    job_id: int,
    *,
    status: str,
    result: dict[str, Any] | None,
    error: str | None,
    finished_at: datetime,
) -> bool:
    """Write a job end kept on local disk while the store was down. The spooled end is the truth:
    it also replaces an 'interrupted' that recovery wrote meanwhile. False when already final."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "UPDATE jobs SET status = %s, result = %s, error = %s, finished_at = %s,"
            " progress = CASE WHEN %s = 'succeeded' THEN 100 ELSE progress END"
            " WHERE id = %s AND status IN ('queued', 'running', 'interrupted')",
            (status, Jsonb(result) if result is not None else None, error, finished_at, status, job_id),
        )
        return cur.rowcount == 1


async def interrupt_orphans(
    store: Store, *, me: Instance, stale_after_seconds: float, lock_held: LockHeld
) -> list[Job]:
    """Mark 'running' jobs whose owner is gone as interrupted.

    Gone means: silent (no heartbeat) past `stale_after_seconds`, and not holding its lock. The
    owner's pid is never looked at: another container or PID namespace may share our host name.
    """
    async with store.connection() as conn:
        cur = await conn.execute(
            "SELECT id, owner_instance, lock_name FROM jobs WHERE status IN ('queued', 'running')"
            " AND (heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => %s))",
            (stale_after_seconds,),
        )
        stale = await cur.fetchall()
    orphan_ids: list[int] = []
    for row in stale:
        job_id, lock_name = int(row["id"]), row["lock_name"]
        if row["owner_instance"] == me.id:
            continue
        if lock_name is not None and await lock_held(str(lock_name), job_id):
            log.warning("job %s has not beaten for a while but still holds lock %s", job_id, lock_name)
            continue
        orphan_ids.append(job_id)
    if not orphan_ids:
        return []
    async with store.connection() as conn:
        cur = await conn.execute(
            f"UPDATE jobs SET status = 'interrupted', finished_at = now(),"
            f" error = %s WHERE id = ANY(%s)"
            f" AND status IN ('queued', 'running')"
            f" AND (heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => %s))"
            f" RETURNING {_COLUMNS}",
            (INTERRUPTED_ERROR, orphan_ids, stale_after_seconds),
        )
        rows = await cur.fetchall()
    return [_job(row) for row in rows]


async def note_interrupted(store: Store, job_id: int, note: str) -> None:
    """What recovery did after an interrupted job (or could not do), as its error: `jobs` shows it."""
    async with store.connection() as conn:
        await conn.execute(
            "UPDATE jobs SET error = %s WHERE id = %s AND status = 'interrupted'", (note[:2000], job_id)
        )


def recovery_note(job: Job) -> str | None:
    """What recovery said about an interrupted job, None when it said nothing."""
    return job.error if job.error and job.error != INTERRUPTED_ERROR else None
