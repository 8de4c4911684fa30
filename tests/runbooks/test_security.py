"""`security`: failed-login bursts in any 5 minutes, request bursts per minute, by each line's own time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runbooks import logscan
from runbooks.security import SecurityThresholds, scan_security
from tests.support.applogs import api_line, auth_line

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
T = NOW.timestamp()


def write(path: Path, lines: list[tuple[float, str]]) -> Path:
    path.write_text("".join(line for _, line in sorted(lines)), encoding="utf-8")
    return path


def failures(address: str, times: list[float]) -> list[tuple[float, str]]:
    return [(t, auth_line(address, t, "authentication failed for admin@example.com")) for t in times]


def test_more_than_five_failures_in_any_five_minutes_is_a_burst(tmp_path: Path) -> None:
    base = T - 3600 + 150  # 2.5 minutes past a 5-minute boundary: the burst straddles it
    lines = failures("198.51.100.7", [base + i * 40 for i in range(6)])  # 6 in 200 s
    lines += failures("198.51.100.8", [base + i * 40 for i in range(5)])  # 5: at the limit, not over
    lines += failures("198.51.100.9", [base + i * 70 for i in range(10)])  # 10, never 6 in 300 s
    lines += [(base + i, auth_line("192.0.2.1", base + i, "login ok user@example.com")) for i in range(50)]
    log = write(tmp_path / "auth.log", lines)

    report = scan_security(auth_log=log, api_log=None, now=NOW)

    assert [(b.address, b.failures) for b in report.failed_login_bursts] == [("198.51.100.7", 6)]
    burst = report.failed_login_bursts[0]
    assert (burst.first_at.timestamp(), burst.last_at.timestamp()) == (base, base + 200)
    assert report.failed_logins == 21
    assert report.failed_by_address[0] == ("198.51.100.9", 10)
    assert report.events == 1


def test_failures_outside_the_window_do_not_count_by_their_own_time(tmp_path: Path) -> None:
    old = T - 30 * 3600  # 30 hours ago: outside the default 24 hours
    lines = failures("198.51.100.7", [old + i for i in range(20)])
    lines += failures("198.51.100.8", [T - 600 + i for i in range(3)])
    log = write(tmp_path / "auth.log", lines)

    day = scan_security(auth_log=log, api_log=None, now=NOW)
    two_days = scan_security(auth_log=log, api_log=None, hours=48, now=NOW)

    assert (day.failed_logins, day.failed_login_bursts) == (3, ())
    assert two_days.failed_logins == 23
    assert [b.address for b in two_days.failed_login_bursts] == ["198.51.100.7"]


def test_json_lines_count_and_junk_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    lines = [
        (
            T - 100 + i,
            json.dumps({"ip": "2001:db8::1", "time": T - 100 + i, "message": "authentication failed"}) + "\n",
        )
        for i in range(7)
    ]
    lines += [(T - 50, "%%% not a log line %%%\n"), (T - 49, "\n"), (T - 48, '{"broken json\n')]
    lines += [(T - 40, auth_line("192.0.2.1", T - 40, "login ok"))]
    log = write(tmp_path / "auth.log", lines)

    report = scan_security(auth_log=log, api_log=None, now=NOW)

    assert [(b.address, b.failures) for b in report.failed_login_bursts] == [("2001:db8::1", 7)]
    [stats] = report.sources
    assert (stats.lines, stats.skipped, stats.parsed) == (11, 3, 8)


def requests(address: str, start: float, count: int, spacing: float = 0.5) -> list[tuple[float, str]]:
    return [
        (start + i * spacing, api_line(address, start + i * spacing, "GET /api/estimates", 200, 20))
        for i in range(count)
    ]


def test_more_than_100_requests_in_a_minute_from_one_address_is_a_burst(tmp_path: Path) -> None:
    minute = (T - 1800) // 60 * 60
    lines = requests("203.0.113.5", minute, 101, spacing=0.5)  # 101 within one minute
    lines += requests("203.0.113.6", minute, 100, spacing=0.5)  # 100: at the limit
    lines += requests("203.0.113.7", minute, 300, spacing=1.0)  # 300 over five minutes: 60 a minute
    log = write(tmp_path / "api.log", lines)

    report = scan_security(auth_log=None, api_log=log, now=NOW)
    stricter = scan_security(
        auth_log=None, api_log=log, now=NOW, thresholds=SecurityThresholds(requests_per_minute=59)
    )

    assert [(b.address, b.minute.timestamp(), b.requests) for b in report.request_bursts] == [
        ("203.0.113.5", minute, 101)
    ]
    assert {b.address for b in stricter.request_bursts} == {"203.0.113.5", "203.0.113.6", "203.0.113.7"}


def test_configured_failed_login_thresholds_are_used(tmp_path: Path) -> None:
    log = write(tmp_path / "auth.log", failures("198.51.100.7", [T - 3000 + i * 100 for i in range(4)]))
    limits = SecurityThresholds(failed_logins=3, failed_login_window=timedelta(minutes=10))

    report = scan_security(auth_log=log, api_log=None, now=NOW, thresholds=limits)

    assert [(b.address, b.failures) for b in report.failed_login_bursts] == [("198.51.100.7", 4)]


def test_a_burst_in_a_log_much_longer_than_the_window_is_found_reading_little(tmp_path: Path) -> None:
    lines = [
        (T - 40 * 86400 + i * 30, auth_line("192.0.2.1", T - 40 * 86400 + i * 30, "login ok x"))
        for i in range(40 * 2880)
    ]
    lines += failures("198.51.100.7", [T - 300 + i for i in range(8)])
    log = write(tmp_path / "auth.log", lines)

    report = scan_security(auth_log=log, api_log=None, now=NOW)

    assert [(b.address, b.failures) for b in report.failed_login_bursts] == [("198.51.100.7", 8)]
    [stats] = report.sources
    assert stats.bytes_read < stats.size / 10


def test_request_bursts_are_found_when_a_chunk_starts_and_ends_with_junk(tmp_path: Path) -> None:
    minute = (T - 1800) // 60 * 60
    lines = [(minute - 5, "### rotated ###\n")]
    lines += requests("203.0.113.5", minute, 101, spacing=0.5)
    lines += [(minute + 59, "<<junk>>\n")]
    log = write(tmp_path / "api.log", lines)

    report = scan_security(auth_log=None, api_log=log, now=NOW)

    assert [(b.address, b.requests) for b in report.request_bursts] == [("203.0.113.5", 101)]
    assert report.sources[0].skipped == 1  # the rotation mark is before the window's first line


def test_a_minute_split_between_two_chunks_is_counted_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    minute = (T - 1800) // 60 * 60
    log = write(tmp_path / "api.log", requests("203.0.113.5", minute, 110, spacing=0.5))
    monkeypatch.setattr(logscan, "CHUNK_SIZE", 2048)  # about 30 lines a chunk: the minute spans four

    report = scan_security(auth_log=None, api_log=log, now=NOW)

    assert [(b.address, b.requests) for b in report.request_bursts] == [("203.0.113.5", 110)]


def test_a_request_line_whose_time_no_clock_can_read_is_skipped_not_fatal(tmp_path: Path) -> None:
    # 150 hostile requests from one address, each alone enough to crash the minute count or the
    # burst's datetime if read as a time; among them, 101 good ones in one minute: the one burst.
    hostile = [
        '{"ip": "198.51.100.6", "time": 1e999}',
        '{"ip": "198.51.100.6", "time": 1e300}',
        '{"ip": "198.51.100.6", "time": 100000000000000000000000000000000000000000000000000}',
        "198.51.100.6 - - " + "9" * 400 + ' "GET /x" 200 1',
        '198.51.100.6 - - 999999999999999 "GET /x" 200 1',
    ] * 30
    good = [api_line("203.0.113.9", T - 600 + i * 0.1, "GET /api", 200, 3) for i in range(101)]
    log = tmp_path / "api.log"
    log.write_text("".join(good[:50]) + "".join(line + "\n" for line in hostile) + "".join(good[50:]))

    result = scan_security(auth_log=None, api_log=log, hours=24, now=NOW)

    assert [(b.address, b.requests) for b in result.request_bursts] == [("203.0.113.9", 101)]
