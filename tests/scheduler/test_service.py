"""Scheduled runs: each fire runs once across replicas, missed fires are caught up or recorded.

The store is real (a throwaway bot database); `submit` is the seam the pipeline will fill, here a
recorder. Time for the catch-up logic comes from an injected clock.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from scheduler.seam import OutcomeStatus, RunOutcome, ScheduledRun
from scheduler.service import Scheduler
from scheduler.table import ScheduleSpec
from store import schedule_runs
from store.db import Store

TOKYO = ZoneInfo("Asia/Tokyo")
NIGHTLY = ScheduleSpec("nightly_backup", "0 2 * * *", ("backup", "db maintain"), "ops", timedelta(hours=3))
EVERY_SECOND = ScheduleSpec("probe", "* * * * *", ("probe",), None, timedelta(seconds=5), second="*")


class Recorder:
    """The Submit seam: records what it was handed and answers with the given status."""

    def __init__(self, status: OutcomeStatus = "succeeded", raises: bool = False) -> None:
        self.runs: list[ScheduledRun] = []
        self.status = status
        self.raises = raises

    async def __call__(self, run: ScheduledRun) -> RunOutcome:
        self.runs.append(run)
        if self.raises:
            raise RuntimeError("boom")
        return RunOutcome(status=self.status, text=f"{run.command} {self.status}")


def scheduler(
    store: Store, submit: Recorder, *, now: datetime | None = None, spec: ScheduleSpec = NIGHTLY
) -> Scheduler:
    """A scheduler on real time, or frozen at `now`."""
    if now is None:
        return Scheduler(store=store, table=[spec], submit=submit, zone=TOKYO)
    return Scheduler(store=store, table=[spec], submit=submit, zone=TOKYO, clock=lambda: now)


async def test_two_schedulers_on_one_store_run_each_fire_once(store: Store) -> None:
    first, second = Recorder(), Recorder()
    a = scheduler(store, first, spec=EVERY_SECOND)
    b = scheduler(store, second, spec=EVERY_SECOND)
    await a.start()
    await b.start()
    try:
        await asyncio.sleep(3.5)
    finally:
        await a.shutdown()
        await b.shutdown()

    fires = [r.fire_time for r in first.runs + second.runs]
    assert len(fires) >= 3
    assert Counter(fires).most_common(1)[0][1] == 1  # no fire ran twice
    rows = await schedule_runs.runs_between(
        store, since=min(fires) - timedelta(seconds=1), until=max(fires) + timedelta(seconds=1)
    )
    assert sorted(r.fire_time for r in rows) == sorted(fires)
    assert {r.status for r in rows if r.fire_time < max(fires)} == {"succeeded"}
    # Each run belongs to the fire that just passed, not the next one.
    assert all(timedelta(0) <= r.started_at - r.fire_time < timedelta(seconds=1) for r in rows)


async def test_a_run_goes_through_submit_step_by_step_and_is_recorded(store: Store) -> None:
    submit = Recorder()
    fire = datetime(2026, 11, 23, 2, 0, tzinfo=TOKYO)

    run_id = await scheduler(store, submit).fire(NIGHTLY, fire)

    assert [(r.command, r.channel, r.step, r.fire_time) for r in submit.runs] == [
        ("backup", "ops", 0, fire),
        ("db maintain", "ops", 1, fire),
    ]
    latest = (await schedule_runs.latest_runs(store, ["nightly_backup"]))["nightly_backup"]
    assert latest.id == run_id and latest.status == "succeeded"
    assert [s["command"] for s in latest.result["steps"]] == ["backup", "db maintain"]


async def test_a_second_claim_of_the_same_fire_runs_nothing(store: Store) -> None:
    submit = Recorder()
    fire = datetime(2026, 11, 23, 2, 0, tzinfo=TOKYO)

    assert await scheduler(store, submit).fire(NIGHTLY, fire) is not None
    assert await scheduler(store, submit).fire(NIGHTLY, fire) is None
    assert len(submit.runs) == 2  # the two steps of the one run


async def test_a_failed_step_fails_the_run_and_an_exception_does_not_escape(store: Store) -> None:
    fire = datetime(2026, 11, 23, 2, 0, tzinfo=TOKYO)
    await scheduler(store, Recorder(status="failed")).fire(NIGHTLY, fire)
    await scheduler(store, Recorder(raises=True)).fire(NIGHTLY, fire + timedelta(days=1))

    rows = await schedule_runs.runs_between(store, since=fire, until=fire + timedelta(days=2))
    assert [r.status for r in rows] == ["failed", "failed"]
    assert rows[0].error == "backup failed"
    assert rows[1].error == "unexpected error (see the log)"


async def test_a_run_cut_short_by_shutdown_is_recorded_as_interrupted(store: Store) -> None:
    started = asyncio.Event()

    async def never_ends(run: ScheduledRun) -> RunOutcome:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    sched = Scheduler(store=store, table=[NIGHTLY], submit=never_ends, zone=TOKYO)
    fire = datetime(2026, 11, 23, 2, 0, tzinfo=TOKYO)
    task = asyncio.create_task(sched.fire(NIGHTLY, fire))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    [row] = await schedule_runs.runs_between(store, since=fire, until=fire + timedelta(seconds=1))
    assert (row.status, row.error) == ("failed", "interrupted: the bot stopped during the run")


async def test_a_missed_fire_within_grace_runs_once_at_start_up(store: Store) -> None:
    last = datetime(2026, 11, 22, 2, 0, tzinfo=TOKYO)
    await scheduler(store, Recorder()).fire(NIGHTLY, last)
    now = datetime(2026, 11, 23, 2, 40, tzinfo=TOKYO)  # down at 02:00, back 40 min later
    submit = Recorder()

    sched = scheduler(store, submit, now=now)
    decisions = await sched.catch_up()
    await sched.wait_idle()

    assert decisions[0].run_fire == datetime(2026, 11, 23, 2, 0, tzinfo=TOKYO)
    assert decisions[0].missed == 0
    assert {(r.fire_time, r.trigger) for r in submit.runs} == {(decisions[0].run_fire, "catch_up")}


async def test_a_fire_missed_past_grace_is_recorded_as_missed_not_run(store: Store) -> None:
    last = datetime(2026, 11, 20, 2, 0, tzinfo=TOKYO)
    await scheduler(store, Recorder()).fire(NIGHTLY, last)
    now = datetime(2026, 11, 23, 9, 0, tzinfo=TOKYO)  # 21st, 22nd and 23rd at 02:00 passed; grace 3 h
    submit = Recorder()

    decisions = await scheduler(store, submit, now=now).catch_up()

    assert submit.runs == []
    assert decisions[0].missed == 3
    missed = await schedule_runs.runs_between(store, since=last, until=now, statuses=["missed"])
    assert [(m.fire_time, m.result["missed_fires"]) for m in missed] == [
        (datetime(2026, 11, 23, 2, 0, tzinfo=TOKYO), 3)
    ]


async def test_older_misses_are_recorded_when_the_newest_is_caught_up(store: Store) -> None:
    await scheduler(store, Recorder()).fire(NIGHTLY, datetime(2026, 11, 20, 2, 0, tzinfo=TOKYO))
    now = datetime(2026, 11, 23, 3, 0, tzinfo=TOKYO)
    submit = Recorder()

    sched = scheduler(store, submit, now=now)
    decisions = await sched.catch_up()
    await sched.wait_idle()

    assert decisions[0].missed == 2
    assert [r.fire_time for r in submit.runs][:1] == [datetime(2026, 11, 23, 2, 0, tzinfo=TOKYO)]


async def test_two_replicas_starting_together_catch_up_once(store: Store) -> None:
    await scheduler(store, Recorder()).fire(NIGHTLY, datetime(2026, 11, 22, 2, 0, tzinfo=TOKYO))
    now = datetime(2026, 11, 23, 2, 30, tzinfo=TOKYO)
    first, second = Recorder(), Recorder()
    a, b = scheduler(store, first, now=now), scheduler(store, second, now=now)

    await asyncio.gather(a.catch_up(), b.catch_up())
    await asyncio.gather(a.wait_idle(), b.wait_idle())

    assert len(first.runs) + len(second.runs) == 2  # one run: its two steps


async def test_a_schedule_that_never_fired_has_nothing_to_catch_up(store: Store) -> None:
    submit = Recorder()
    decisions = await scheduler(store, submit, now=datetime(2026, 11, 23, 9, 0, tzinfo=TOKYO)).catch_up()
    assert (decisions[0].run_fire, decisions[0].missed, submit.runs) == (None, 0, [])


async def test_schedule_run_name_runs_it_now_as_a_manual_fire(store: Store) -> None:
    now = datetime(2026, 11, 23, 15, 0, 1, tzinfo=TOKYO)
    submit = Recorder()
    sched = scheduler(store, submit, now=now)

    assert await sched.run_now("nightly_backup") is not None
    assert await sched.run_now("no_such") is None
    assert {(r.trigger, r.fire_time) for r in submit.runs} == {("manual", now)}


async def test_a_fire_with_the_store_down_is_skipped_without_raising() -> None:
    down = Store("postgresql://postgres@127.0.0.1:1/none", max_size=1)
    await down.open()
    submit = Recorder()
    try:
        assert await scheduler(down, submit).fire(NIGHTLY, datetime(2026, 11, 23, 2, 0, tzinfo=TOKYO)) is None
    finally:
        await down.close()
    assert submit.runs == []


async def test_start_up_with_the_store_down_still_schedules() -> None:
    down = Store("postgresql://postgres@127.0.0.1:1/none", max_size=1)
    await down.open()
    sched = scheduler(down, Recorder())
    try:
        assert await sched.start() == []
        assert list(sched.next_fire_times()) == ["nightly_backup"]
    finally:
        await sched.shutdown()
        await down.close()


async def test_next_fire_times_follow_the_configured_zone(store: Store) -> None:
    now = datetime(2026, 11, 23, 3, 0, tzinfo=TOKYO)
    assert scheduler(store, Recorder(), now=now).next_fire_times() == {
        "nightly_backup": datetime(2026, 11, 24, 2, 0, tzinfo=TOKYO)
    }
