"""Scheduled runs wired into the bot: each line goes through the pipeline as `scheduler`, its reply
goes to the schedule's channel through the Slack Web API stand-in, and the run records how it ended.

Real bot store and Redis; Slack is tests/support/slack_api.py. Scheduled runs are driven with
`Scheduler.run_now` (a manual fire through the same Submit as cron fires), not by waiting a minute.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.runtime import Runtime
from bot.scheduling import SlackAnnouncer, build_scheduler, make_submit
from bot.slack_app import build_web_client
from bot.slack_surface import SlackSurface
from commands.pipeline import approval_reply
from core.i18n import Translator
from runbooks.chart import PNG_SIGNATURE
from scheduler.seam import ScheduledRun
from scheduler.service import Scheduler
from scheduler.table import ScheduleSpec
from store import approvals as approval_store
from store import schedule_runs
from store.probes import ProbeRecord, record_probes
from tests.support.backup_env import OPERATOR, BackupWorld, backup_world
from tests.support.faults import gated_pg_dump
from tests.support.runtime import BotWorld, request, table_of
from tests.support.slack_api import SlackApiStandIn

REPORTS, OPS = "C0REPORTS", "C0OPS"


def with_slack(world: BotWorld, standin: SlackApiStandIn) -> None:
    world.extra_env.update({"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": standin.url})


@asynccontextmanager
async def slack_runtime(
    world: BotWorld, standin: SlackApiStandIn
) -> AsyncIterator[tuple[Runtime, AsyncWebClient]]:
    with_slack(world, standin)
    async with world.runtime() as runtime:
        yield runtime, build_web_client(runtime)


def one_shot(runtime: Runtime, client: AsyncWebClient, spec: ScheduleSpec) -> Scheduler:
    """The serve wiring (Slack announcer, real Submit) over a table of one schedule."""
    scheduler = build_scheduler(runtime, SlackAnnouncer(client, runtime.services.store))
    return Scheduler(store=scheduler.store, table=[spec], submit=scheduler._submit, zone=scheduler.zone)


def spec(name: str, command: str, channel: str | None) -> ScheduleSpec:
    return ScheduleSpec(name, "0 9 * * *", (command,), channel, timedelta(hours=1))


async def latest(runtime: Runtime, name: str) -> schedule_runs.ScheduleRunRecord:
    return (await schedule_runs.latest_runs(runtime.services.store, [name]))[name]


async def test_a_schedule_naming_a_command_this_build_lacks_is_recorded_failed_saying_so(
    bot_world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with slack_runtime(bot_world, standin) as (runtime, client):
        scheduler = one_shot(runtime, client, spec("wal_check", "nosuch thing", "ops"))

        run_id = await scheduler.run_now("wal_check")

        run = await latest(runtime, "wal_check")
        assert run_id == run.id and run.status == "failed"
        assert run.error == "nosuch thing: Unknown sub-command `nosuch`."  # the pipeline's refusal
        [audit] = bot_world.query(
            "SELECT actor, source, outcome FROM audit_log WHERE event = 'request' AND command = 'nosuch'"
        )
        assert audit == ("scheduler", "scheduler", "refused")


async def test_schedule_list_through_the_pipeline_shows_next_fire_and_last_result(
    bot_world: BotWorld,
) -> None:
    async with bot_world.runtime() as runtime:
        store = runtime.services.store
        fire = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)  # 09:00 JST
        run_id = await schedule_runs.claim_run(
            store, schedule="morning_health", fire_time=fire, claimed_by="t"
        )
        assert run_id is not None
        await schedule_runs.finish_run(store, run_id, status="failed", error="health: API down")

        reply = await runtime.pipeline.handle(request("U0INTERN", "schedule list"))

        assert reply.status == "succeeded", reply.summary
        rows = {row[0]: row for row in table_of(reply).rows}
        assert set(rows) >= {"probe", "morning_health", "nightly_backup", "weekly_report", "approval_sweep"}
        _, cron, runs, next_fire, last = rows["morning_health"]
        assert (cron, runs) == ("0 9 * * *", "health")
        assert next_fire.endswith("09:00 JST")
        assert last.startswith("failed") and "health: API down" in last
        assert rows["nightly_backup"][2] == "backup, db maintain, security keep"
        assert rows["nightly_backup"][4] == "never ran"


async def record_week_of_probes(runtime: Runtime) -> None:
    now = datetime.now(UTC)
    records = [
        ProbeRecord("/health", now - timedelta(days=d, minutes=m), 200, True, 100.0 + 10 * d + m)
        for d in range(6)
        for m in range(3)
    ]
    await record_probes(runtime.services.store, records)


async def test_the_weekly_report_schedule_posts_the_report_and_uploads_its_chart_png(
    bot_world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with slack_runtime(bot_world, standin) as (runtime, client):
        await record_week_of_probes(runtime)
        scheduler = one_shot(runtime, client, spec("weekly_report", "report weekly", "reports"))

        await scheduler.run_now("weekly_report")

        run = await latest(runtime, "weekly_report")
        assert run.status == "succeeded", run.error
        [post] = standin.calls_to("chat.postMessage")
        assert post.params["channel"] == REPORTS
        assert "Weekly report" in post.params["text"] and "KPI" in str(post.params["blocks"])
        [shared] = standin.calls_to("files.completeUploadExternal")
        assert shared.params["channel_id"] == REPORTS
        [file] = shared.json_param("files")
        png = standin.uploaded(file["id"])
        assert png is not None and png.startswith(PNG_SIGNATURE) and len(png) > 5_000
        [audit] = bot_world.query("SELECT actor, source, channel FROM audit_log WHERE command = 'report'")
        assert audit == ("scheduler", "scheduler", REPORTS)


async def test_the_approval_sweep_expires_a_pending_approval_and_removes_its_buttons_in_slack(
    bot_world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with slack_runtime(bot_world, standin) as (runtime, client):
        store = runtime.services.store
        approval = await approval_store.open_approval(
            store,
            command="cache flush",
            args={},
            summary="Empty the Garden DX cache",
            binding={},
            requester="U0OPS",
            channel=OPS,
            source="slack",
            correlation_id="c0",
            ttl=timedelta(seconds=-1),  # already past its time
        )
        surface = SlackSurface(client, channel=OPS, user="U0OPS")
        await surface.post(approval_reply(approval, Translator("en"), runtime.settings.zone))
        posted = standin.message(OPS, str(surface.message_ts))
        assert posted is not None and any(b["type"] == "actions" for b in posted["blocks"])
        await approval_store.remember_message(
            store, approval.id, {"channel": OPS, "ts": str(surface.message_ts)}
        )
        scheduler = one_shot(runtime, client, spec("approval_sweep", "approvals sweep", None))

        await scheduler.run_now("approval_sweep")

        assert (await latest(runtime, "approval_sweep")).status == "succeeded"
        assert (await approval_store.get_approval(store, approval.id)).status == "expired"
        [update] = standin.calls_to("chat.update")
        assert (update.params["channel"], update.params["ts"]) == (OPS, surface.message_ts)
        shown = standin.message(OPS, str(surface.message_ts))
        assert shown is not None
        assert not any(block["type"] == "actions" for block in shown["blocks"])
        assert "expired" in shown["text"] and "Expired: cache flush" in str(shown["blocks"])
        assert len(standin.calls_to("chat.postMessage")) == 1  # only the approval itself: no channel

        await scheduler.run_now("approval_sweep")  # the next sweep finds nothing more to edit
        assert len(standin.calls_to("chat.update")) == 1


@pytest.fixture
def world(tmp_path: Path, health_api_url: str, chinook: str) -> Iterator[BackupWorld]:
    with backup_world(tmp_path, health_api_url, template=chinook) as made:
        yield made


async def test_a_scheduled_backup_is_audited_as_scheduler_and_holds_the_lock_a_typed_one_is_refused(
    world: BackupWorld, standin: SlackApiStandIn, tmp_path: Path
) -> None:
    gate = gated_pg_dump(tmp_path / "pg-bin")
    world.set_env(GARDENBOT_PG_BIN_DIR=str(gate.folder))
    async with slack_runtime(world.bot, standin) as (runtime, client):
        submit = make_submit(runtime, SlackAnnouncer(client, runtime.services.store))
        run = ScheduledRun("nightly_backup", "backup", "ops", datetime.now(UTC), run_id=0)
        scheduled = asyncio.create_task(submit(run))
        await asyncio.to_thread(gate.wait_started)
        [job] = world.jobs()

        typed = await world.handle(runtime, OPERATOR, "backup")

        assert typed.status == "refused" and f"job {job['id']}" in typed.summary, typed.summary
        gate.open()
        outcome = await asyncio.wait_for(scheduled, 120)
        assert outcome.status == "succeeded" and outcome.job_id == job["id"], outcome
        assert [b["status"] for b in world.backups()] == ["good"]
        started = world.store_rows(
            "SELECT actor, source, channel FROM audit_log WHERE event = 'job_started' AND command = 'backup'"
        )
        assert started == [{"actor": "scheduler", "source": "scheduler", "channel": OPS}]
        posts = standin.calls_to("chat.postMessage")
        assert [p.params["channel"] for p in posts] == [OPS]
        last = standin.calls_to("chat.update")[-1]  # the job's message, ending with its result
        final = standin.message(OPS, str(last.params["ts"]))
        assert final is not None and str(job["id"]) in final["text"]


def test_gardenbot_schedule_run_goes_through_the_pipeline_as_scheduler_and_list_shows_the_result(
    bot_world: BotWorld,
) -> None:
    unknown = bot_world.cli("schedule", "run", "no_such_schedule")
    assert unknown.returncode == 2 and "There is no schedule no_such_schedule" in unknown.stderr

    ran = bot_world.cli("schedule", "run", "approval_sweep")

    assert ran.returncode == 0, ran.stderr
    assert "approval(s) expired" in ran.stdout and "Schedule approval_sweep ran" in ran.stdout
    [audit] = bot_world.query(
        "SELECT actor, source, detail->'console'->>'os_login' FROM audit_log"
        " WHERE command = 'approvals sweep'"
    )
    assert audit[:2] == ("scheduler", "scheduler") and audit[2]  # and the OS login that ran it
    listed = bot_world.cli("schedule", "list")
    assert listed.returncode == 0, listed.stderr
    [line] = [row for row in listed.stdout.splitlines() if "approval_sweep" in row]
    assert "approvals sweep" in line and "succeeded" in line


async def test_the_probe_schedule_records_each_probed_path_and_posts_nothing(
    bot_world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with slack_runtime(bot_world, standin) as (runtime, client):
        scheduler = one_shot(runtime, client, spec("probe", "probe", None))

        await scheduler.run_now("probe")

        assert (await latest(runtime, "probe")).status == "succeeded"
        rows = bot_world.query("SELECT path, status_code, healthy, latency_ms FROM probe_results")
        assert [row[:3] for row in rows] == [("/health", 200, True)] and rows[0][3] is not None
        assert standin.calls_to("chat.postMessage") == []


async def test_health_tls_without_tls_hosts_says_they_are_not_configured(bot_world: BotWorld) -> None:
    async with bot_world.runtime() as runtime:
        reply = await runtime.pipeline.handle(request("U0INTERN", "health tls"))

    assert reply.status == "succeeded", reply.summary
    [row] = table_of(reply).rows
    assert "tls_hosts" in " ".join(row)


def audited(world: BotWorld, command: str) -> int:
    [(count,)] = world.query(
        "SELECT count(*) FROM audit_log WHERE event = 'request' AND command = %s", (command,)
    )
    return int(count)


async def test_a_cron_sweep_is_audited_only_when_it_expired_an_approval_and_a_manual_one_always(
    bot_world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with slack_runtime(bot_world, standin) as (runtime, client):
        sweep = spec("approval_sweep", "approvals sweep", None)
        scheduler = one_shot(runtime, client, sweep)
        fire = datetime.now(UTC).replace(second=0, microsecond=0)

        await scheduler.fire(sweep, fire - timedelta(minutes=2))  # nothing to expire
        assert audited(bot_world, "approvals sweep") == 0
        await approval_store.open_approval(
            runtime.services.store,
            command="cache flush",
            args={},
            summary="Empty the Garden DX cache",
            binding={},
            requester="U0OPS",
            channel=OPS,
            source="slack",
            correlation_id="c1",
            ttl=timedelta(seconds=-1),
        )
        await scheduler.fire(sweep, fire - timedelta(minutes=1))  # expires it
        assert audited(bot_world, "approvals sweep") == 1
        await scheduler.fire(sweep, fire)  # nothing left
        await scheduler.run_now("approval_sweep")  # a person asked for this one

        assert audited(bot_world, "approvals sweep") == 2
        runs = await schedule_runs.runs_between(
            runtime.services.store, since=fire - timedelta(hours=1), until=fire + timedelta(hours=1)
        )
        assert len(runs) == 4  # every run is still recorded as a schedule run


async def test_a_cron_probe_is_audited_only_when_a_paths_state_changed(
    bot_world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with slack_runtime(bot_world, standin) as (runtime, client):
        probe = spec("probe", "probe", None)
        scheduler = one_shot(runtime, client, probe)
        fire = datetime.now(UTC).replace(second=0, microsecond=0)

        await scheduler.fire(probe, fire - timedelta(minutes=3))  # first state of /health: audited
        await scheduler.fire(probe, fire - timedelta(minutes=2))  # healthy again: quiet
        assert audited(bot_world, "probe") == 1
        await record_probes(  # as if /health had just failed
            runtime.services.store, [ProbeRecord("/health", datetime.now(UTC), 503, False, 5.0)]
        )
        await scheduler.fire(probe, fire - timedelta(minutes=1))  # failing -> healthy: audited

        assert audited(bot_world, "probe") == 2
        [(probes,)] = bot_world.query("SELECT count(*) FROM probe_results")
        assert probes == 4  # three runs and the failure, all in the history


async def test_the_nightly_security_keep_keeps_each_finished_day_of_the_week_once(
    bot_world: BotWorld, standin: SlackApiStandIn, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    start = int((now - timedelta(days=9)).timestamp())
    auth = tmp_path / "auth.log"
    auth.write_text(
        "".join(
            f"192.0.2.{i % 9} {datetime.fromtimestamp(t, UTC).isoformat()} authentication failed\n"
            for i, t in enumerate(range(start, int(now.timestamp()), 3600))
        ),
        encoding="utf-8",
    )
    bot_world.configure(logs={"auth": str(auth)})
    async with slack_runtime(bot_world, standin) as (runtime, client):
        scheduler = one_shot(runtime, client, spec("nightly_backup", "security keep", "ops"))

        await scheduler.run_now("nightly_backup")
        again = await runtime.pipeline.handle(request("U0OPS", "security keep"))

        run = await latest(runtime, "nightly_backup")
        assert run.status == "succeeded", run.error
        assert "kept for 7 finished day(s) (0 kept before)" in run.result["steps"][0]["text"]
        assert again.status == "succeeded" and "kept for 0 finished day(s) (7 kept before)" in again.summary
        rows = bot_world.query("SELECT day, failed_logins, kept_by FROM security_days ORDER BY day")
        assert len(rows) == 7 and {r[2] for r in rows} == {"nightly"}
        assert {r[1] for r in rows} == {24}  # one failure an hour, each counted on one day


async def test_without_logs_configured_the_nightly_security_keep_succeeds_keeping_nothing(
    bot_world: BotWorld,
) -> None:
    async with bot_world.runtime() as runtime:
        reply = await runtime.pipeline.handle(request("U0OPS", "security keep"))

    assert reply.status == "succeeded" and "no security counts to keep" in reply.summary
    assert bot_world.query("SELECT count(*) FROM security_days") == [(0,)]
