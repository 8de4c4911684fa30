"""The reports' security part from each finished day's counts, kept in the store, plus today so far.

A report's security window runs from the start of the day its window starts in (a weekly report at
Monday 09:00: the seven days from last Monday 00:00, then today until 09:00). Finished days are read
from `security_days` (kept by the nightly `security keep`, or by the first report that needed them)
and only what is not kept is read from the logs: normally just today so far. A finished day is kept
only when every log read still held all of it (a log rotated in after the day began does not) and
only once it ended at least KEEP_AFTER ago, so late lines are in.

`security keep` (the nightly schedule's last step) keeps the finished days of the past week.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from commands.base import Context, NoArgs, Role
from commands.command import Command
from core.config import Logs, Settings
from core.reply import Reply, Text
from runbooks import report as reports
from runbooks.security import SecurityThresholds
from runbooks.security_days import SpanCounts, count_span, day_span
from store.db import Store
from store.security_days import SecurityDay, keep_days, kept_days

KEEP_AFTER = timedelta(minutes=5)  # a day is kept this long after its end, when late lines are in
KEEP_DAYS = 7  # what `security keep` looks back over


def thresholds(logs: Logs) -> SecurityThresholds:
    return SecurityThresholds(
        failed_logins=logs.failed_logins_max,
        failed_login_window=timedelta(minutes=logs.failed_logins_minutes),
        requests_per_minute=logs.requests_per_minute_max,
    )


def setup_key(logs: Logs) -> str:
    """What the counts depend on besides the day: change it and days are counted anew."""
    return (
        f"auth={logs.auth or '-'} api={logs.api or '-'} failed>{logs.failed_logins_max}"
        f"/{logs.failed_logins_minutes}min requests>{logs.requests_per_minute_max}/min"
    )


def _day_starts(first: datetime, stop: datetime, settings: Settings) -> list[datetime]:
    days = []
    while first < stop:
        days.append(first)
        first = day_span(first + timedelta(hours=12), settings.zone)[1]
    return days


def _as_day(counts: SpanCounts, settings: Settings) -> SecurityDay:
    return SecurityDay(
        day=counts.start.astimezone(settings.zone).date(),
        failed_logins=counts.failed_logins,
        burst_addresses=counts.burst_addresses,
        request_bursts=counts.request_bursts,
        request_addresses=counts.request_addresses,
        sources=tuple(log.as_json() for log in counts.logs),
    )


def _count(settings: Settings, spans: list[tuple[datetime, datetime]]) -> list[SpanCounts]:
    logs = settings.logs
    return [
        count_span(
            auth_log=logs.auth,
            api_log=logs.api,
            start=start,
            end=end,
            thresholds=thresholds(logs),
            zone=settings.zone,
        )
        for start, end in spans
    ]


@dataclass(frozen=True)
class Days:
    """Finished days of a window: the kept ones, and the ones read now (kept if they could be)."""

    kept: dict[date, SecurityDay]
    read: list[SpanCounts]
    newly_kept: int


async def _finished_days(
    settings: Settings, store: Store, *, first: datetime, today: datetime, now: datetime, by: str
) -> Days:
    days = _day_starts(first, today, settings)
    if not days:
        return Days({}, [], 0)
    zone, setup = settings.timezone, setup_key(settings.logs)
    last = days[-1].date()
    kept = await kept_days(store, zone=zone, setup=setup, first=days[0].date(), last=last)
    missing = [(d, day_span(d, settings.zone)[1]) for d in days if d.date() not in kept]
    read = await asyncio.to_thread(_count, settings, missing)
    keepable = [_as_day(c, settings) for c in read if c.complete and c.end + KEEP_AFTER <= now]
    newly = await keep_days(store, keepable, zone=zone, setup=setup, at=datetime.now(UTC), by=by)
    return Days(kept, read, newly)


async def security_over(
    settings: Settings, store: Store, *, since: datetime, until: datetime, by: str = "report"
) -> reports.SecurityFacts | None:
    """The security facts from the start of `since`'s day to `until`; None when no log is configured."""
    logs = settings.logs
    if logs.auth is None and logs.api is None:
        return None
    first, today = day_span(since, settings.zone)[0], day_span(until, settings.zone)[0]
    days = await _finished_days(settings, store, first=first, today=today, now=until, by=by)
    partial = await asyncio.to_thread(_count, settings, [(today, until)]) if until > today else []
    rows = [*days.kept.values(), *(_as_day(c, settings) for c in [*days.read, *partial])]
    bursts = {a for r in rows for a in r.burst_addresses}
    flagged = bursts | {a for r in rows for a in r.request_addresses}
    return reports.SecurityFacts(
        failed_logins=sum(r.failed_logins for r in rows),
        flagged_addresses=tuple(sorted(flagged)),
        events=len(bursts) + sum(r.request_bursts for r in rows),
        since=first,
        kept_days=len(days.kept),  # read from the store; the ones read now and kept are not counted
        incomplete_days=tuple(sorted(_as_day(c, settings).day for c in days.read if not c.complete)),
    )


async def keep_security_days(ctx: Context, args: NoArgs) -> Reply:
    settings = ctx.services.settings
    if settings.logs.auth is None and settings.logs.api is None:  # not a failed nightly run
        text = ctx.t("security.nothing_to_keep", keys="logs.auth, logs.api")
        return Reply(status="succeeded", summary=text, elements=(Text(text),))
    now = datetime.now(UTC)
    today = day_span(now, settings.zone)[0]
    first = day_span(today - timedelta(days=KEEP_DAYS) + timedelta(hours=12), settings.zone)[0]
    days = await _finished_days(settings, ctx.services.store, first=first, today=today, now=now, by="nightly")
    incomplete = sorted(_as_day(c, settings).day.isoformat() for c in days.read if not c.complete)
    text = ctx.t(
        "security.kept",
        kept=days.newly_kept,
        already=len(days.kept),
        incomplete=", ".join(incomplete) or "-",
    )
    return Reply(status="succeeded", summary=text, elements=(Text(text),))


COMMANDS = (Command(name="security keep", role=Role.OPERATOR, run=keep_security_days, mutates=True),)
