"""The numpy path over access logs gives exactly what reading each line alone gives.

Generated logs mix the usual lines with junk, JSON lines, IPv6 and hostname addresses, fractional
epochs, long paths and Japanese text; chunks are made small so minutes, addresses and endpoints
cross chunk boundaries, and the window is cut in two for a worker process so they cross that cut."""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runbooks import log_report, logscan, logworkers
from runbooks.log_report import _ErrorTally, _fold_endpoints, scan_access_log, scan_error_log
from runbooks.logscan import json_fields, json_lines, json_time, parse_time
from runbooks.logworkers import scan_parts
from runbooks.security import RequestBurst, SecurityThresholds, scan_api_log, scan_auth_log

T0 = 1_764_000_000.0
LINE = re.compile(rb'(\S+) - - (\d+(?:\.\d*)?) "([A-Z]+ [^ ?"\n]*)[^"\n]*" (\d{3}) (\d+)')
ADDRESS = re.compile(rb'(\S+) - - (\d+(?:\.\d*)?) "')
ADDRESSES = ["203.0.113.7", "203.0.113.70", "2001:db8:85a3::8a2e:370:7334", "edge-proxy-01.example.jp"]
ADDRESSES += [f"198.51.100.{i}" for i in range(12)]
PATHS = ["/api/estimates", "/api/estimates/42?page=2", "/api/見積/7", "/" + "x" * 70, "/health", ""]


def line(rng: random.Random, moment: float) -> bytes:
    address = rng.choice(ADDRESSES)
    kind = rng.randrange(40)
    if kind == 0:
        return rng.choice(
            [
                b"### rotated ###",
                b"",
                b"   ",
                "ログ切替 テスト太郎".encode(),
                b'\t203.0.113.7 - - soon "GET / HTTP/1.1" 200 1',
            ]
        )
    if kind == 1:
        fields = {
            "ip": address,
            "time": moment,
            "method": "GET",
            "path": "/api/users/me",
            "status": 200,
            "ms": 3,
        }
        return json.dumps(fields, ensure_ascii=False).encode()
    stamp = f"{moment:.3f}" if kind == 2 else str(int(moment))
    method = "DELETE" if kind == 3 else rng.choice(["GET", "POST"])
    request = f"{method} {rng.choice(PATHS)} HTTP/1.1" if kind != 4 else "get /lower HTTP/1.1"
    status = rng.choice(["200", "404", "500", "5000" if kind == 5 else "201"])
    ms = str(rng.randint(0, 3000)) + ("ms" if kind == 6 else "")
    return f'{address} - - {stamp} "{request}" {status} {ms}'.encode()


@pytest.fixture(scope="module")
def access_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(15)
    path = tmp_path_factory.mktemp("columns") / "api.log"
    moment, lines = T0, []
    for _ in range(30_000):
        moment += rng.choice([0.0, 0.0, 0.1, 0.5, 1.0])
        lines.append(line(rng, moment))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def reference_minutes(path: Path) -> tuple[Counter[tuple[int, bytes]], int]:
    """Requests per (minute, address), and lines with a known shape, reading each line alone."""
    counts: Counter[tuple[int, bytes]] = Counter()
    shaped = 0
    for raw in path.read_bytes().split(b"\n")[:-1]:
        if raw.startswith(b"{"):
            fields = json_fields(raw)
            moment = json_time(fields, logscan.UTC) if fields else None
            if fields is None or moment is None or "ip" not in fields:
                continue
            key = (int(moment // 60), str(fields["ip"]).encode())
        else:
            found = ADDRESS.match(raw)
            moment = parse_time(found[2]) if found else None
            if found is None or moment is None:
                continue
            key = (int(moment // 60), found[1])
        counts[key] += 1
        shaped += 1
    return counts, shaped


def reference_requests(path: Path) -> tuple[Counter[bytes], Counter[bytes], Counter[int], int]:
    endpoints: Counter[bytes] = Counter()
    statuses: Counter[bytes] = Counter()
    latencies: Counter[int] = Counter()
    shaped = 0
    for raw in path.read_bytes().split(b"\n")[:-1]:
        if raw.startswith(b"{"):
            fields = json_fields(raw)
            if fields and "time" in fields:
                endpoints[f"{fields['method']} {str(fields['path']).split('?')[0]}".encode()] += 1
                statuses[str(fields["status"]).encode()] += 1
                latencies[round(float(fields["ms"]))] += 1
                shaped += 1
            continue
        found = LINE.match(raw)
        if found:
            endpoints[found[3]] += 1
            statuses[found[4]] += 1
            latencies[int(found[5])] += 1
            shaped += 1
    return endpoints, statuses, latencies, shaped


def in_two_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut even a small window in two, the second part read in a worker process."""
    monkeypatch.setattr(logworkers, "COLD_MIN_BYTES", 1)
    monkeypatch.setattr(logworkers, "WARM_MIN_BYTES", 1)
    monkeypatch.setattr(logworkers, "parts_wanted", lambda: 2)


@pytest.mark.parametrize(
    ("chunk_size", "workers"), [(4096, False), (65_536, False), (2 * 1024 * 1024, False), (4096, True)]
)
def test_request_bursts_match_reading_each_line_alone(
    access_log: Path, chunk_size: int, workers: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logscan, "CHUNK_SIZE", chunk_size)
    if workers:
        in_two_processes(monkeypatch)
    counts, shaped = reference_minutes(access_log)
    limit = 8
    expected = {(a.decode("ascii", "replace"), m * 60, n) for (m, a), n in counts.items() if n > limit}

    bursts, stats = scan_api_log(
        access_log,
        start=T0 - 60,
        end=T0 + 10 * 86400,
        thresholds=SecurityThresholds(requests_per_minute=limit),
        zone=logscan.UTC,
        tolerance=60.0,
    )

    found = {(b.address, b.minute.timestamp(), b.requests) for b in bursts}
    assert found == expected
    assert len(bursts) == len(found) > 50  # each burst once, and plenty of them
    assert any(b.address.startswith("2001:db8") for b in bursts) and isinstance(bursts[0], RequestBurst)
    assert (stats.lines, stats.parsed) == (30_000, shaped)


@pytest.mark.parametrize(("chunk_size", "workers"), [(4096, False), (2 * 1024 * 1024, False), (4096, True)])
def test_endpoints_statuses_and_times_match_reading_each_line_alone(
    access_log: Path, chunk_size: int, workers: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logscan, "CHUNK_SIZE", chunk_size)
    if workers:
        in_two_processes(monkeypatch)
    endpoints, statuses, latencies, shaped = reference_requests(access_log)

    tally, stats = scan_access_log(
        access_log, start=T0 - 60, end=T0 + 10 * 86400, zone=logscan.UTC, tolerance=60.0
    )

    assert _fold_endpoints(tally.endpoints) == _fold_endpoints(endpoints)
    assert "GET /api/見積/{id}".encode() in _fold_endpoints(endpoints)
    assert (tally.statuses, tally.latencies) == (statuses, latencies)
    assert (stats.lines, stats.parsed) == (30_000, shaped)
    assert stats.skipped > 1000  # junk, lower-case methods, 4-digit statuses are not counted


def test_a_window_inside_the_log_counts_only_its_minutes(access_log: Path) -> None:
    counts, _ = reference_minutes(access_log)
    start, end = T0 + 3000, T0 + 6000
    limit = 8
    expected = {
        (a.decode("ascii", "replace"), m * 60, n)
        for (m, a), n in counts.items()
        if n > limit and start <= m * 60 and m * 60 + 59 <= end
    }

    bursts, _ = scan_api_log(
        access_log,
        start=start,
        end=end,
        thresholds=SecurityThresholds(requests_per_minute=limit),
        zone=logscan.UTC,
        tolerance=60.0,
    )

    inside = {
        (b.address, b.minute.timestamp(), b.requests)
        for b in bursts
        if start <= b.minute.timestamp() <= end - 59
    }
    assert inside == expected and expected


AUTH = re.compile(rb"\S+ \d{4}-\d\d-\d\dT")


def test_auth_lines_in_shape_and_failures_match_reading_each_line_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logscan, "CHUNK_SIZE", 4096)
    rng = random.Random(5)
    hosts = [*ADDRESSES, "a-very-long-reverse-dns-name-for-a-client.customer.example.co.jp"]
    raw = []
    for i in range(5000):
        moment = T0 + i
        stamp = datetime.fromtimestamp(moment, UTC).isoformat()
        text = rng.choice(["authentication failed for テスト太郎", "login ok x@example.com"])
        raw.append(
            rng.choice(
                [
                    f"{rng.choice(hosts)} {stamp} {text}",
                    f"{rng.choice(hosts)} {stamp} {text}",
                    f"{rng.choice(hosts)} 2026/11/28 {text}",
                    f"{rng.choice(hosts)}\t{stamp} {text}",
                    json.dumps(
                        {"ip": rng.choice(hosts), "time": moment, "message": text}, ensure_ascii=False
                    ),
                    "",
                ]
            ).encode()
        )
    raw[0] = (
        f"192.0.2.1 {datetime.fromtimestamp(T0, UTC).isoformat()} login ok".encode()
    )  # the window's first
    log = tmp_path / "auth.log"
    log.write_bytes(b"\n".join(raw) + b"\n")
    shaped = sum(bool(AUTH.match(line)) for line in raw)
    shaped += sum(line.startswith(b"{") for line in raw)
    failures = sum(b"authentication failed" in line and not line.startswith(b"\t") for line in raw)
    failures -= sum(b"2026/11/28" in line and b"authentication failed" in line for line in raw)
    failures -= sum(b"\t" in line and b"authentication failed" in line for line in raw)

    windows, stats = scan_auth_log(
        log, start=T0 - 60, end=T0 + 86400, thresholds=SecurityThresholds(), zone=UTC, tolerance=60.0
    )

    assert (stats.lines, stats.parsed) == (5000, shaped)
    assert sum(windows.total.values()) == failures > 500


def where_read(span: tuple[int, int], after: bool) -> tuple[int, tuple[int, int], bool, list[str]]:
    return os.getpid(), span, after, sorted(os.environ)


def test_the_second_part_is_read_in_a_worker_process_that_gets_no_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-not-for-workers")

    here, there = scan_parts(where_read, [(0, 10), (10, 20)])

    assert here[:3] == (os.getpid(), (0, 10), False)
    assert there[0] != os.getpid() and there[1:3] == ((10, 20), True)
    assert set(there[3]) <= {"PATH", "PYTHONPATH", "LC_CTYPE"}


OLD_ERROR_LINE = re.compile(
    rb"\n\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S* (DEBUG|INFO|WARNING|ERROR|CRITICAL) ([^\n]*)"
)
MESSAGES = [
    "estimate 42 not found",
    "PDF renderer timed out after 30 s",
    "見積 ７ の計算に失敗 テスト太郎",  # full-width digits are numbers too
    "pool exhausted\r",
    "  padded 12  ",
    "",
    "x" * 300,
]


def error_log_line(rng: random.Random, moment: float) -> bytes:
    kind = rng.randrange(30)
    stamp = datetime.fromtimestamp(moment, UTC)
    if kind == 0:
        odd = rng.choice(
            [
                b"Traceback (most recent call last):",
                b'  File "app.py", line 3, in <module>',
                b"",
                b"@ ERRORS are not a level",
                b"@ error lower case",
                b"@\tERROR after a tab",
                b"@ CRITICAL",
                b"@ CRITICAL ",
                b"@.123456+09:00-and-a-very-long-zone-name-indeed ERROR long time 7",
                b"@ ERROR \xff\xfe broken utf-8 9",
                "ログ切替 テスト太郎".encode(),
            ]
        )
        return odd.replace(b"@", stamp.strftime("%Y-%m-%dT%H:%M:%S").encode())
    if kind == 1:
        fields = {"time": moment, "level": rng.choice(["error", "critical", "info"]), "message": "json 5"}
        return json.dumps(fields, ensure_ascii=False).encode()
    text = rng.choice(
        [
            stamp.isoformat(),
            stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            stamp.strftime("%Y-%m-%d %H:%M:%S,") + "123",
        ]
    )
    level = rng.choice(["DEBUG", "INFO", "INFO", "WARNING", "ERROR", "ERROR", "CRITICAL"])
    message = rng.choice(MESSAGES).replace("42", str(rng.randrange(100)))
    return f"{text} {level} {message}".encode()


def old_error_chunk(chunk: bytes, tally: _ErrorTally) -> int:
    """The error log's chunk read as before the numpy path: one pattern over every line."""
    found = OLD_ERROR_LINE.findall(b"\n" + chunk)
    for level, message in found:
        tally.add(level.decode(), message.decode("utf-8", "replace"))
    shaped = len(found)
    for line in json_lines(chunk):
        fields = json_fields(line)
        if fields and isinstance(fields.get("level"), str) and "time" in fields:
            shaped += 1
            tally.add(str(fields["level"]).upper(), str(fields.get("message", "")))
    return shaped


@pytest.mark.parametrize("chunk_size", [4096, 2 * 1024 * 1024])
def test_error_levels_and_messages_match_reading_each_line_with_the_old_pattern(
    tmp_path: Path, chunk_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logscan, "CHUNK_SIZE", chunk_size)
    rng = random.Random(7)
    raw = [error_log_line(rng, T0 + i * 0.5) for i in range(20_000)]
    path = tmp_path / "error.log"
    path.write_bytes(b"\n".join(raw) + b"\n")
    with monkeypatch.context() as old:
        old.setattr(log_report, "_error_chunk", old_error_chunk)
        expected, expected_stats = scan_error_log(
            path, start=T0 - 60, end=T0 + 86400, zone=UTC, tolerance=60.0
        )

    tally, stats = scan_error_log(path, start=T0 - 60, end=T0 + 86400, zone=UTC, tolerance=60.0)

    assert tally.levels == expected.levels and tally.levels["CRITICAL"] > 1000
    assert list(tally.messages.items()) == list(expected.messages.items())  # the same order of ties
    assert ("ERROR", "見積 # の計算に失敗 テスト太郎") in tally.messages
    assert (stats.lines, stats.parsed) == (expected_stats.lines, expected_stats.parsed)
    assert stats.lines == 20_000 and stats.skipped > 100
