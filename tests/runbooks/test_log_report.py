"""`logs`: error and critical counts, top messages and endpoints, response times, the 5xx rate."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from runbooks.log_report import ErrorMessage, summarize_logs
from tests.support.applogs import api_line, error_line

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
T = NOW.timestamp()


def test_errors_and_criticals_are_counted_with_their_most_frequent_messages(tmp_path: Path) -> None:
    lines = [error_line(T - 30 * 3600, "ERROR", "yesterday's news")]  # outside the window
    lines += [error_line(T - 3000 + i, "ERROR", f"estimate {i} not found") for i in range(12)]
    lines += [error_line(T - 2000 + i, "ERROR", "PDF renderer timed out") for i in range(3)]
    lines += [error_line(T - 1000, "CRITICAL", "database connection pool exhausted")]
    lines += [error_line(T - 900 + i, "INFO", "request served") for i in range(40)]
    lines += [error_line(T - 800, "WARNING", "slow query")]
    lines += ["2026-11-28 20:50:00,120 ERROR tokyo local time, python logging's format\n"]  # 11:50 UTC
    lines += [json.dumps({"time": T - 100, "level": "critical", "message": "disk full on /var"}) + "\n"]
    lines += ["Traceback (most recent call last):\n", '  File "app.py", line 3\n']
    log = tmp_path / "error.log"
    log.write_text("".join(lines), encoding="utf-8")

    summary = summarize_logs(error_log=log, api_log=None, now=NOW, zone=ZoneInfo("Asia/Tokyo"))

    assert (summary.errors, summary.criticals) == (16, 2)
    assert summary.top_messages[:2] == (
        ErrorMessage("ERROR", "estimate # not found", 12),
        ErrorMessage("ERROR", "PDF renderer timed out", 3),
    )
    assert ErrorMessage("CRITICAL", "disk full on /var", 1) in summary.top_messages
    [stats] = summary.sources
    assert stats.skipped == 2  # the traceback's lines


def test_endpoints_response_times_and_the_5xx_rate_against_the_target(tmp_path: Path) -> None:
    lines = [
        api_line("203.0.113.1", T - 3000 + i, f"GET /api/estimates/{i}?page=2", 200, 10) for i in range(60)
    ]
    lines += [api_line("203.0.113.2", T - 2000 + i, "POST /api/estimates", 201, 100) for i in range(30)]
    lines += [api_line("203.0.113.3", T - 1000 + i, "GET /api/pdf/7", 500, 3000) for i in range(9)]
    lines += [
        json.dumps(
            {
                "ip": "2001:db8::1",
                "time": T - 10,
                "method": "GET",
                "path": "/health",
                "status": 200,
                "ms": 1.4,
            }
        )
        + "\n"
    ]
    lines += [api_line("203.0.113.4", T - 90_000, "GET /old", 500, 9999)]  # outside the window
    lines.sort(key=lambda line: line.split()[3] if not line.startswith("{") else str(int(T - 10)))
    log = tmp_path / "api.log"
    log.write_text("".join(lines), encoding="utf-8")

    summary = summarize_logs(error_log=None, api_log=log, now=NOW)

    assert summary.requests == 100
    assert summary.top_endpoints == (
        ("GET /api/estimates/{id}", 60),
        ("POST /api/estimates", 30),
        ("GET /api/pdf/{id}", 9),
        ("GET /health", 1),
    )
    assert summary.average_ms == (60 * 10 + 30 * 100 + 9 * 3000 + 1) / 100
    assert summary.p95_ms == 3000  # the 95th of 100 sorted times
    assert summary.server_errors == 9
    assert summary.error_rate == 0.09
    assert summary.meets_error_rate_target is False


def test_a_clean_window_meets_the_error_rate_target_and_an_empty_one_says_nothing(tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    log.write_text("".join(api_line("203.0.113.1", T - 100 + i, "GET /health", 200, 5) for i in range(50)))

    clean = summarize_logs(error_log=None, api_log=log, now=NOW)
    empty = summarize_logs(error_log=None, api_log=log, now=datetime(2020, 1, 1, tzinfo=UTC))

    assert (clean.meets_error_rate_target, clean.p95_ms, clean.average_ms) == (True, 5, 5)
    assert (empty.requests, empty.error_rate, empty.meets_error_rate_target, empty.p95_ms) == (
        0,
        None,
        None,
        None,
    )


HOSTILE_REQUESTS = [
    '{"ip": "198.51.100.6", "time": %s, "method": "GET", "path": "/x", "status": 200, "ms": "12ms"}'
    % (T - 50),
    '{"ip": "198.51.100.6", "time": %s, "method": "GET", "path": "/x", "status": 200, "ms": NaN}' % (T - 50),
    '{"ip": "198.51.100.6", "time": %s, "method": "GET", "path": "/x", "status": 200, "ms": 1e999}'
    % (T - 50),
    '{"ip": "198.51.100.6", "time": 1e999, "method": "GET", "path": "/x", "status": 200, "ms": 1}',
    '{"ip": "198.51.100.6", "time": 1e300, "method": "GET", "path": "/x", "status": 200, "ms": 1}',
    "198.51.100.6 - - " + "9" * 400 + ' "GET /x" 200 1',
    '198.51.100.6 - - 999999999999999 "GET /x" 200 1',
]


def test_a_line_with_a_time_or_milliseconds_no_clock_can_read_is_not_fatal(tmp_path: Path) -> None:
    # Written among good lines, in the middle of the window (chunks there pass whole).
    good = [api_line("203.0.113.1", T - 100 + i, "GET /health", 200, 5) for i in range(50)]
    log = tmp_path / "api.log"
    log.write_text("".join(good[:25] + [line + "\n" for line in HOSTILE_REQUESTS] + good[25:]))

    summary = summarize_logs(error_log=None, api_log=log, now=NOW)

    # The three with no usable milliseconds are skipped; an untimed line inside the window goes
    # with the line before it, as any untimed line does, so the other four count (at 1 ms).
    assert summary.requests == 54 and summary.p95_ms == 5
    assert summary.top_endpoints == (("GET /health", 50), ("GET /x", 4))
    [stats] = summary.sources
    assert stats.skipped == 3
