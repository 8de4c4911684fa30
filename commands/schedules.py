"""`schedule list`: each schedule's cron line, next run and how its newest run ended."""

from __future__ import annotations

from datetime import UTC, datetime

from commands.base import Context, NoArgs, Role
from commands.command import Command
from commands.services import ScheduleLike
from core.errors import RunbookFailed
from core.formatting import format_time
from core.reply import Header, Level, Reply, Table
from store.schedule_runs import ScheduleRunRecord

LEVELS: dict[str, Level] = {"succeeded": "ok", "failed": "fail", "missed": "warn", "running": "info"}


async def list_schedules(ctx: Context, args: NoArgs) -> Reply:
    t = ctx.t
    source = ctx.services.schedules
    if source is None:
        raise RunbookFailed("schedule.not_available")
    schedules = await source(datetime.now(UTC))
    rows = tuple(_row(ctx, s) for s in schedules)
    levels = tuple(LEVELS.get(s.last_run.status, "info") if s.last_run else "info" for s in schedules)
    failing = sum(1 for s in schedules if s.last_run is not None and s.last_run.status == "failed")
    summary = t("schedule.summary", count=len(schedules), failing=failing)
    columns = (
        t("schedule.col.name"),
        t("schedule.col.cron"),
        t("schedule.col.runs"),
        t("schedule.col.next"),
        t("schedule.col.last"),
    )
    return Reply(
        status="succeeded",
        summary=summary,
        elements=(Header(t("schedule.header")), Table(columns=columns, rows=rows, levels=levels)),
    )


def _row(ctx: Context, schedule: ScheduleLike) -> tuple[str, ...]:
    zone = ctx.services.settings.zone
    return (
        schedule.name,
        schedule.cron,
        ", ".join(schedule.commands),
        format_time(schedule.next_fire, zone),
        _last(ctx, schedule.last_run),
    )


def _last(ctx: Context, run: ScheduleRunRecord | None) -> str:
    if run is None:
        return ctx.t("schedule.never")
    when = format_time(run.finished_at or run.started_at, ctx.services.settings.zone)
    state = ctx.t(f"schedule.status.{run.status}")
    note = f" {run.error[:80]}" if run.error else ""
    return f"{state} {when}{note}"


COMMANDS = (Command(name="schedule list", role=Role.VIEWER, run=list_schedules),)
