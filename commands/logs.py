"""`security [hours]` and `logs [hours]`: the app's logs over a window, scanned off the event loop.

Both read files only (the `logs` section of the configuration): they answer while the bot's store
is down. A KPI missed (a security event, a 5xx rate over the target) makes the reply "failed", so
`gardenbot run security` exits 1 when there is something to look at.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import Field

from commands.base import Args, Context, Role
from commands.command import Command
from core.errors import RunbookFailed
from core.formatting import format_time
from core.i18n import Translator
from core.reply import Element, Fields, Header, Note, Reply, Table, Text
from runbooks.log_report import LogSummary, summarize_logs
from runbooks.logscan import ScanStats, check_hours
from runbooks.security import SecurityReport, SecurityThresholds, scan_security


class HoursArgs(Args):
    hours: int = Field(default=24, title="hours")


async def show_security(ctx: Context, args: HoursArgs) -> Reply:
    s = ctx.services.settings
    check_hours(args.hours)
    if s.logs.auth is None and s.logs.api is None:
        raise RunbookFailed("logs.not_configured", keys="logs.auth, logs.api")
    limits = SecurityThresholds(
        failed_logins=s.logs.failed_logins_max,
        failed_login_window=timedelta(minutes=s.logs.failed_logins_minutes),
        requests_per_minute=s.logs.requests_per_minute_max,
    )
    report = await asyncio.to_thread(
        lambda: scan_security(
            auth_log=s.logs.auth, api_log=s.logs.api, hours=args.hours, thresholds=limits, zone=s.zone
        )
    )
    return render_security(ctx, report)


def render_security(ctx: Context, report: SecurityReport) -> Reply:
    t, zone = ctx.t, ctx.services.settings.zone
    limits = report.thresholds
    summary = t("security.summary", events=report.events, hours=report.hours, failed=report.failed_logins)
    elements: list[Element] = [Header(t("security.header", hours=report.hours)), Text(summary)]
    rows: tuple[tuple[str, ...], ...]
    columns: tuple[str, ...]
    if report.failed_login_bursts:
        rows = tuple(
            (b.address, str(b.failures), format_time(b.first_at, zone), format_time(b.last_at, zone))
            for b in report.failed_login_bursts
        )
        columns = (t("security.address"), t("security.failures"), t("security.from"), t("security.to"))
        elements += [Text(t("security.login_bursts", limit=limits.failed_logins, minutes=_minutes(report)))]
        elements.append(Table(columns=columns, rows=rows))
    if report.request_bursts:
        rows = tuple((b.address, format_time(b.minute, zone), str(b.requests)) for b in report.request_bursts)
        columns = (t("security.address"), t("security.minute"), t("security.requests"))
        elements += [Text(t("security.request_bursts", limit=limits.requests_per_minute))]
        elements.append(Table(columns=columns, rows=rows))
    if report.failed_by_address:
        rows = tuple((address, str(n)) for address, n in report.failed_by_address)
        elements.append(Table(columns=(t("security.address"), t("security.failures")), rows=rows))
    elements += [Note(_sources(t, report.sources))]
    return Reply(status="failed" if report.events else "succeeded", summary=summary, elements=tuple(elements))


def _minutes(report: SecurityReport) -> int:
    return int(report.thresholds.failed_login_window.total_seconds() // 60)


def _sources(t: Translator, sources: tuple[ScanStats, ...]) -> str:
    return " · ".join(t("logs.source", path=s.path, lines=s.lines, skipped=s.skipped) for s in sources)


async def show_logs(ctx: Context, args: HoursArgs) -> Reply:
    s = ctx.services.settings
    check_hours(args.hours)
    if s.logs.error is None and s.logs.api is None:
        raise RunbookFailed("logs.not_configured", keys="logs.error, logs.api")
    target = s.logs.error_rate_target_percent / 100
    summary = await asyncio.to_thread(
        lambda: summarize_logs(
            error_log=s.logs.error,
            api_log=s.logs.api,
            hours=args.hours,
            error_rate_target=target,
            zone=s.zone,
        )
    )
    return render_logs(ctx, summary)


def render_logs(ctx: Context, report: LogSummary) -> Reply:
    t = ctx.t
    rate = report.error_rate
    shown_rate = "-" if rate is None else f"{rate * 100:.3f}%"
    target = f"{report.error_rate_target * 100:g}%"
    summary = t(
        "logs.summary",
        hours=report.hours,
        errors=report.errors,
        criticals=report.criticals,
        requests=report.requests,
        rate=shown_rate,
    )
    fields = (
        (t("logs.errors"), str(report.errors)),
        (t("logs.criticals"), str(report.criticals)),
        (t("logs.requests"), str(report.requests)),
        (t("logs.average_ms"), "-" if report.average_ms is None else f"{report.average_ms:.0f} ms"),
        (t("logs.p95_ms"), "-" if report.p95_ms is None else f"{report.p95_ms} ms"),
        (t("logs.server_errors"), str(report.server_errors)),
        (t("logs.error_rate"), t("logs.rate_vs_target", rate=shown_rate, target=target)),
    )
    elements: list[Element] = [Header(t("logs.header", hours=report.hours)), Text(summary), Fields(fields)]
    rows: tuple[tuple[str, ...], ...]
    if report.top_messages:
        rows = tuple((m.level, str(m.count), m.message) for m in report.top_messages)
        elements.append(Table(columns=(t("logs.level"), t("logs.count"), t("logs.message")), rows=rows))
    if report.top_endpoints:
        rows = tuple((endpoint, str(n)) for endpoint, n in report.top_endpoints)
        elements.append(Table(columns=(t("logs.endpoint"), t("logs.count")), rows=rows))
    elements.append(Note(_sources(t, report.sources)))
    missed = report.meets_error_rate_target is False
    return Reply(status="failed" if missed else "succeeded", summary=summary, elements=tuple(elements))


COMMANDS = (
    Command(name="security", role=Role.OPERATOR, args=HoursArgs, run=show_security),
    Command(name="logs", role=Role.OPERATOR, args=HoursArgs, run=show_logs),
)
