"""The scheduler inside a process: its table from the settings, and the `Submit` that runs a line.

A scheduled command line goes through `Pipeline.handle` as the system actor `scheduler` (source
"scheduler", channel = the schedule's `channels.<key>`), so it is authorised, locked and audited like
a typed command. Its reply is shown through an announcer (Slack in `gardenbot serve`, the terminal
for `gardenbot schedule run`); a started job is waited for on the job board, so the run records how
the job ended. `gardenbot serve` calls `start_scheduling` and `stop_scheduling` from its lifespan.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TextIO

from slack_sdk.web.async_client import AsyncWebClient

from bot.console_render import print_reply
from bot.slack_surface import SlackSurface, apply_edits, watch_job
from commands.base import Actor, ConsoleOrigin, Request
from commands.job_watch import JobBoard
from commands.services import ScheduleLike, ScheduleSource
from core.config import Settings
from core.errors import StoreUnavailable
from core.formatting import progress_bar
from core.reply import Reply
from scheduler.listing import list_schedules
from scheduler.seam import RunOutcome, ScheduledRun, Submit
from scheduler.service import Scheduler
from scheduler.table import ScheduleSpec, build_table
from store.db import Store
from store.jobs import remember_message

if TYPE_CHECKING:
    from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler

    from bot.runtime import Runtime

log = logging.getLogger(__name__)

SCHEDULER = "scheduler"
OUTCOMES = ("succeeded", "failed", "refused", "pending")


class Announcer(Protocol):
    async def show(self, channel: str | None, reply: Reply, board: JobBoard) -> None:
        """Show a scheduled run's reply; for a started job, keep showing it until the job ends."""


def schedule_table(settings: Settings) -> tuple[ScheduleSpec, ...]:
    # File backups join once hosts (an Ansible inventory) can be configured.
    return build_table(settings.schedules, hosts_configured=settings.hosts.inventory is not None)


def schedule_source(store: Store, settings: Settings) -> ScheduleSource:
    """What `schedule list` reads: this configuration's table with the store's newest runs."""
    table = schedule_table(settings)

    async def source(now: datetime) -> Sequence[ScheduleLike]:
        return await list_schedules(store, table, zone=settings.zone, now=now)

    return source


def running_job(reply: Reply) -> int | None:
    job_id = reply.ids.get("job_id")
    return job_id if reply.status == "running" and isinstance(job_id, int) else None


def make_submit(runtime: Runtime, announcer: Announcer, *, origin: ConsoleOrigin | None = None) -> Submit:
    """Run one scheduled line through the pipeline as `scheduler`; how it ended, after its job."""
    pipeline = runtime.pipeline

    async def submit(run: ScheduledRun) -> RunOutcome:
        channel = getattr(runtime.settings.channels, run.channel) if run.channel else None
        request = Request(
            actor=Actor.system_actor("scheduler"),
            text=run.command,
            source="scheduler",
            channel=channel,
            console=origin,
            routine=run.trigger != "manual",
        )
        reply = await pipeline.handle(request)
        try:
            await announcer.show(channel, reply, pipeline.jobs)
        except Exception:  # showing it is not running it: Slack trouble never fails the run
            log.exception("schedule %s: showing %r failed", run.schedule, run.command)
        job_id = running_job(reply)
        final = await pipeline.jobs.result(job_id) if job_id is not None else reply
        return outcome(run, final, job_id)

    return submit


def outcome(run: ScheduledRun, final: Reply, job_id: int | None) -> RunOutcome:
    """A command that does not exist, or refused the scheduler, is a failed run that says why."""
    status = final.status if final.status in OUTCOMES else "failed"
    text = final.summary.replace("\ue000", "").replace("\ue001", "")
    return RunOutcome(status=status, text=f"{run.command}: {text}"[:500], job_id=job_id)  # type: ignore[arg-type]


class SlackAnnouncer:
    """Posts to the run's channel; a job's message is updated until it ends. No channel: edits only."""

    def __init__(self, client: AsyncWebClient, store: Store) -> None:
        self.client = client
        self.store = store

    async def show(self, channel: str | None, reply: Reply, board: JobBoard) -> None:
        if channel is None:
            await apply_edits(self.client, reply.edits)  # e.g. the sweep's expired approvals
            return
        surface = SlackSurface(self.client, channel=channel, user=SCHEDULER)
        await surface.show(reply)
        job_id = running_job(reply)
        if job_id is None:
            return
        if surface.message_ts is not None:
            try:
                await remember_message(
                    self.store, job_id, {"channel": surface.channel, "ts": surface.message_ts}
                )
            except StoreUnavailable:
                log.warning("message reference of job %s not stored (store unreachable)", job_id)
        await watch_job(surface, board, job_id)


class LogAnnouncer:
    """No Slack configured: the run is still audited and recorded; its summary goes to the log."""

    async def show(self, channel: str | None, reply: Reply, board: JobBoard) -> None:
        log.info("scheduled run: %s", reply.summary)


class ConsoleAnnouncer:
    """`gardenbot schedule run`: the reply and the job's progress on the terminal."""

    def __init__(self, stream: TextIO = sys.stdout, progress: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.progress = progress

    async def show(self, channel: str | None, reply: Reply, board: JobBoard) -> None:
        job_id = running_job(reply)
        if job_id is None:
            print_reply(reply, self.stream)
            return
        async for event in board.watch(job_id):
            if event.reply is not None:
                print_reply(event.reply, self.stream)
                return
            if event.text:
                self.progress.write(f"job {job_id} {progress_bar(event.percent)} {event.text}\n")


def build_scheduler(
    runtime: Runtime, announcer: Announcer, *, origin: ConsoleOrigin | None = None
) -> Scheduler:
    settings = runtime.settings
    return Scheduler(
        store=runtime.services.store,
        table=schedule_table(settings),
        submit=make_submit(runtime, announcer, origin=origin),
        zone=settings.zone,
    )


async def start_scheduling(runtime: Runtime, handler: AsyncSlackRequestHandler | None) -> Scheduler:
    """`gardenbot serve`: every replica schedules everything; the store lets one run each fire."""
    client = handler.app.client if handler is not None else None
    announcer: Announcer = SlackAnnouncer(client, runtime.services.store) if client else LogAnnouncer()
    scheduler = build_scheduler(runtime, announcer)
    await scheduler.start()
    return scheduler


async def stop_scheduling(scheduler: Scheduler) -> None:
    await scheduler.shutdown()
