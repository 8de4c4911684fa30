"""Scheduled runs inside `gardenbot serve`: APScheduler 3 fires, the store decides who runs.

Every replica schedules every job (an AsyncIOScheduler with cron triggers in the configured zone).
At a fire each replica tries to claim (schedule, fire time) in `schedule_runs`; the one claim that
lands runs the schedule's command lines through `Submit`, and the row records how it ended.

At start-up, fires that happened while no replica was up are found from the newest fire recorded:
the newest one runs once if it is within the schedule's grace time, the rest are recorded as missed
(one row carrying their count) so the next report can say so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from core.errors import StoreUnavailable
from scheduler.cron import cron_trigger, fires_between, latest_fire_until
from scheduler.seam import Clock, RunOutcome, ScheduledRun, Submit, Trigger, utc_now
from scheduler.table import ScheduleSpec, find
from store import schedule_runs
from store.db import Store

log = logging.getLogger(__name__)

# APScheduler wakes at or after the fire time; an injected clock a hair behind it must still name
# that fire. Well under the shortest period (1 s in tests), or it would name the next fire.
FIRE_TOLERANCE = timedelta(milliseconds=100)
INTERRUPTED = "interrupted: the bot stopped during the run"


@dataclass(frozen=True)
class CatchUp:
    """What start-up decided for one schedule."""

    schedule: str
    run_fire: datetime | None  # the fire run now (within grace), if any
    missed: int  # fires recorded as missed


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Scheduler:
    """The schedule table, fired by APScheduler and claimed once across replicas."""

    def __init__(
        self,
        *,
        store: Store,
        table: Sequence[ScheduleSpec],
        submit: Submit,
        zone: ZoneInfo,
        clock: Clock = utc_now,
        instance: str | None = None,
    ) -> None:
        self.store = store
        self.table = tuple(table)
        self.zone = zone
        self._submit = submit
        self._clock = clock
        self.instance = instance or instance_name()
        self._triggers = {spec.name: cron_trigger(spec.cron, zone, second=spec.second) for spec in self.table}
        self._aps: AsyncIOScheduler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> list[CatchUp]:
        """Catch up on fires missed while down, then fire on schedule until `shutdown`.

        With the store down at start-up there is nothing to catch up from: the fires still come.
        """
        try:
            decisions = await self.catch_up()
        except StoreUnavailable:
            log.warning("schedules start without catching up: the bot's store is unreachable")
            decisions = []
        aps = AsyncIOScheduler(timezone=self.zone)
        for spec in self.table:
            aps.add_job(
                self._on_cron,
                self._triggers[spec.name],
                args=[spec],
                id=spec.name,
                name=spec.name,
                misfire_grace_time=max(1, int(spec.grace.total_seconds())),
                coalesce=True,
                max_instances=1,
            )
        aps.start()
        self._aps = aps
        return decisions

    async def shutdown(self) -> None:
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def next_fire_times(self) -> dict[str, datetime | None]:
        """When each schedule fires next (from the running scheduler when there is one)."""
        if self._aps is not None:
            return {job.id: job.next_run_time for job in self._aps.get_jobs()}
        now = self._clock()
        return {name: trigger.get_next_fire_time(None, now) for name, trigger in self._triggers.items()}

    async def _on_cron(self, spec: ScheduleSpec) -> None:
        now = self._clock()
        fire = latest_fire_until(self._triggers[spec.name], now + FIRE_TOLERANCE, lookback=spec.grace)
        if fire is None:
            log.warning("schedule %s woke at %s with no fire time behind it", spec.name, now)
            return
        await self.fire(spec, fire)

    async def fire(self, spec: ScheduleSpec, fire_time: datetime, trigger: Trigger = "cron") -> int | None:
        """Claim this fire and run it; the run's id, or None when another replica holds it."""
        try:
            run_id = await schedule_runs.claim_run(
                self.store,
                schedule=spec.name,
                fire_time=fire_time,
                claimed_by=self.instance,
                trigger=trigger,
                started_at=self._clock(),
            )
        except StoreUnavailable:
            log.warning("schedule %s at %s not run: the bot's store is unreachable", spec.name, fire_time)
            return None
        if run_id is None:
            return None
        try:
            await self._run_steps(spec, fire_time, run_id, trigger)
        except asyncio.CancelledError:  # shutting down mid-run: the row must not stay `running`
            await asyncio.shield(self._interrupted(run_id))
            raise
        return run_id

    async def _interrupted(self, run_id: int) -> None:
        try:
            await schedule_runs.finish_run(
                self.store, run_id, status="failed", error=INTERRUPTED, finished_at=self._clock()
            )
        except StoreUnavailable:
            log.warning("schedule run %s interrupted; the store could not record it", run_id)

    async def _run_steps(
        self, spec: ScheduleSpec, fire_time: datetime, run_id: int, trigger: Trigger
    ) -> None:
        steps: list[dict[str, Any]] = []
        for step, command in enumerate(spec.commands):
            run = ScheduledRun(
                schedule=spec.name,
                command=command,
                channel=spec.channel,
                fire_time=fire_time,
                run_id=run_id,
                trigger=trigger,
                step=step,
            )
            outcome = await self._submit_one(run)
            steps.append({"command": command, "status": outcome.status, "text": outcome.text[:500]})
            if outcome.job_id is not None:
                steps[-1]["job_id"] = outcome.job_id
        failed = [s for s in steps if s["status"] != "succeeded"]
        await schedule_runs.finish_run(
            self.store,
            run_id,
            status="failed" if failed else "succeeded",
            result={"steps": steps},
            error=failed[0]["text"] or failed[0]["status"] if failed else None,
            finished_at=self._clock(),
        )

    async def _submit_one(self, run: ScheduledRun) -> RunOutcome:
        try:
            return await self._submit(run)
        except asyncio.CancelledError:
            raise
        except Exception:  # one schedule's failure must not stop the others
            log.exception("schedule %s: %r failed unexpectedly", run.schedule, run.command)
            return RunOutcome(status="failed", text="unexpected error (see the log)")

    async def run_now(self, name: str) -> int | None:
        """`schedule run NAME`: run it now, recorded as a manual fire; None for an unknown name."""
        spec = find(self.table, name)
        if spec is None:
            return None
        return await self.fire(spec, self._clock(), trigger="manual")

    async def catch_up(self) -> list[CatchUp]:
        """Decide, per schedule, what was missed while no replica was up; start the run that is due."""
        decisions = []
        for spec in self.table:
            decision = await self._catch_up_one(spec)
            decisions.append(decision)
            if decision.run_fire is not None:
                task = asyncio.create_task(self.fire(spec, decision.run_fire, trigger="catch_up"))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return decisions

    async def _catch_up_one(self, spec: ScheduleSpec) -> CatchUp:
        last = await schedule_runs.latest_fire(self.store, spec.name)
        if last is None:  # never fired anywhere: nothing to have missed
            return CatchUp(spec.name, None, 0)
        now = self._clock()
        fires = list(fires_between(self._triggers[spec.name], last, now))
        if not fires:
            return CatchUp(spec.name, None, 0)
        run_fire = fires[-1] if now - fires[-1] <= spec.grace else None
        missed = fires[:-1] if run_fire is not None else fires
        if missed:
            await schedule_runs.record_missed(
                self.store,
                schedule=spec.name,
                fire_time=missed[-1],
                claimed_by=self.instance,
                at=now,
                result={"missed_fires": len(missed), "first_missed": missed[0].isoformat()},
            )
            log.warning("schedule %s missed %d fire(s) while no replica was up", spec.name, len(missed))
        return CatchUp(spec.name, run_fire, len(missed))

    async def wait_idle(self) -> None:
        """Wait for catch-up runs started by `start` (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
