"""Gather what a KPI report reads, from the bot's store and the operated system.

The `report` and `probe` commands call these; each source that cannot be read (no Prometheus
configured, the target database down, no logs) leaves its part of the report at "no data"
instead of failing the whole report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import TypeVar

import httpx
import psycopg

from commands.security_days import security_over
from core.config import Settings
from core.errors import GardenBotError
from runbooks import probes as probe_runbook
from runbooks import report as reports
from runbooks.kpi import KpiTargets
from store import incident_stats, schedule_runs
from store import probes as probe_store
from store.backups import list_backups
from store.db import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
TARGET_CONNECT_TIMEOUT_S = 5


def kpi_targets(settings: Settings) -> KpiTargets:
    return KpiTargets(
        response_ms=float(settings.thresholds.api_ms),
        error_percent=settings.logs.error_rate_target_percent,
    )


async def _optional(what: str, work: Awaitable[T]) -> T | None:
    try:
        return await work
    except (GardenBotError, psycopg.Error, httpx.HTTPError, OSError) as exc:
        log.warning("report: %s unavailable (%s)", what, type(exc).__name__)
        return None


async def _service(
    settings: Settings, store: Store, http: httpx.AsyncClient, since: datetime, until: datetime
) -> reports.ServiceFacts | None:
    url = settings.target.prometheus_url
    if url:
        return await reports.service_from_prometheus(http, url, since=since, until=until, zone=settings.zone)
    window = await probe_store.window_stats(store, since=since, until=until)
    days = await probe_store.daily_stats(store, since=since, until=until, zone=settings.timezone)
    return reports.service_from_probes(window, days)


async def _usage(settings: Settings, since: datetime, until: datetime) -> reports.UsageFacts | None:
    target = settings.target.monitor_database_url or settings.target.database_url
    if target is None:
        return None
    async with await psycopg.AsyncConnection.connect(
        target.get_secret_value(), connect_timeout=TARGET_CONNECT_TIMEOUT_S, autocommit=True
    ) as conn:
        return await reports.usage_facts(conn, since=since, until=until)


async def _security(
    settings: Settings, store: Store, since: datetime, until: datetime
) -> reports.SecurityFacts | None:
    """Kept day counts plus what is not kept yet (runbooks read the logs only for that)."""
    return await security_over(settings, store, since=since, until=until)


async def _backups(store: Store, since: datetime, until: datetime) -> reports.BackupFacts:
    records = await list_backups(store, limit=None)
    return reports.backup_facts(records, since=since, until=until)


async def _incidents(store: Store, since: datetime, until: datetime) -> tuple[reports.SeverityFacts, ...]:
    counts = await incident_stats.incidents_by_severity(store, since=since, until=until)
    return reports.incident_facts(counts)


async def _missed(store: Store, since: datetime, until: datetime) -> tuple[reports.MissedRun, ...]:
    rows = await schedule_runs.runs_between(store, since=since, until=until, statuses=["missed"])
    return reports.missed_runs(rows)


async def gather_report(
    period: reports.Period,
    *,
    settings: Settings,
    store: Store,
    http: httpx.AsyncClient,
    now: datetime,
) -> reports.ReportData:
    """The report over the period ending `now`."""
    since, until = reports.report_window(period, now, settings.zone)
    service, backups, security, usage, incidents, missed = await asyncio.gather(
        _optional("service", _service(settings, store, http, since, until)),
        _optional("backups", _backups(store, since, until)),
        _optional("security", _security(settings, store, since, until)),
        _optional("usage", _usage(settings, since, until)),
        _optional("incidents", _incidents(store, since, until)),
        _optional("missed runs", _missed(store, since, until)),
    )
    inputs = reports.ReportInputs(
        service=service,
        backups=backups,
        security=security,
        usage=usage,
        incidents=incidents,
        missed_runs=missed or (),
    )
    return reports.build_report(
        period, since=since, until=until, inputs=inputs, targets=kpi_targets(settings)
    )


async def take_probes(
    *, settings: Settings, store: Store, http: httpx.AsyncClient, now: datetime
) -> list[probe_runbook.ProbeResult]:
    """The minute probe: every configured path under the API, kept in the probe history."""
    api_url = settings.target.api_url
    if not api_url:
        return []
    results = await probe_runbook.probe_paths(
        http, api_url, settings.probes, timeout=settings.health.timeout_seconds, now=now
    )
    await probe_store.record_probes(
        store,
        [
            probe_store.ProbeRecord(r.path, r.probed_at, r.status_code, r.healthy, r.latency_ms, r.error)
            for r in results
        ],
    )
    return results
