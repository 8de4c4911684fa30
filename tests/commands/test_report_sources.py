"""The KPI report gathered from the bot's store and the operated system; missing sources say no data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from commands.report import render_report
from commands.report_sources import gather_report, take_probes
from core.config import Settings, load_settings
from core.i18n import Translator
from core.reply import Fields, Reply
from runbooks.report import ReportData
from runbooks.sample_garden import create_sample_garden
from scheduler.seam import RunOutcome, ScheduledRun
from scheduler.service import Scheduler
from scheduler.table import ScheduleSpec
from store import schedule_runs
from store.backups import fail_backup_record, start_backup_record
from store.db import Store
from store.incidents import acknowledge_incident, declare_incident, resolve_incident
from store.probes import ProbeRecord, record_probes
from tests.support.prometheus_api import prometheus_api
from tests.support.servers import throwaway_database

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2030, 1, 8, 9, 0, tzinfo=TOKYO)  # a Tuesday far from the sample's own rows
WEEK_AGO = NOW - timedelta(days=7)


def settings_for(tmp_path: Path, **env: str) -> Settings:
    return load_settings(env={"GARDENBOT_STATE_DIR": str(tmp_path), **env}, config_path=tmp_path / "none.yml")


@pytest.fixture
def garden_url() -> Iterator[str]:
    """The sample garden_dx plus known activity in the report's week (and just outside it)."""
    with throwaway_database("gbt_garden") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT 1")
        yield url


async def fill_garden(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await create_sample_garden(conn)
        inside, outside = NOW - timedelta(days=1), WEEK_AGO - timedelta(hours=1)
        rows = [(1, "login", inside), (1, "login", inside), (3, "login", inside), (6, "login", outside)]
        rows += [(3, "login_failed", inside)] + [(1, "pdf_export", inside)] * 4 + [(1, "pdf_export", outside)]
        for user_id, action, at in rows:
            await conn.execute(
                "INSERT INTO user_activity_logs (user_id, action, created_at) VALUES (%s, %s, %s)",
                (user_id, action, at),
            )
        for at in (inside, inside, outside):
            await conn.execute(
                "INSERT INTO estimates (company_id, customer_name, title, created_at) VALUES (1, %s, %s, %s)",
                ("テスト太郎", "庭園見積", at),
            )


async def fill_incidents(store: Store) -> None:
    """Two P1s in the week (acknowledged after 10 and 20 minutes, one resolved after a day), a P2
    never acknowledged but resolved after an hour, and a P3 declared before the week."""
    first = NOW - timedelta(days=3)
    one = await declare_incident(
        store, severity="P1", title="API down", impact=None, declared_by="U1", at=first
    )
    await acknowledge_incident(store, one.id, by="U2", at=first + timedelta(minutes=10))
    second = NOW - timedelta(days=2)
    two = await declare_incident(
        store, severity="P1", title="DB full", impact=None, declared_by="U1", at=second
    )
    await acknowledge_incident(store, two.id, by="U2", at=second + timedelta(minutes=20))
    await resolve_incident(store, two.id, by="U2", at=second + timedelta(days=1))
    third = NOW - timedelta(hours=5)
    p2 = await declare_incident(
        store, severity="P2", title="遅い画面", impact=None, declared_by="U3", at=third
    )
    await resolve_incident(store, p2.id, by="U3", at=third + timedelta(hours=1))
    await declare_incident(
        store, severity="P3", title="old", impact=None, declared_by="U1", at=NOW - timedelta(days=30)
    )


async def fill_store(store: Store) -> None:
    probes = [
        ProbeRecord("/health", WEEK_AGO + timedelta(hours=h), 200 if h % 50 else 503, h % 50 != 0, 100.0 + h)
        for h in range(1, 168)
    ]
    await record_probes(store, probes)
    failed = await start_backup_record(
        store, job_id=None, kind="regular", database_name="garden_dx", file_name="a.dump", created_by="U1"
    )
    await fail_backup_record(store, failed, "disk full")
    async with store.connection() as conn:  # the catalog stamps now(); the report's week is in 2030
        await conn.execute("UPDATE backups SET started_at = %s", (NOW - timedelta(days=1),))
    await schedule_runs.record_missed(
        store,
        schedule="nightly_backup",
        fire_time=NOW - timedelta(days=2),
        claimed_by="t",
        result={"missed_fires": 2},
    )


def fields_of(reply: Reply) -> tuple[tuple[str, str], ...]:
    return next(e.pairs for e in reply.elements if isinstance(e, Fields))


def kpis(report: ReportData) -> dict[str, bool | None]:
    return {k.key: k.met for k in report.kpis}


async def test_a_week_with_no_data_says_no_data_per_kpi(tmp_path: Path, store: Store) -> None:
    async with httpx.AsyncClient() as http:
        report = await gather_report(
            "weekly", settings=settings_for(tmp_path), store=store, http=http, now=NOW
        )

    assert set(kpis(report).values()) == {None}
    assert (report.service, report.usage, report.security) == (None, None, None)
    assert report.incidents is not None and {s.count for s in report.incidents} == {0}
    assert report.backups is not None and report.backups.success_percent is None
    assert [a.key for a in report.recommendations] == ["report.advice.no_service_data"]


async def test_the_weekly_report_reads_probes_catalog_target_and_incidents(
    tmp_path: Path, store: Store, garden_url: str
) -> None:
    await fill_garden(garden_url)
    await fill_store(store)
    await fill_incidents(store)
    settings = settings_for(tmp_path, GARDEN_DATABASE_URL=garden_url)

    async with httpx.AsyncClient() as http:
        report = await gather_report("weekly", settings=settings, store=store, http=http, now=NOW)

    assert report.service_source == "probes"
    assert report.service is not None and report.service.availability_percent == pytest.approx(
        100 * 164 / 167
    )
    assert len(report.days) == 8
    assert kpis(report)["availability"] is False and kpis(report)["response_p95"] is True
    assert kpis(report)["backup_success"] is False
    assert report.backups is not None and (report.backups.attempted, report.backups.succeeded) == (1, 0)
    assert report.usage is not None
    assert (report.usage.active_users, report.usage.estimates_created, report.usage.pdfs_generated) == (
        2,
        2,
        4,
    )
    assert report.incidents is not None
    assert [
        (s.severity, s.count, s.mean_ack_minutes, s.mean_resolve_minutes, s.unresolved)
        for s in report.incidents
    ] == [
        ("P1", 2, 15.0, 24 * 60.0, 1),
        ("P2", 1, None, 60.0, 0),
        ("P3", 0, None, None, 0),
        ("P4", 0, None, None, 0),
    ]
    assert [(m.schedule, m.fires) for m in report.missed_runs] == [("nightly_backup", 2)]
    assert "report.advice.missed_runs" in [a.key for a in report.recommendations]
    shown = dict(fields_of(render_report(Translator("en"), report, TOKYO)))
    assert shown["Incidents P1"] == "2: acknowledged in 15 min, resolved in 1440 min on average; 1 unresolved"
    assert shown["Incidents P2"] == "1: acknowledged in -, resolved in 60 min on average; 0 unresolved"
    assert "Incidents P3" not in shown and shown["Missed runs of nightly_backup"] == "2"


async def test_with_prometheus_configured_the_service_part_comes_from_it(
    tmp_path: Path, store: Store
) -> None:
    await fill_store(store)
    async with prometheus_api({"avg_over_time(up": 1.0, "histogram_quantile": 0.4}) as prom:
        settings = settings_for(tmp_path, GARDEN_PROMETHEUS_URL=prom.url)
        async with httpx.AsyncClient() as http:
            report = await gather_report("weekly", settings=settings, store=store, http=http, now=NOW)

    assert report.service_source == "prometheus"
    assert report.service is not None
    assert (report.service.availability_percent, report.service.p95_ms) == (100.0, 400.0)
    assert kpis(report)["error_rate"] is None  # Prometheus had no 5xx series


async def test_the_probe_keeps_each_configured_path_in_the_history(tmp_path: Path, store: Store) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="healthy" if request.url.path == "/health" else "{}")

    settings = settings_for(tmp_path, GARDEN_API_URL="http://garden.test")
    settings = settings.model_copy(update={"probes": ["/health", "/api/estimates"]})
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        results = await take_probes(settings=settings, store=store, http=http, now=NOW)
        report = await gather_report(
            "daily", settings=settings, store=store, http=http, now=NOW + timedelta(minutes=1)
        )

    assert [r.path for r in results] == ["/health", "/api/estimates"]
    assert report.service is not None and report.service.availability_percent == 100.0


async def test_fires_missed_while_no_bot_ran_past_grace_are_said_in_the_next_weekly_report(
    tmp_path: Path, store: Store
) -> None:
    nightly = ScheduleSpec("nightly_backup", "0 2 * * *", ("backup",), "ops", timedelta(hours=3))
    ran: list[ScheduledRun] = []

    async def submit(run: ScheduledRun) -> RunOutcome:
        ran.append(run)
        return RunOutcome(status="succeeded")

    last = datetime(2030, 1, 4, 2, 0, tzinfo=TOKYO)  # then every bot stopped until NOW (8th, 09:00)
    await Scheduler(store=store, table=[nightly], submit=submit, zone=TOKYO, clock=lambda: last).fire(
        nightly, last
    )
    restarted = Scheduler(store=store, table=[nightly], submit=submit, zone=TOKYO, clock=lambda: NOW)
    [decision] = await restarted.catch_up()  # the 5th to the 8th at 02:00: all past the 3 h grace
    async with httpx.AsyncClient() as http:
        report = await gather_report(
            "weekly", settings=settings_for(tmp_path), store=store, http=http, now=NOW + timedelta(hours=1)
        )

    assert (decision.run_fire, decision.missed, len(ran)) == (None, 4, 1)
    assert [(m.schedule, m.fires) for m in report.missed_runs] == [("nightly_backup", 4)]
    [advice] = [a for a in report.recommendations if a.key == "report.advice.missed_runs"]
    assert advice.params == {"schedules": "nightly_backup"}
    shown = dict(fields_of(render_report(Translator("en"), report, TOKYO)))
    assert shown["Missed runs of nightly_backup"] == "4"
