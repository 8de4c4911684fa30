"""The hosts commands through the pipeline, with real Ansible against the sample Garden DX host
(runbooks/sample_hosts.py: a git-deployed app under supervisord, origin holding v1, v2 and v2-bad).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from bot.clicks import request_from_click
from bot.runtime import Runtime
from commands.backup import prune_expired
from commands.base import Actor, ConsoleOrigin, Context, Request, no_progress
from commands.hosts import ServiceArgs, open_p1
from commands.release import VersionArgs, VersionChecked, describe_release, release_reply
from commands.services import utc_now
from core.i18n import Translator
from core.reply import Actions, Header, Note, Reply, Table, Text
from runbooks.hosts import HostRelease, HostsReport, HostVersion
from runbooks.playbook_runner import PlaybookRun
from runbooks.sample_hosts import SampleHosts, running_sample_hosts
from store import incidents as incident_store
from store import jobs as job_store
from store import releases as release_store
from store.jobs import Instance
from store.releases import ReleaseEnd
from tests.runbooks.test_hosts import checkout_describe, pids, serving_version
from tests.support.runtime import CONSOLE_ADMIN, OS_LOGIN, BotWorld, table_of
from tests.support.servers import throwaway_database
from tests.support.slack_api import SlackApiStandIn

pytestmark = pytest.mark.slow

ADMIN, OPERATOR, LEAD, VIEWER = "U0ADMIN", "U0OPS", "U0LEAD", "U0INTERN"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SampleHosts]:
    with running_sample_hosts(tmp_path_factory.mktemp("hostcmd") / "garden") as sample:
        yield sample


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[SampleHosts]:
    with running_sample_hosts(tmp_path / "garden") as sample:
        yield sample


def configure(world: BotWorld, sample: SampleHosts, **more: object) -> None:
    world.configure(hosts={"inventory": str(sample.inventory), "vars": {**sample.vars(), **more}})


@pytest.fixture
async def on_shared(bot_world: BotWorld, shared: SampleHosts) -> AsyncIterator[Runtime]:
    configure(bot_world, shared)
    async with bot_world.runtime() as rt:
        yield rt


@pytest.fixture
async def on_fresh(bot_world: BotWorld, fresh: SampleHosts) -> AsyncIterator[Runtime]:
    """A bot whose target database holds a table (an empty database makes no usable backup)."""
    configure(bot_world, fresh, garden_health_timeout=4)
    with throwaway_database("gbt_rel") as target:
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(b"CREATE TABLE garden (id int PRIMARY KEY); INSERT INTO garden VALUES (1)")
        bot_world.extra_env["GARDEN_DATABASE_URL"] = target
        async with bot_world.runtime() as rt:
            yield rt


def ask(user: str, text: str, channel: str = "C0OPS") -> Request:
    return Request(actor=Actor(user_id=user), text=text, source="console", channel=channel, locale="en")


async def finish(rt: Runtime, reply: Reply, seen: list[str] | None = None) -> Reply:
    job_id = reply.ids.get("job_id")
    if reply.status != "running" or not isinstance(job_id, int):
        return reply
    final: Reply | None = None
    async for event in rt.pipeline.jobs.watch(job_id):
        if event.finished:
            final = event.reply
        elif seen is not None:
            seen.append(event.text)
    assert final is not None
    return final


async def approve(rt: Runtime, approval_id: int, seen: list[str] | None = None) -> Reply:
    reply = await rt.pipeline.decide(ask(LEAD, f"approve {approval_id}"), approval_id, "approved")
    return await finish(rt, reply, seen)


async def test_service_status_shows_each_service_running_on_the_host(on_shared: Runtime) -> None:
    reply = await on_shared.pipeline.handle(ask(VIEWER, "service status"))

    assert reply.status == "succeeded", reply
    rows = {row[1]: row for row in table_of(reply).rows}
    assert set(rows) == {"garden-backend", "garden-frontend"}
    assert all(row[0] == "localhost" and row[2] == "RUNNING" for row in rows.values())


async def test_service_restart_waits_for_a_second_person_then_restarts_both_services(
    on_shared: Runtime, shared: SampleHosts, bot_world: BotWorld
) -> None:
    before = pids(shared)

    asked = await on_shared.pipeline.handle(ask(OPERATOR, "service restart all"))

    assert asked.status == "pending", asked
    assert pids(shared) == before  # nothing before the approval
    done = await approve(on_shared, int(asked.ids["approval_id"]))
    assert done.status == "succeeded", done
    after = pids(shared)
    assert all(after[name] != before[name] for name in before)
    [(requested, approved)] = bot_world.query(
        "SELECT requested_by, approved_by FROM jobs WHERE command = 'service restart'"
    )
    assert (requested, approved) == (OPERATOR, LEAD)
    events = [r[0] for r in bot_world.query("SELECT event FROM audit_log WHERE command = 'service restart'")]
    assert "playbook_run" in events


async def test_an_unknown_service_is_refused_before_any_approval(
    on_shared: Runtime, bot_world: BotWorld
) -> None:
    reply = await on_shared.pipeline.handle(ask(OPERATOR, "service restart sshd"))

    assert reply.status == "refused", reply
    assert "garden-backend" in reply.summary
    assert bot_world.query("SELECT id FROM approvals") == []


async def test_during_an_open_p1_a_restart_runs_without_approval_and_is_noted_on_the_incident(
    on_shared: Runtime, shared: SampleHosts, bot_world: BotWorld
) -> None:
    store = on_shared.services.store
    # Declared by someone else: declaring a P1 oneself waives nothing (the test below).
    p1 = await incident_store.declare_incident(
        store, severity="P1", title="API down", impact=None, declared_by="U0LEAD2", at=utc_now()
    )
    before = pids(shared)

    reply = await finish(
        on_shared, await on_shared.pipeline.handle(ask(OPERATOR, "service restart garden-backend"))
    )

    assert reply.status == "succeeded", reply
    assert pids(shared)["garden-backend"] != before["garden-backend"]
    assert pids(shared)["garden-frontend"] == before["garden-frontend"]
    assert bot_world.query("SELECT id FROM approvals") == []
    assert any(isinstance(e, Note) and f"incident {p1.id}" in e.text for e in reply.elements)
    actions = [e for e in await incident_store.timeline(store, p1.id) if e.kind == "action"]
    notes = [e for e in actions if e.detail.get("break_glass")]
    assert len(notes) == 1  # flagged once for the postmortem's review...
    assert notes[0].detail["break_glass"] is True and notes[0].actor == OPERATOR
    assert "service restart garden-backend" in notes[0].text
    assert [e.detail.get("outcome") for e in actions if e not in notes] == ["succeeded"]  # ...and its end
    waived = bot_world.query("SELECT outcome FROM audit_log WHERE event = 'approval_waived'")
    assert waived == [("waived",)]


async def test_a_version_not_in_origin_is_refused_before_any_approval(
    on_shared: Runtime, bot_world: BotWorld, shared: SampleHosts
) -> None:
    reply = await on_shared.pipeline.handle(ask(ADMIN, "release v9.9"))

    assert reply.status == "refused", reply
    assert "v9.9" in reply.summary and "origin" in reply.summary
    assert bot_world.query("SELECT id FROM approvals") == []
    assert bot_world.query("SELECT id FROM jobs") == []
    assert serving_version(shared) == "v1"


async def test_release_v2_goes_live_then_v2_bad_is_rolled_back_and_release_list_shows_both(
    on_fresh: Runtime, fresh: SampleHosts, bot_world: BotWorld
) -> None:
    asked = await on_fresh.pipeline.handle(ask(ADMIN, "release v2"))
    assert asked.status == "pending", asked
    assert serving_version(fresh) == "v1"
    lines: list[str] = []

    good = await approve(on_fresh, int(asked.ids["approval_id"]), lines)

    assert good.status == "succeeded", good
    assert serving_version(fresh) == "v2" and checkout_describe(fresh) == "v2"
    assert any("localhost: " in line for line in lines), lines  # the playbook's tasks as progress lines
    backup = bot_world.query("SELECT kind, status FROM backups WHERE id = %s", (good.ids["backup_id"],))
    assert backup == [("safety", "good")]
    archives = bot_world.query("SELECT host, release_id FROM file_backups")
    assert archives == [("localhost", good.ids["release_id"])]

    asked_bad = await on_fresh.pipeline.handle(ask(ADMIN, "release v2-bad"))
    bad = await approve(on_fresh, int(asked_bad.ids["approval_id"]))

    assert bad.status == "failed", bad
    assert "rolled back" in bad.summary
    assert serving_version(fresh) == "v2" and checkout_describe(fresh) == "v2"
    assert not Path(fresh.vars()["garden_maintenance_flag"]).exists()
    assert not any(isinstance(e, Actions) for e in bad.elements)  # no migrations ran: nothing to restore

    listing = await on_fresh.pipeline.handle(ask(VIEWER, "release list"))
    rows = table_of(listing).rows
    assert [(r[1], r[2], r[3], r[5]) for r in rows] == [
        ("v2-bad", ADMIN, LEAD, "rolled back"),
        ("v2", ADMIN, LEAD, "released"),
    ]
    assert rows[0][7] == "Wait for healthy answers in a row" and rows[1][7] == "-"
    backups = await on_fresh.pipeline.handle(ask(VIEWER, "backup list"))
    assert len([e for e in backups.elements if isinstance(e, Table)]) == 2  # DB backups, then file archives


def test_a_rollback_after_migrations_offers_the_restore_as_a_button_that_asks_for_restore() -> None:
    report = HostsReport(
        run=PlaybookRun(
            run_id="r1",
            playbook="release",
            status="failed",
            hosts=(),
            started_at=datetime.now(UTC),
            duration_s=9,
        ),
        by_host={
            "web1": HostRelease.model_validate(
                {
                    "outcome": "rolled_back",
                    "version": "v3",
                    "previous": {"commit": "a", "describe": "v2"},
                    "now": {"commit": "a", "describe": "v2"},
                    "migrations": "ran",
                    "failed_step": "Wait for healthy answers in a row",
                }
            )
        },
    )
    end = ReleaseEnd(status="rolled_back", migrations="ran", failed_step="Wait for healthy answers in a row")

    reply = release_reply(_ctx(), "v3", 5, 41, report, end)

    [actions] = [e for e in reply.elements if isinstance(e, Actions)]
    [button] = actions.buttons
    assert (button.action_id, button.value) == ("restore_backup", "41")
    click = request_from_click(button.action_id, button.value, Actor(user_id=ADMIN), "C0OPS")
    assert click.text == "restore 41"  # the restore's own request, which opens its own approval


def _ctx() -> object:
    class Ctx:
        t = Translator("en")

    return Ctx()


async def test_a_release_whose_bot_died_is_interrupted_and_says_the_maintenance_flag_is_still_set(
    bot_world: BotWorld, shared: SampleHosts
) -> None:
    configure(bot_world, shared)
    flag = Path(shared.vars()["garden_maintenance_flag"])
    async with bot_world.runtime() as rt:
        store = rt.services.store
        dead = Instance(host="gone", pid=1, id="deadbeef0000")
        job = await job_store.create_job(
            store,
            command="release",
            args={"version": "v2"},
            requested_by=ADMIN,
            approved_by=LEAD,
            approval_id=None,
            channel="C0OPS",
            source="slack",
            correlation_id="c1",
            owner=dead,
            lock_name="release",
        )
        release_id = await release_store.start_release(
            store, job_id=job.id, version="v2", requested_by=ADMIN, approved_by=LEAD
        )
    silent = datetime.now(UTC) - timedelta(hours=1)
    bot_world.query("UPDATE jobs SET heartbeat_at = %s WHERE id = %s", (silent, job.id))
    flag.write_text("release in progress\n", encoding="utf-8")  # what the killed release left
    try:
        async with bot_world.runtime() as rt:  # start-up recovery
            record = await release_store.get_release(rt.services.store, release_id)
            listing = await rt.pipeline.handle(ask(VIEWER, "release list"))
    finally:
        flag.unlink()

    assert record.status == "interrupted"
    assert record.error is not None and "still set" in record.error and str(flag) in record.error
    assert table_of(listing).rows[0][5] == "interrupted"


async def test_a_p1_declared_by_the_requester_alone_waives_no_approval(bot_runtime: Runtime) -> None:
    store = bot_runtime.services.store
    now = bot_runtime.services.clock()
    mine = await incident_store.declare_incident(
        store, severity="P1", title="all down", impact=None, declared_by="U0OPS", at=now, paged_levels=[]
    )

    def as_user(user: str) -> Context:
        request = Request(actor=Actor(user), text="service restart all", source="slack", channel="C1")
        return Context(
            request=request, services=bot_runtime.services, t=Translator("en"), progress=no_progress
        )

    assert await open_p1(as_user("U0OPS"), ServiceArgs(service="all")) is None  # one person alone
    assert await open_p1(as_user("U0LEAD2"), ServiceArgs(service="all")) == {
        "incident_id": mine.id,
        "severity": "P1",
        "vouched_by": "U0OPS",
    }


# --- break-glass: who vouches for the P1 ----------------------------------------------------------
# The admin's OS login maps to CONSOLE_ADMIN (tests/support/runtime.py): `--user`/`as` is impersonation.

AT_CONSOLE = ConsoleOrigin(os_login=OS_LOGIN, host="ops-host")


def at_console(user: str, text: str, *, impersonated_by: str | None = None) -> Request:
    origin = replace(AT_CONSOLE, impersonated_by=impersonated_by)
    return Request(actor=Actor(user), text=text, source="console", locale="en", console=origin)


def from_slack(user: str, text: str) -> Request:
    return Request(actor=Actor(user), text=text, source="slack", channel="C0OPS", locale="en")


async def restart_after_p1(
    world: BotWorld, sample: SampleHosts, declare: Request, restart: Request, ack: Request | None = None
) -> Reply:
    """Declare (and acknowledge) a P1 through the pipeline on a bot without hosts (so it takes no
    evidence), then ask for `service restart all` on the sample hosts."""
    async with world.runtime() as rt:
        declared = await rt.pipeline.handle(declare)
        assert declared.status == "succeeded", declared
        if ack is not None:
            acked = await rt.pipeline.handle(replace(ack, text=f"incident ack {declared.ids['incident_id']}"))
            assert acked.status == "succeeded", acked
    configure(world, sample)
    async with world.runtime() as rt:
        return await finish(rt, await rt.pipeline.handle(restart))


def assert_waits_for_a_second_person(world: BotWorld, reply: Reply) -> None:
    assert reply.status == "pending", reply
    assert world.query("SELECT count(*) FROM approvals WHERE command = 'service restart'") == [(1,)]
    assert world.query("SELECT id FROM audit_log WHERE event = 'approval_waived'") == []


@pytest.mark.parametrize("restart_from", ["console", "slack"])
async def test_a_p1_an_admin_declared_as_someone_else_waives_no_approval_for_his_own_restart(
    bot_world: BotWorld, shared: SampleHosts, restart_from: str
) -> None:
    declare = at_console("U0LEAD2", "incident declare P1 fake", impersonated_by=CONSOLE_ADMIN)
    ask_restart = at_console if restart_from == "console" else from_slack

    reply = await restart_after_p1(
        bot_world, shared, declare, ask_restart(CONSOLE_ADMIN, "service restart all")
    )

    assert_waits_for_a_second_person(bot_world, reply)


async def test_a_p1_an_admin_declared_himself_waives_no_approval_for_a_restart_he_asks_as_someone_else(
    bot_world: BotWorld, shared: SampleHosts
) -> None:
    declare = at_console(CONSOLE_ADMIN, "incident declare P1 fake")
    restart = at_console(OPERATOR, "service restart all", impersonated_by=CONSOLE_ADMIN)

    reply = await restart_after_p1(bot_world, shared, declare, restart)

    assert_waits_for_a_second_person(bot_world, reply)


async def test_a_p1_an_admin_acknowledged_as_someone_else_waives_no_approval_for_his_own_restart(
    bot_world: BotWorld, shared: SampleHosts
) -> None:
    declare = from_slack(CONSOLE_ADMIN, "incident declare P1 fake")
    ack = at_console("U0LEAD2", "incident ack", impersonated_by=CONSOLE_ADMIN)

    reply = await restart_after_p1(
        bot_world, shared, declare, from_slack(CONSOLE_ADMIN, "service restart all"), ack=ack
    )

    assert_waits_for_a_second_person(bot_world, reply)


async def test_a_p1_declared_from_the_same_os_login_waives_no_approval_whichever_user_it_acted_as(
    bot_world: BotWorld, shared: SampleHosts
) -> None:
    declare = at_console("U0LEAD2", "incident declare P1 fake")  # the login's mapping changed since

    reply = await restart_after_p1(bot_world, shared, declare, at_console(OPERATOR, "service restart all"))

    assert_waits_for_a_second_person(bot_world, reply)


@pytest.mark.parametrize("vouched_by", ["declared", "acknowledged"])
async def test_a_p1_declared_or_acknowledged_by_another_person_still_waives_the_approval(
    bot_world: BotWorld, shared: SampleHosts, vouched_by: str
) -> None:
    lead2 = Request(
        actor=Actor("U0LEAD2"),
        text="incident declare P1 'API down'",
        source="console",
        locale="en",
        console=ConsoleOrigin(os_login="lead2", host="lead2-host"),
    )
    if vouched_by == "declared":
        declare, ack = lead2, None
    else:
        declare, ack = from_slack(CONSOLE_ADMIN, "incident declare P1 'API down'"), lead2

    reply = await restart_after_p1(
        bot_world, shared, declare, at_console(CONSOLE_ADMIN, "service restart garden-backend"), ack=ack
    )

    assert reply.status == "succeeded", reply
    assert bot_world.query("SELECT id FROM approvals") == []
    [(actor, detail)] = bot_world.query("SELECT actor, detail FROM audit_log WHERE event = 'approval_waived'")
    assert actor == CONSOLE_ADMIN
    assert detail["break_glass"]["vouched_by"] == "U0LEAD2"
    assert detail["console"]["os_login"] == OS_LOGIN


# --- evidence ----------------------------------------------------------------------------------------


def evidence_entries(entries: list[incident_store.TimelineEntry]) -> list[incident_store.TimelineEntry]:
    return [e for e in entries if e.kind == "action" and e.detail.get("command") == "evidence"]


async def test_incident_evidence_keeps_each_hosts_service_states_and_error_log_on_the_timeline(
    on_shared: Runtime,
) -> None:
    store = on_shared.services.store
    incident = await incident_store.declare_incident(
        store, severity="P2", title="Quotes slow", impact=None, declared_by=LEAD, at=utc_now()
    )

    started = await on_shared.pipeline.handle(ask(OPERATOR, f"incident evidence {incident.id}"))
    done = await finish(on_shared, started)

    assert started.status == "running", started
    assert done.status == "succeeded", done
    [entry] = evidence_entries(await incident_store.timeline(store, incident.id))
    assert entry.actor == OPERATOR and entry.detail["job_id"] == started.ids["job_id"]
    found = entry.detail["hosts"]["localhost"]
    assert {s["name"]: s["state"] for s in found["services"]} == {
        "garden-backend": "RUNNING",
        "garden-frontend": "RUNNING",
    }
    assert {excerpt["name"] for excerpt in found["logs"]} == {"garden-backend", "garden-frontend"}
    assert found["error_log"]["path"]


async def test_incident_evidence_for_no_such_incident_or_asked_by_a_viewer_starts_no_job(
    on_shared: Runtime, bot_world: BotWorld
) -> None:
    unknown = await on_shared.pipeline.handle(ask(OPERATOR, "incident evidence 9999"))
    viewer = await on_shared.pipeline.handle(ask(VIEWER, "incident evidence 1"))
    bad = await on_shared.pipeline.handle(ask(OPERATOR, "incident evidence twelve"))

    assert [unknown.status, viewer.status, bad.status] == ["refused", "refused", "refused"]
    assert "incident evidence <id>" in repr(bad)  # the usage line
    assert bot_world.query("SELECT id FROM jobs") == []


def with_slack(world: BotWorld, api: SlackApiStandIn) -> None:
    world.extra_env.update({"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": api.url})


async def test_a_p1_takes_evidence_in_a_job_of_its_own_after_its_notice_went_out(
    bot_world: BotWorld, shared: SampleHosts, standin: SlackApiStandIn
) -> None:
    configure(bot_world, shared)
    with_slack(bot_world, standin)
    async with bot_world.runtime() as rt:
        declared = await rt.pipeline.handle(ask(OPERATOR, "incident declare P1 'Quotes API down'"))
        [(job_id, requested_by)] = bot_world.query(
            "SELECT id, requested_by FROM jobs WHERE command = 'incident evidence'"
        )
        still_running = job_id in rt.pipeline.runner.running()
        posted_before_evidence = [c.params["channel"] for c in standin.calls_to("chat.postMessage")]
        evidence = await rt.pipeline.runner.wait(job_id)
        timeline = await incident_store.timeline(rt.services.store, int(declared.ids["incident_id"]))

    assert declared.status == "succeeded", declared
    assert still_running  # the declaration answered without waiting for the hosts
    assert posted_before_evidence == ["C0INC"]  # the notice was out before the evidence was asked for
    assert any(isinstance(e, Note) and f"job {job_id}" in e.text for e in declared.elements)
    assert evidence.status == "succeeded", evidence
    assert requested_by == OPERATOR
    [entry] = evidence_entries(timeline)
    assert "localhost" in entry.detail["hosts"] and entry.detail["job_id"] == job_id


async def test_a_p2_or_a_p1_without_hosts_configured_takes_no_evidence(
    bot_world: BotWorld, shared: SampleHosts
) -> None:
    async with bot_world.runtime() as rt:  # no hosts configured
        p1 = await rt.pipeline.handle(ask(OPERATOR, "incident declare P1 'All down'"))
    configure(bot_world, shared)
    async with bot_world.runtime() as rt:
        p2 = await rt.pipeline.handle(ask(OPERATOR, "incident declare P2 'PDFs slow'"))

    assert (p1.status, p2.status) == ("succeeded", "succeeded")
    assert bot_world.query("SELECT id FROM jobs") == []


async def test_evidence_without_an_incident_is_posted_to_the_ops_channel_too(
    bot_world: BotWorld, shared: SampleHosts, standin: SlackApiStandIn
) -> None:
    configure(bot_world, shared)
    with_slack(bot_world, standin)
    async with bot_world.runtime() as rt:
        reply = await finish(rt, await rt.pipeline.handle(ask(OPERATOR, "evidence", channel="C0DEV")))

    assert reply.status == "succeeded", reply
    [post] = standin.calls_to("chat.postMessage")
    assert post.params["channel"] == "C0OPS"
    shown = json.dumps(post.json_param("blocks")) + str(post.params.get("text", ""))
    assert "garden-backend RUNNING" in shown and "localhost" in shown
    assert any(isinstance(e, Note) and "C0OPS" in e.text for e in reply.elements)


# --- release's approval text ------------------------------------------------------------------------


async def test_the_release_approval_text_uses_the_preflights_check_instead_of_asking_the_hosts_again(
    bot_runtime: Runtime,
) -> None:
    checked = HostsReport(
        run=PlaybookRun(
            run_id="r1",
            playbook="version_check",
            status="successful",
            hosts=(),
            started_at=utc_now(),
            duration_s=1,
        ),
        by_host={
            "web1": HostVersion.model_validate(
                {"exists": True, "commit": "c0ffee1234567890", "current": {"commit": "a", "describe": "v1"}}
            )
        },
    )
    request = Request(actor=Actor(ADMIN), text="release v2", source="console", channel="C0OPS")
    ctx = Context(request=request, services=bot_runtime.services, t=Translator("en"), progress=no_progress)
    ctx.found = VersionChecked(version="v2", report=checked)

    # No hosts are configured here: asking them again would be refused.
    text = await describe_release(ctx, VersionArgs(version="v2"))

    assert text.binding == {"version": "v2", "commit": "c0ffee1234567890"}
    assert "c0ffee123456" in text.summary and "v1" in text.summary


# --- monthly chores -----------------------------------------------------------------------------------


def good_backup(world: BotWorld, name: str, days_ago: int) -> int:
    [(backup_id,)] = world.query(
        "INSERT INTO backups (kind, database_name, file_name, created_by, status, started_at, finished_at)"
        " VALUES ('regular', 'garden_dx', %s, 'test', 'good', now() - make_interval(days => %s),"
        " now() - make_interval(days => %s)) RETURNING id",
        (name, days_ago, days_ago),
    )
    return int(backup_id)


def chores_table(reply: Reply) -> Table | None:
    return next((e for e in reply.elements if isinstance(e, Table) and "security updates" in e.columns), None)


async def test_the_monthly_report_carries_security_updates_disk_use_and_backups_past_retention(
    on_shared: Runtime, bot_world: BotWorld
) -> None:
    expired = good_backup(bot_world, "old.dump", days_ago=45)
    newest = good_backup(bot_world, "new.dump", days_ago=1)

    monthly = await on_shared.pipeline.handle(ask(OPERATOR, "report monthly"))
    weekly = await on_shared.pipeline.handle(ask(OPERATOR, "report weekly"))

    assert monthly.status == "succeeded", monthly
    assert Header("Monthly chores") in monthly.elements
    table = chores_table(monthly)
    assert table is not None
    [(host, security, upgradable, disks)] = table.rows
    assert host == "localhost"
    assert (security, upgradable) == ("-", "no apt") or (security.isdigit() and upgradable.isdigit())
    assert "/ " in disks and "%" in disks
    [retention] = [
        e.text for e in monthly.elements if isinstance(e, Text) and "Backups past retention" in e.text
    ]
    assert f"#{expired}" in retention and f"#{newest}" not in retention  # the newest good one is always kept
    assert chores_table(weekly) is None and Header("Monthly chores") not in weekly.elements


async def test_the_monthly_report_without_hosts_configured_has_no_chores(bot_runtime: Runtime) -> None:
    monthly = await bot_runtime.pipeline.handle(ask(OPERATOR, "report monthly"))

    assert monthly.status == "succeeded", monthly
    assert chores_table(monthly) is None and Header("Monthly chores") not in monthly.elements


def archive_row(world: BotWorld, host: str, path: str, days_ago: int) -> int:
    [(archive_id,)] = world.query(
        "INSERT INTO file_backups (host, path, size_bytes, sha256, created_by, created_at)"
        " VALUES (%s, %s, 7, 'x', 'test', now() - make_interval(days => %s)) RETURNING id",
        (host, path, days_ago),
    )
    return int(archive_id)


def archive_status(world: BotWorld, archive_id: int) -> str:
    [(status,)] = world.query("SELECT status FROM file_backups WHERE id = %s", (archive_id,))
    return str(status)


async def test_backup_files_prunes_archives_past_their_retention_on_the_host_and_leaves_database_backups(
    on_shared: Runtime, bot_world: BotWorld
) -> None:
    old_dump = good_backup(bot_world, "old.dump", days_ago=400)  # past backup.retention_days too
    dump_file = on_shared.services.settings.backup_dir / "old.dump"
    dump_file.parent.mkdir(parents=True, exist_ok=True)
    dump_file.write_bytes(b"dump")
    elsewhere = archive_row(bot_world, "web9", "/nonexistent/garden-files-web9-1.tar.gz", days_ago=300)
    first = await finish(on_shared, await on_shared.pipeline.handle(ask(OPERATOR, "backup files")))
    assert first.status == "succeeded", first
    first_id = int(first.ids["file_backup_id"])
    [(first_path,)] = bot_world.query("SELECT path FROM file_backups WHERE id = %s", (first_id,))
    bot_world.query(
        "UPDATE file_backups SET created_at = now() - interval '200 days' WHERE id = %s", (first_id,)
    )
    assert Path(first_path).is_file()

    second = await finish(on_shared, await on_shared.pipeline.handle(ask(OPERATOR, "backup files")))

    assert second.status == "succeeded", second
    assert "deleted on their hosts: 1" in " ".join(e.text for e in second.elements if isinstance(e, Text))
    second_id = int(second.ids["file_backup_id"])
    [(second_path,)] = bot_world.query("SELECT path FROM file_backups WHERE id = %s", (second_id,))
    assert archive_status(bot_world, first_id) == "pruned" and not Path(first_path).exists()
    assert archive_status(bot_world, second_id) == "good" and Path(second_path).is_file()
    assert archive_status(bot_world, elsewhere) == "good"  # web9's only archive: kept however old
    assert bot_world.query("SELECT status FROM backups WHERE id = %s", (old_dump,)) == [("good",)]
    assert dump_file.read_bytes() == b"dump"  # the file retention never touches database backups
    runs = bot_world.query(
        "SELECT detail->>'playbook' FROM audit_log WHERE command = 'backup files' AND event = 'playbook_run'"
        " ORDER BY id"
    )
    assert runs == [("backup_files",), ("backup_files",), ("prune_files",)]
    listing = await on_shared.pipeline.handle(ask(VIEWER, "backup list"))
    archives = [e for e in listing.elements if isinstance(e, Table)][-1]
    assert str(second_id) in [row[0] for row in archives.rows]
    assert str(first_id) not in [row[0] for row in archives.rows]
    assert any(isinstance(e, Text) and "kept 90 days" in e.text for e in listing.elements)


async def test_the_database_prune_leaves_file_archives_past_their_own_retention(
    on_shared: Runtime, bot_world: BotWorld, tmp_path: Path
) -> None:
    old_dump = good_backup(bot_world, "old.dump", days_ago=45)
    new_dump = good_backup(bot_world, "new.dump", days_ago=1)
    archives = []
    for days in (400, 300):
        path = tmp_path / f"garden-files-localhost-{days}.tar.gz"
        path.write_bytes(b"archive")
        archives.append((archive_row(bot_world, "localhost", str(path), days_ago=days), path))

    pruned = await prune_expired(on_shared.services)

    assert pruned == 1
    assert bot_world.query("SELECT id FROM backups WHERE status = 'pruned'") == [(old_dump,)]
    assert bot_world.query("SELECT id FROM backups WHERE status = 'good'") == [(new_dump,)]
    for archive_id, path in archives:
        assert archive_status(bot_world, archive_id) == "good" and path.read_bytes() == b"archive"


async def test_the_monthly_chores_count_file_archives_by_their_own_retention(
    bot_world: BotWorld, shared: SampleHosts
) -> None:
    configure(bot_world, shared)
    bot_world.configure(backup={"retention_days": 30, "files_retention_days": 10})
    async with bot_world.runtime() as rt:  # the store is migrated when the runtime opens
        dump = good_backup(bot_world, "twenty.dump", days_ago=20)
        good_backup(bot_world, "one.dump", days_ago=1)
        old = archive_row(bot_world, "localhost", "/b/garden-files-localhost-a.tar.gz", days_ago=20)
        newest = archive_row(bot_world, "localhost", "/b/garden-files-localhost-b.tar.gz", days_ago=15)

        monthly = await rt.pipeline.handle(ask(OPERATOR, "report monthly"))

    assert monthly.status == "succeeded", monthly
    lines = [e.text for e in monthly.elements if isinstance(e, Text) and "past retention" in e.text]
    [database] = [line for line in lines if line.startswith("Backups past retention")]
    [files] = [line for line in lines if line.startswith("File archives past retention")]
    assert "(30 days): none" in database and f"#{dump}" not in database  # 20 days is within 30
    assert "(10 days): 1" in files and f"#{old}" in files  # 20 days is past 10
    assert f"#{newest}" not in files  # the host's newest good archive, 15 days old, is kept
