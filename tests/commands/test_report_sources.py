"""The KPI report gathered from the bot's store and the operated system; missing sources say no data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from commands.report_sources import gather_report, take_probes
from core.config import Settings, load_settings
from runbooks.report import ReportData
from runbooks.sample_garden import create_sample_garden
from store import schedule_runs
from store.backups import fail_backup_record, start_backup_record
from store.db import Store
from store.probes import ProbeRecord, record_probes
from tests.support.prometheus_api import prometheus_api
from tests.support.servers import throwaway_database

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2030, 1, 8, 9, 0, tzinfo=TOKYO)  # a Tuesday far from the sample's own rows
WEEK_AGO = NOW - timedelta(days=7)


@dataclass(frozen=True)
class Incident:
    severity: str
    declared_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None


def settings_for(tmp_path: Path, **env: str) -> Settings:
    return load_settings(env={"GARDENBOT_STATE_DIR": str(tmp_path), **env}, config_path=tmp_path / "none.yml")


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    with throwaway_database() as url:
        store = Store(url, max_size=5)
        await store.open()
        await store.migrate()
        try:
            yield store
        finally:
            await store.close()


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


def kpis(report: ReportData) -> dict[str, bool | None]:
    return {k.key: k.met for k in report.kpis}


async def test_a_week_with_no_data_says_no_data_per_kpi(tmp_path: Path, store: Store) -> None:
    async with httpx.AsyncClient() as http:
        report = await gather_report(
            "weekly", settings=settings_for(tmp_path), store=store, http=http, now=NOW
        )

    assert set(kpis(report).values()) == {None}
    assert (report.service, report.usage, report.incidents, report.security) == (None, None, None, None)
    assert report.backups is not None and report.backups.success_percent is None
    assert [a.key for a in report.recommendations] == ["report.advice.no_service_data"]


async def test_the_weekly_report_reads_probes_catalog_target_and_incidents(
    tmp_path: Path, store: Store, garden_url: str
) -> None:
    await fill_garden(garden_url)
    await fill_store(store)
    incidents = [
        Incident("P1", NOW - timedelta(days=3), NOW - timedelta(days=3) + timedelta(minutes=10), None),
        Incident(
            "P1",
            NOW - timedelta(days=2),
            NOW - timedelta(days=2) + timedelta(minutes=20),
            NOW - timedelta(days=1),
        ),
        Incident("P3", NOW - timedelta(days=30), None, None),  # before the week
    ]
    settings = settings_for(tmp_path, GARDEN_DATABASE_URL=garden_url)

    async with httpx.AsyncClient() as http:
        report = await gather_report(
            "weekly", settings=settings, store=store, http=http, now=NOW, incidents=incidents
        )

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
    p1 = report.incidents[0]
    assert (p1.severity, p1.count, p1.mean_ack_minutes, p1.mean_resolve_minutes) == ("P1", 2, 15.0, 24 * 60.0)
    assert [(m.schedule, m.fires) for m in report.missed_runs] == [("nightly_backup", 2)]
    assert "report.advice.missed_runs" in [a.key for a in report.recommendations]


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
