"""Report windows, backup success from the catalog's statuses, incidents by severity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from runbooks.kpi import KpiTargets
from runbooks.report import ReportInputs, backup_facts, build_report, report_window

TOKYO = ZoneInfo("Asia/Tokyo")


@dataclass(frozen=True)
class Backup:
    kind: str
    status: str
    started_at: datetime


def test_the_monthly_report_covers_the_previous_calendar_month_in_the_zone() -> None:
    first = datetime(2026, 12, 1, 9, 0, tzinfo=TOKYO)
    assert report_window("monthly", first, TOKYO) == (
        datetime(2026, 11, 1, tzinfo=TOKYO),
        datetime(2026, 12, 1, tzinfo=TOKYO),
    )
    january = datetime(2027, 1, 1, 9, 0, tzinfo=TOKYO)
    assert report_window("monthly", january, TOKYO)[0] == datetime(2026, 12, 1, tzinfo=TOKYO)
    assert report_window("weekly", first, TOKYO) == (first - timedelta(days=7), first)


def test_backup_success_counts_ended_regular_backups_in_the_window() -> None:
    until = datetime(2026, 11, 30, tzinfo=TOKYO)
    since = until - timedelta(days=7)
    day = timedelta(days=1)
    backups = [
        Backup("regular", "good", until - day),
        Backup("regular", "pruned", until - 2 * day),  # was good, aged out
        Backup("regular", "failed", until - 3 * day),
        Backup("regular", "interrupted", until - 4 * day),
        Backup("regular", "running", until - 0.1 * day),  # not judged yet
        Backup("safety", "failed", until - day),  # a restore's safety copy is not the nightly KPI
        Backup("regular", "failed", since - day),  # before the week
    ]
    facts = backup_facts(backups, since=since, until=until)
    assert (facts.attempted, facts.succeeded, facts.success_percent) == (4, 2, 50.0)


def test_a_report_over_nothing_says_no_data_everywhere() -> None:
    until = datetime(2026, 11, 30, tzinfo=TOKYO)
    report = build_report(
        "weekly", since=until - timedelta(days=7), until=until, inputs=ReportInputs(), targets=KpiTargets()
    )
    assert [k.met for k in report.kpis] == [None] * 6
    assert (report.service_source, report.days, report.incidents, report.usage) == (None, (), None, None)
