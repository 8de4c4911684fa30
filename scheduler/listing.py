"""`schedule list`: each schedule's cron line, next fire and newest run, from the table and the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from scheduler.cron import cron_trigger, next_fire
from scheduler.table import ScheduleSpec
from store import schedule_runs
from store.db import Store
from store.schedule_runs import ScheduleRunRecord


@dataclass(frozen=True)
class ScheduleStatus:
    name: str
    cron: str
    commands: tuple[str, ...]
    channel: str | None
    next_fire: datetime | None  # in the configured zone
    last_run: ScheduleRunRecord | None  # newest by fire time: running, succeeded, failed or missed


async def list_schedules(
    store: Store, table: Sequence[ScheduleSpec], *, zone: ZoneInfo, now: datetime
) -> list[ScheduleStatus]:
    """In table order. Reads the store once; works whether or not a scheduler runs in this process."""
    latest = await schedule_runs.latest_runs(store, [spec.name for spec in table])
    return [
        ScheduleStatus(
            name=spec.name,
            cron=spec.cron,
            commands=spec.commands,
            channel=spec.channel,
            next_fire=next_fire(cron_trigger(spec.cron, zone, second=spec.second), now),
            last_run=latest.get(spec.name),
        )
        for spec in table
    ]
