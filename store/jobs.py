"""Background jobs in the bot's store: state, progress, result, and who owns a running job."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from core.errors import NotFound
from store.db import Store

HEARTBEAT_SECONDS = 10
STALE_AFTER_SECONDS = 60  # a running job whose owner has not beaten for this long is presumed dead


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
) -> Job:
    """Create the job already 'running' and owned by this process: it starts at once."""
    async with store.connection() as conn:
        cur = await conn.execute(
            f"INSERT INTO jobs (id, command, args, requested_by, approved_by, approval_id, channel,"
            f" source, correlation_id, status, owner_host, owner_pid, owner_instance,"
            f" heartbeat_at, started_at)"
            f" VALUES (COALESCE(%s, nextval(pg_get_serial_sequence('jobs', 'id'))),"
            f" %s, %s, %s, %s, %s, %s, %s, %s, 'running', %s, %s, %s, now(), now())"
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


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs here; a zombie (killed, not yet reaped) is dead."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rpartition(")")[2].split()[0] != "Z"


async def interrupt_orphans(store: Store, *, me: Instance) -> list[Job]:
    """Mark 'running' jobs whose process is gone as interrupted.

    Gone means: on this host with a pid that no longer runs, or silent past STALE_AFTER_SECONDS.
    """
    async with store.connection() as conn:
        cur = await conn.execute(
            "SELECT id, owner_host, owner_pid, owner_instance,"
            " heartbeat_at < now() - make_interval(secs => %s) AS stale"
            " FROM jobs WHERE status IN ('queued', 'running')",
            (STALE_AFTER_SECONDS,),
        )
        candidates = await cur.fetchall()
        orphan_ids = [
            int(row["id"])
            for row in candidates
            if row["owner_instance"] != me.id
            and (
                bool(row["stale"])
                or (row["owner_host"] == me.host and not _pid_alive(int(row["owner_pid"] or 0)))
            )
        ]
        if not orphan_ids:
            return []
        cur = await conn.execute(
            f"UPDATE jobs SET status = 'interrupted', finished_at = now(),"
            f" error = 'the process running it stopped' WHERE id = ANY(%s)"
            f" AND status IN ('queued', 'running') RETURNING {_COLUMNS}",
            (orphan_ids,),
        )
        rows = await cur.fetchall()
    return [_job(row) for row in rows]
