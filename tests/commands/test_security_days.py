"""The reports' security part: finished days' counts kept once in the store, only today read from the logs.

Real bot store, real log files (the manual's shapes). The reference is one scan of the same
window with runbooks.security.scan_security, as the report used to do at report time.
"""

from __future__ import annotations

import asyncio
import os
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from commands.report_sources import gather_report
from commands.security_days import security_over
from core.config import Settings, load_settings
from runbooks.report import SecurityFacts
from runbooks.security import SecurityThresholds, scan_security
from store.db import Store
from tests.support.applogs import api_line, auth_line

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2030, 1, 8, 9, 0, tzinfo=TOKYO)  # Tuesday 09:00: the week from Jan 1 09:00
FIRST_DAY = datetime(2030, 1, 1, tzinfo=TOKYO)  # the security part starts at that day's midnight
TODAY = datetime(2030, 1, 8, tzinfo=TOKYO)
LOG_START = datetime(2029, 12, 30, tzinfo=TOKYO)


def burst_at(at: datetime, address: str, count: int, line: str) -> list[tuple[float, str]]:
    start = at.timestamp()
    return [(start + i * 3, line.format(address=address, at=start + i * 3)) for i in range(count)]


def auth_lines(start: datetime, end: datetime) -> list[tuple[float, str]]:
    """A login every 2 minutes, one in 10 failed from ever-changing addresses (no burst); bursts:
    8 failures from 203.0.113.9 on Jan 3, from 203.0.113.9 again on Jan 6, from 203.0.113.7 today,
    7 from 203.0.113.66 across midnight Jan 7, and 3 failures (no burst) about midnight Jan 5."""
    lines = []
    t, i = start.timestamp(), 0
    while t < end.timestamp():
        text = "authentication failed for a@example.com" if i % 10 == 0 else "login ok a@example.com"
        lines.append((t, auth_line(f"192.0.2.{i % 200}", t, text)))
        t, i = t + 120, i + 1
    failed = "{address}"  # filled below
    for at, address in (
        (datetime(2030, 1, 3, 14, 0, tzinfo=TOKYO), "203.0.113.9"),
        (datetime(2030, 1, 6, 22, 0, tzinfo=TOKYO), "203.0.113.9"),
        (datetime(2030, 1, 8, 3, 0, tzinfo=TOKYO), "203.0.113.7"),
    ):
        lines += [
            (m, auth_line(address, m, "authentication failed for x@example.com"))
            for m, _ in burst_at(at, address, 8, failed)
        ]
    straddled = datetime(2030, 1, 7, tzinfo=TOKYO).timestamp()  # 3 before midnight, 4 after: a burst
    lines += [
        (straddled + k, auth_line("203.0.113.66", straddled + k, "authentication failed for z"))
        for k in (-90, -60, -30, 0, 30, 60, 90)
    ]
    midnight = datetime(2030, 1, 5, tzinfo=TOKYO).timestamp()
    lines += [
        (midnight + s, auth_line("203.0.113.50", midnight + s, "authentication failed for y"))
        for s in (-60, 0, 60)
    ]
    return [x for x in lines if start.timestamp() <= x[0] < end.timestamp()]


def api_lines(start: datetime, end: datetime) -> list[tuple[float, str]]:
    """A request every 30 s; 150 in a minute from 198.51.100.5 on Jan 5 and from 198.51.100.6 today."""
    lines = []
    t, i = start.timestamp(), 0
    while t < end.timestamp():
        lines.append((t, api_line(f"192.0.2.{i % 50}", t, "GET /api/estimates", 200, 40)))
        t, i = t + 30, i + 1
    for at, address in (
        (datetime(2030, 1, 5, 10, 0, 5, tzinfo=TOKYO), "198.51.100.5"),
        (datetime(2030, 1, 8, 5, 0, 5, tzinfo=TOKYO), "198.51.100.6"),
    ):
        s = at.timestamp()
        lines += [
            (s + k * 0.3, api_line(address, s + k * 0.3, "GET /api/pdf/1", 200, 30)) for k in range(150)
        ]
    return [x for x in lines if start.timestamp() <= x[0] < end.timestamp()]


def write(path: Path, lines: list[tuple[float, str]]) -> None:
    path.write_text("".join(line for _, line in sorted(lines)), encoding="utf-8")


def write_logs(folder: Path, start: datetime = LOG_START, end: datetime = NOW) -> tuple[Path, Path]:
    auth, api = folder / "auth.log", folder / "api.log"
    write(auth, auth_lines(start, end))
    write(api, api_lines(start, end))
    return auth, api


def settings_with_logs(tmp_path: Path, auth: Path, api: Path) -> Settings:
    settings = load_settings(env={"GARDENBOT_STATE_DIR": str(tmp_path)}, config_path=tmp_path / "none.yml")
    return settings.model_copy(update={"logs": settings.logs.model_copy(update={"auth": auth, "api": api})})


def reference(auth: Path, api: Path) -> SecurityFacts:
    """One scan from the first day's midnight to NOW, as the report did at report time."""
    hours = round((NOW - FIRST_DAY).total_seconds() / 3600)
    report = scan_security(
        auth_log=auth, api_log=api, hours=hours, now=NOW, thresholds=SecurityThresholds(), zone=TOKYO
    )
    flagged = {b.address for b in report.failed_login_bursts} | {b.address for b in report.request_bursts}
    return SecurityFacts(report.failed_logins, tuple(sorted(flagged)), report.events)


def counts(facts: SecurityFacts | None) -> tuple[int, tuple[str, ...], int]:
    assert facts is not None
    return facts.failed_logins, facts.flagged_addresses, facts.events


def kept_rows(store: Store) -> asyncio.Future[list[tuple[date, int]]]:
    async def read() -> list[tuple[date, int]]:
        async with store.connection() as conn:
            cur = await conn.execute("SELECT day, failed_logins FROM security_days ORDER BY day")
            return [(r["day"], r["failed_logins"]) for r in await cur.fetchall()]

    return asyncio.ensure_future(read())


async def test_the_weekly_report_keeps_each_finished_day_once_and_then_reads_only_today_from_the_logs(
    tmp_path: Path, store: Store
) -> None:
    auth, api = write_logs(tmp_path)
    settings = settings_with_logs(tmp_path, auth, api)
    expected = reference(auth, api)
    assert expected.events == 5 and expected.flagged_addresses == (
        "198.51.100.5",
        "198.51.100.6",
        "203.0.113.66",
        "203.0.113.7",
        "203.0.113.9",
    )

    async with httpx.AsyncClient() as http:
        first = await gather_report("weekly", settings=settings, store=store, http=http, now=NOW)
        rows = await kept_rows(store)
        for path in (auth, api):  # the logs rotate: the new files hold only today
            os.rename(path, path.with_suffix(".log.1"))
        write(auth, auth_lines(TODAY, NOW))
        write(api, api_lines(TODAY, NOW))
        second = await gather_report("weekly", settings=settings, store=store, http=http, now=NOW)

    assert counts(first.security) == counts(expected)
    assert first.security is not None and first.security.kept_days == 0  # all read now, then kept
    assert [d for d, _ in rows] == [date(2030, 1, d) for d in range(1, 8)]  # today is not finished
    assert counts(second.security) == counts(expected)  # the kept days, not the rotated-away logs
    assert second.security is not None and second.security.kept_days == 7
    assert second.security.since == FIRST_DAY and second.security.incomplete_days == ()
    assert await kept_rows(store) == rows


async def test_two_reports_at_once_keep_each_day_once_and_agree(tmp_path: Path, store: Store) -> None:
    auth, api = write_logs(tmp_path)
    settings = settings_with_logs(tmp_path, auth, api)

    one, two = await asyncio.gather(
        security_over(settings, store, since=NOW - timedelta(days=7), until=NOW),
        security_over(settings, store, since=NOW - timedelta(days=7), until=NOW),
    )
    again = await security_over(settings, store, since=NOW - timedelta(days=7), until=NOW)

    assert counts(one) == counts(two) == counts(again) == counts(reference(auth, api))
    assert len(await kept_rows(store)) == 7


async def test_days_a_rotated_in_log_does_not_hold_in_full_are_read_but_not_kept(
    tmp_path: Path, store: Store
) -> None:
    auth, api = write_logs(tmp_path, start=datetime(2030, 1, 4, 12, 0, tzinfo=TOKYO))
    settings = settings_with_logs(tmp_path, auth, api)

    facts = await security_over(settings, store, since=NOW - timedelta(days=7), until=NOW)

    assert facts is not None
    assert facts.incomplete_days == tuple(date(2030, 1, d) for d in range(1, 5))
    assert [d for d, _ in await kept_rows(store)] == [date(2030, 1, d) for d in range(5, 8)]
    assert counts(facts) == counts(reference(auth, api))  # what the files still hold, counted once


async def test_a_line_at_midnight_counts_on_the_day_it_starts_and_no_line_counts_on_two_days(
    tmp_path: Path, store: Store
) -> None:
    auth, api = write_logs(tmp_path)
    settings = settings_with_logs(tmp_path, auth, api)

    await security_over(settings, store, since=NOW - timedelta(days=7), until=NOW)

    rows = dict(await kept_rows(store))
    just_before = TODAY - timedelta(microseconds=1)  # the scanner's window includes its end
    whole = scan_security(auth_log=auth, api_log=None, hours=7 * 24, now=just_before, zone=TOKYO)
    assert sum(rows.values()) == whole.failed_logins
    # beside the same background: the 3rd its burst of 8, the 4th one at 23:59, the 5th two (00:00, 00:01)
    assert (rows[date(2030, 1, 3)] - 8, rows[date(2030, 1, 4)] - 1) == (rows[date(2030, 1, 5)] - 2,) * 2
