"""`report daily|weekly|monthly`: the KPI report over a window, now, with the weekly chart attached.

The monthly report also carries the manual's monthly chores where hosts are configured
(commands/chores.py): security updates waiting, disk usage per mount, backups past retention.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field

from commands.base import Args, Context, Role
from commands.chores import chores_elements, gather_chores
from commands.command import Command
from commands.report_sources import gather_report
from core.formatting import format_time
from core.i18n import Translator
from core.reply import Attachment, Element, Fields, Header, Level, Note, Reply, Table, Text
from runbooks.chart import ChartLabels, render_chart
from runbooks.kpi import Kpi
from runbooks.report import ReportData, SeverityFacts

CHARTED: tuple[str, ...] = ("weekly", "monthly")  # a daily chart would be a single point


class PeriodArgs(Args):
    period: Literal["daily", "weekly", "monthly"] = Field(title="daily|weekly|monthly")


async def run_report(ctx: Context, args: PeriodArgs) -> Reply:
    svc = ctx.services
    now = datetime.now(UTC)
    data = await gather_report(args.period, settings=svc.settings, store=svc.store, http=svc.http, now=now)
    reply = render_report(ctx.t, data, svc.settings.zone)
    # The chores are as of now, not as of the month's end the KPIs cover.
    chores = await gather_chores(svc, now=now) if args.period == "monthly" else None
    if chores is not None:
        reply = replace(reply, elements=(*reply.elements, *chores_elements(ctx.t, chores)))
    if args.period in CHARTED and data.days:
        labels = chart_labels(ctx.t)
        png = render_chart(data.days, labels=labels, response_target_ms=svc.settings.thresholds.api_ms)
        title = ctx.t("report.chart_title", period=ctx.t(f"report.period.{args.period}"))
        reply = replace(reply, attachment=Attachment(f"report-{args.period}.png", png, title))
    return reply


def chart_labels(t: Translator) -> ChartLabels:
    return ChartLabels(
        title=t("report.chart.title"),
        response=t("report.chart.response"),
        availability=t("report.chart.availability"),
        average=t("report.chart.average"),
        p95=t("report.chart.p95"),
    )


def render_report(t: Translator, data: ReportData, zone: ZoneInfo) -> Reply:
    period = t(f"report.period.{data.period}")
    since, until = format_time(data.since, zone), format_time(data.until, zone)
    missed = [k for k in data.kpis if k.met is False]
    summary = t("report.summary", period=period, since=since, until=until, missed=len(missed))
    elements: list[Element] = [Header(t("report.header", period=period)), Text(summary)]
    elements.append(_kpi_table(t, data.kpis))
    elements += _facts(t, data)
    elements.append(Text("\n".join(f"• {t(a.key, **_rounded(a.params))}" for a in data.recommendations)))
    if data.service_source is not None:
        elements.append(Note(t(f"report.source.{data.service_source}")))
    elements += _security_notes(t, data, zone)
    return Reply(status="succeeded", summary=summary, elements=tuple(elements))


def _kpi_table(t: Translator, kpis: tuple[Kpi, ...]) -> Table:
    rows, levels = [], []
    for kpi in kpis:
        state = {True: t("report.met"), False: t("report.missed"), None: t("report.no_data")}[kpi.met]
        rows.append((t(f"report.kpi.{kpi.key}"), _value(kpi, kpi.value), _target(kpi), state))
        level: Level = {True: "ok", False: "fail", None: "info"}[kpi.met]  # type: ignore[assignment]
        levels.append(level)
    columns = (t("report.col.kpi"), t("report.col.value"), t("report.col.target"), t("report.col.status"))
    return Table(columns=columns, rows=tuple(rows), levels=tuple(levels))


def _value(kpi: Kpi, value: float | None) -> str:
    if value is None:
        return "-"
    if kpi.unit == "percent":
        return f"{value:.2f} %"
    if kpi.unit == "ms":
        return f"{value:.0f} ms"
    return f"{value:.0f}"


def _target(kpi: Kpi) -> str:
    sign = {"at_least": "≥", "below": "<", "at_most": "≤"}[kpi.comparison]
    return f"{sign} {_value(kpi, kpi.target)}"


def _facts(t: Translator, data: ReportData) -> list[Element]:
    pairs: list[tuple[str, str]] = []
    if data.backups is not None:
        pairs.append((t("report.fact.backups"), f"{data.backups.succeeded}/{data.backups.attempted}"))
    if data.usage is not None:
        pairs.append((t("report.fact.active_users"), str(data.usage.active_users)))
        pairs.append((t("report.fact.estimates"), str(data.usage.estimates_created)))
        pairs.append((t("report.fact.pdfs"), str(data.usage.pdfs_generated)))
    if data.security is not None:
        pairs.append((t("report.fact.failed_logins"), str(data.security.failed_logins)))
    if data.incidents is not None:
        pairs += _incidents(t, data.incidents)
    for missed in data.missed_runs:
        pairs.append((t("report.fact.missed_run", schedule=missed.schedule), str(missed.fires)))
    return [Fields(tuple(pairs))] if pairs else []


def _security_notes(t: Translator, data: ReportData, zone: ZoneInfo) -> list[Element]:
    s = data.security
    if s is None or s.since is None:
        return []
    notes: list[Element] = [
        Note(t("report.security_window", since=format_time(s.since, zone), kept=s.kept_days))
    ]
    if s.incomplete_days:
        days = ", ".join(d.isoformat() for d in s.incomplete_days)
        notes.append(Note(t("report.security_incomplete", days=days)))
    return notes


def _incidents(t: Translator, incidents: tuple[SeverityFacts, ...]) -> list[tuple[str, str]]:
    """One line per severity that had incidents; a single 0 when none had."""
    seen = [s for s in incidents if s.count]
    if not seen:
        return [(t("report.fact.incidents"), "0")]
    return [
        (
            t("report.fact.incidents_of", severity=s.severity),
            t(
                "report.fact.incident_times",
                count=s.count,
                ack=_minutes(t, s.mean_ack_minutes),
                resolve=_minutes(t, s.mean_resolve_minutes),
                unresolved=s.unresolved,
            ),
        )
        for s in seen
    ]


def _minutes(t: Translator, minutes: float | None) -> str:
    return "-" if minutes is None else t("report.minutes", minutes=round(minutes))


def _rounded(params: dict[str, object]) -> dict[str, object]:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in params.items()}


COMMANDS = (Command(name="report", role=Role.OPERATOR, args=PeriodArgs, run=run_report),)
