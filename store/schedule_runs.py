"""Scheduled runs in the bot's store: one row per (schedule, fire time), claimed once across replicas.

Every replica schedules every job. At a fire time each one tries to insert the (schedule, fire time)
row with ON CONFLICT DO NOTHING: exactly one insert lands, and only that replica runs the job. The row
then holds the run's status and result; a fire no replica was up for is recorded as `missed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg.types.json import Jsonb

from store.db import Store

RunTrigger = Literal["cron", "catch_up", "manual"]
RunStatus = Literal["running", "succeeded", "failed", "missed"]

COLUMNS = "id, schedule, fire_time, trigger, status, claimed_by, started_at, finished_at, result, error"


@dataclass(frozen=True)
class ScheduleRunRecord:
    id: int
    schedule: str
    fire_time: datetime
    trigger: str
    status: str
    claimed_by: str
    started_at: datetime
    finished_at: datetime | None
    result: dict[str, Any]
    error: str | None


def _record(row: dict[str, Any]) -> ScheduleRunRecord:
    return ScheduleRunRecord(**{**row, "id": int(row["id"]), "result": dict(row["result"] or {})})


async def claim_run(
    store: Store,
    *,
    schedule: str,
    fire_time: datetime,
    claimed_by: str,
    trigger: RunTrigger = "cron",
    started_at: datetime | None = None,
) -> int | None:
    """The new run's id when this caller won the fire; None when another replica already holds it."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO schedule_runs (schedule, fire_time, trigger, claimed_by, started_at)"
            " VALUES (%s, %s, %s, %s, COALESCE(%s, now()))"
            " ON CONFLICT (schedule, fire_time) DO NOTHING RETURNING id",
            (schedule, fire_time, trigger, claimed_by, started_at),
        )
        row = await cur.fetchone()
    return int(row["id"]) if row is not None else None


async def record_missed(
    store: Store,
    *,
    schedule: str,
    fire_time: datetime,
    claimed_by: str,
    at: datetime | None = None,
    result: dict[str, Any] | None = None,
) -> bool:
    """Record a fire nobody ran (past its grace); False when the fire already has a row."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO schedule_runs"
            " (schedule, fire_time, trigger, status, claimed_by, started_at, finished_at, result)"
            " VALUES (%s, %s, 'catch_up', 'missed', %s, COALESCE(%s, now()), COALESCE(%s, now()), %s)"
            " ON CONFLICT (schedule, fire_time) DO NOTHING",
            (schedule, fire_time, claimed_by, at, at, Jsonb(result or {})),
        )
        return cur.rowcount == 1


async def finish_run(
    store: Store,
    run_id: int,
    *,
    status: Literal["succeeded", "failed"],
    result: dict[str, Any] | None = None,
    error: str | None = None,
    finished_at: datetime | None = None,
) -> None:
    async with store.connection() as conn:
        await conn.execute(
            "UPDATE schedule_runs SET status = %s, result = %s, error = %s,"
            " finished_at = COALESCE(%s, now()) WHERE id = %s AND status = 'running'",
            (status, Jsonb(result or {}), error, finished_at, run_id),
        )


async def latest_fire(store: Store, schedule: str) -> datetime | None:
    """The newest fire time any replica recorded for this schedule (run, failed or missed)."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "SELECT max(fire_time) AS fire_time FROM schedule_runs WHERE schedule = %s", (schedule,)
        )
        row = await cur.fetchone()
    return row["fire_time"] if row is not None else None


async def latest_runs(store: Store, schedules: Sequence[str]) -> dict[str, ScheduleRunRecord]:
    """Per schedule, its newest run by fire time (for `schedule list`)."""
    async with store.connection() as conn:
        cur = await conn.execute(
            f"SELECT DISTINCT ON (schedule) {COLUMNS} FROM schedule_runs"
            " WHERE schedule = ANY(%s) ORDER BY schedule, fire_time DESC, id DESC",
            (list(schedules),),
        )
        return {str(row["schedule"]): _record(row) for row in await cur.fetchall()}


async def runs_between(
    store: Store,
    *,
    since: datetime,
    until: datetime,
    statuses: Sequence[RunStatus] | None = None,
    schedule: str | None = None,
) -> list[ScheduleRunRecord]:
    """Runs whose fire time is in [since, until), oldest first; e.g. the missed ones for a report."""
    async with store.connection() as conn:
        cur = await conn.execute(
            f"SELECT {COLUMNS} FROM schedule_runs WHERE fire_time >= %(since)s AND fire_time < %(until)s"
            " AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))"
            " AND (%(schedule)s::text IS NULL OR schedule = %(schedule)s)"
            " ORDER BY fire_time, id",
            {
                "since": since,
                "until": until,
                "statuses": list(statuses) if statuses is not None else None,
                "schedule": schedule,
            },
        )
        return [_record(row) for row in await cur.fetchall()]
