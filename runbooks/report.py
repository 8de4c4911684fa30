"""`report daily|weekly|monthly`: the KPI report over a window, renderer-neutral.

Facts come from several places and each may be missing (a KPI then says "no data"): the API's
availability, latency and 5xx ratio from Prometheus when it is configured, otherwise from the bot's
minute probes; backup success from the catalog; failed logins and flagged addresses from the app's
logs (counts kept per day: commands/security_days.py); active users, estimates and PDFs from the
target database (the manual's report queries); incidents by severity from the incident records.
The command turns the result into a Reply; the chart (runbooks.chart) draws `ReportData.days`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

import httpx
import psycopg
from psycopg.rows import tuple_row

from runbooks import prometheus
from runbooks.kpi import Kpi, KpiTargets, Measured, Recommendation, judge_kpis, recommend

Period = Literal["daily", "weekly", "monthly"]
ServiceSource = Literal["prometheus", "probes"]
SEVERITIES = ("P1", "P2", "P3", "P4")
FAILED_BACKUP_STATUSES = ("failed", "interrupted")
SUCCEEDED_BACKUP_STATUSES = ("good", "pruned")  # pruned: was good, then aged out

# The manual's report queries, over [since, until).
ACTIVE_USERS_SQL = (
    "SELECT count(DISTINCT user_id) FROM user_activity_logs"
    " WHERE user_id IS NOT NULL AND action = 'login' AND created_at >= %s AND created_at < %s"
)
ESTIMATES_SQL = "SELECT count(*) FROM estimates WHERE created_at >= %s AND created_at < %s"
PDFS_SQL = (
    "SELECT count(*) FROM user_activity_logs"
    " WHERE action = 'pdf_export' AND created_at >= %s AND created_at < %s"
)


# What the report reads; the bot's store records have these (store.probes, store.backups, …).
class ProbeStatsLike(Protocol):
    @property
    def availability_percent(self) -> float | None: ...
    @property
    def error_percent(self) -> float | None: ...
    @property
    def avg_ms(self) -> float | None: ...
    @property
    def p95_ms(self) -> float | None: ...


class DailyProbeStatsLike(Protocol):
    @property
    def day(self) -> date: ...
    @property
    def stats(self) -> ProbeStatsLike: ...


class BackupLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...


class SeverityCountsLike(Protocol):
    """Incidents of one severity over the window, as store.incident_stats counts them."""

    @property
    def severity(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def mean_ack_minutes(self) -> float | None: ...
    @property
    def mean_resolve_minutes(self) -> float | None: ...
    @property
    def unresolved(self) -> int: ...


class MissedRunLike(Protocol):
    @property
    def schedule(self) -> str: ...
    @property
    def fire_time(self) -> datetime: ...
    @property
    def result(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DailyPoint:
    day: date
    availability_percent: float | None
    avg_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class ServiceFacts:
    source: ServiceSource
    availability_percent: float | None
    avg_ms: float | None
    p95_ms: float | None
    error_percent: float | None
    days: tuple[DailyPoint, ...]


@dataclass(frozen=True)
class BackupFacts:
    attempted: int  # regular backups started in the window that have ended
    succeeded: int

    @property
    def success_percent(self) -> float | None:
        return 100.0 * self.succeeded / self.attempted if self.attempted else None


@dataclass(frozen=True)
class SecurityFacts:
    failed_logins: int
    flagged_addresses: tuple[str, ...]  # addresses with a failed-login or request burst
    events: int
    since: datetime | None = None  # where the counts start (the report's first day, from midnight)
    kept_days: int = 0  # finished days summed from the store's kept counts, not read from the logs
    incomplete_days: tuple[date, ...] = ()  # days the logs no longer hold in full (rotated)


@dataclass(frozen=True)
class UsageFacts:
    active_users: int
    estimates_created: int
    pdfs_generated: int


@dataclass(frozen=True)
class SeverityFacts:
    severity: str
    count: int
    mean_ack_minutes: float | None
    mean_resolve_minutes: float | None
    unresolved: int = 0


@dataclass(frozen=True)
class MissedRun:
    schedule: str
    fire_time: datetime
    fires: int  # how many fires that row stands for


@dataclass(frozen=True)
class ReportData:
    period: Period
    since: datetime
    until: datetime
    service: ServiceFacts | None
    kpis: tuple[Kpi, ...]
    backups: BackupFacts | None
    security: SecurityFacts | None
    usage: UsageFacts | None
    incidents: tuple[SeverityFacts, ...] | None
    missed_runs: tuple[MissedRun, ...]
    recommendations: tuple[Recommendation, ...]

    @property
    def service_source(self) -> ServiceSource | None:
        return self.service.source if self.service is not None else None

    @property
    def days(self) -> tuple[DailyPoint, ...]:
        return self.service.days if self.service is not None else ()


def report_window(period: Period, until: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """daily: the last 24 h; weekly: the last 7 days; monthly: the calendar month before `until`'s."""
    if period == "daily":
        return until - timedelta(days=1), until
    if period == "weekly":
        return until - timedelta(days=7), until
    local = until.astimezone(zone)
    end = datetime(local.year, local.month, 1, tzinfo=zone)
    start = datetime(end.year - 1, 12, 1, tzinfo=zone) if end.month == 1 else end.replace(month=end.month - 1)
    return start, end


def service_from_probes(window: ProbeStatsLike, days: Sequence[DailyProbeStatsLike]) -> ServiceFacts | None:
    """None when there was no probe at all in the window."""
    if window.availability_percent is None:
        return None
    points = tuple(
        DailyPoint(d.day, d.stats.availability_percent, d.stats.avg_ms, d.stats.p95_ms) for d in days
    )
    return ServiceFacts(
        "probes", window.availability_percent, window.avg_ms, window.p95_ms, window.error_percent, points
    )


async def service_from_prometheus(
    http: httpx.AsyncClient, base_url: str, *, since: datetime, until: datetime, zone: ZoneInfo
) -> ServiceFacts:
    whole = await prometheus.api_window(http, base_url, since=since, until=until)
    days = await prometheus.api_days(http, base_url, since=since, until=until, zone=zone)
    points = tuple(DailyPoint(d, w.availability_percent, w.avg_ms, w.p95_ms) for d, w in days)
    return ServiceFacts(
        "prometheus", whole.availability_percent, whole.avg_ms, whole.p95_ms, whole.error_percent, points
    )


def backup_facts(backups: Sequence[BackupLike], *, since: datetime, until: datetime) -> BackupFacts:
    """Regular backups started in the window and ended (running ones are not judged yet)."""
    ended = [
        b
        for b in backups
        if b.kind == "regular"
        and since <= b.started_at < until
        and b.status in (*SUCCEEDED_BACKUP_STATUSES, *FAILED_BACKUP_STATUSES)
    ]
    return BackupFacts(len(ended), sum(1 for b in ended if b.status in SUCCEEDED_BACKUP_STATUSES))


async def usage_facts(conn: psycopg.AsyncConnection[Any], *, since: datetime, until: datetime) -> UsageFacts:
    """Active users (logged in), estimates created, PDFs generated, from the target database."""
    counts = []
    async with conn.cursor(row_factory=tuple_row) as cur:
        for query in (ACTIVE_USERS_SQL, ESTIMATES_SQL, PDFS_SQL):
            await cur.execute(query, (since, until))
            row = await cur.fetchone()
            counts.append(int(row[0]) if row else 0)
    return UsageFacts(*counts)


def incident_facts(counts: Sequence[SeverityCountsLike]) -> tuple[SeverityFacts, ...]:
    """Every severity, most severe first; one without incidents in the window counts 0."""
    found = {c.severity: c for c in counts}
    facts = []
    for severity in SEVERITIES:
        c = found.get(severity)
        facts.append(
            SeverityFacts(severity, c.count, c.mean_ack_minutes, c.mean_resolve_minutes, c.unresolved)
            if c is not None
            else SeverityFacts(severity, 0, None, None)
        )
    return tuple(facts)


def missed_runs(records: Sequence[MissedRunLike]) -> tuple[MissedRun, ...]:
    return tuple(
        MissedRun(r.schedule, r.fire_time, int(r.result.get("missed_fires", 1) or 1)) for r in records
    )


@dataclass(frozen=True)
class ReportInputs:
    """Everything gathered for one report; None where that source was not available."""

    service: ServiceFacts | None = None
    backups: BackupFacts | None = None
    security: SecurityFacts | None = None
    usage: UsageFacts | None = None
    incidents: tuple[SeverityFacts, ...] | None = None
    missed_runs: tuple[MissedRun, ...] = ()


def build_report(
    period: Period, *, since: datetime, until: datetime, inputs: ReportInputs, targets: KpiTargets
) -> ReportData:
    s = inputs.service
    measured = Measured(
        availability_percent=s.availability_percent if s else None,
        avg_ms=s.avg_ms if s else None,
        p95_ms=s.p95_ms if s else None,
        error_percent=s.error_percent if s else None,
        backup_success_percent=inputs.backups.success_percent if inputs.backups else None,
        security_events=inputs.security.events if inputs.security else None,
    )
    kpis = judge_kpis(measured, targets)
    advice = recommend(
        kpis,
        flagged_addresses=inputs.security.flagged_addresses if inputs.security else (),
        missed_schedules=sorted({m.schedule for m in inputs.missed_runs}),
    )
    return ReportData(
        period=period,
        since=since,
        until=until,
        service=s,
        kpis=kpis,
        backups=inputs.backups,
        security=inputs.security,
        usage=inputs.usage,
        incidents=inputs.incidents,
        missed_runs=inputs.missed_runs,
        recommendations=advice,
    )
