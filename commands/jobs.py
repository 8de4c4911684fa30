"""`jobs`: what is running and what ran recently."""

from __future__ import annotations

from commands.base import Context, NoArgs, Role
from commands.command import Command
from core.formatting import format_duration, format_time
from core.reply import Header, Reply, Table, Text
from store import jobs as job_store


async def list_jobs(ctx: Context, args: NoArgs) -> Reply:
    t = ctx.t
    zone = ctx.services.settings.zone
    recent = await job_store.recent_jobs(ctx.services.store, limit=15)
    if not recent:
        return Reply(status="succeeded", summary=t("jobs.none"), elements=(Text(t("jobs.none")),))
    rows = []
    for job in recent:
        took = (
            format_duration((job.finished_at - job.started_at).total_seconds())
            if job.finished_at and job.started_at
            else "-"
        )
        state = t(f"jobs.status.{job.status}")
        if job.active:
            state += f" {job.progress}%"
        rows.append(
            (
                str(job.id),
                job.command,
                state,
                job.requested_by + (f" / {job.approved_by}" if job.approved_by else ""),
                format_time(job.started_at or job.created_at, zone),
                took,
                (job.progress_text if job.active else (job.error or ""))[:60],
            )
        )
    running = sum(1 for j in recent if j.active)
    return Reply(
        status="succeeded",
        summary=t("jobs.summary", running=running, shown=len(recent)),
        elements=(
            Header(t("jobs.header")),
            Table(
                columns=(
                    "#",
                    t("jobs.col.command"),
                    t("jobs.col.status"),
                    t("jobs.col.who"),
                    t("jobs.col.started"),
                    t("jobs.col.took"),
                    t("jobs.col.note"),
                ),
                rows=tuple(rows),
            ),
        ),
    )


COMMANDS = (Command(name="jobs", role=Role.VIEWER, run=list_jobs),)
