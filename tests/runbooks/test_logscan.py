"""Reading a log's time window: only the window is read, by each line's own time, in whole lines."""

from __future__ import annotations

import random
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from core.errors import RunbookFailed, UsageError
from runbooks import logscan
from runbooks.logscan import (
    PROBE_SIZE,
    ScanStats,
    check_hours,
    open_log,
    parse_time,
    time_reader,
    window_chunks,
)
from tests.support.applogs import api_line, auth_line, error_line

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z
DAY = 86_400


def read_window(
    path: Path, kind: logscan.Kind, start: float, end: float, *, chunk_size: int = 64 * 1024
) -> tuple[list[bytes], ScanStats]:
    stats = ScanStats(str(path))
    with path.open("rb") as f:
        chunks = list(
            window_chunks(
                f, start=start, end=end, line_time=time_reader(kind), stats=stats, chunk_size=chunk_size
            )
        )
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    return b"".join(chunks).splitlines(), stats


def expected_lines(path: Path, kind: logscan.Kind, start: float, end: float) -> list[bytes]:
    """The brute-force answer: every line whose own time is in the window."""
    reader = time_reader(kind)
    found = []
    for line in path.read_bytes().splitlines():
        moment = reader(line)
        if moment is not None and start <= moment <= end:
            found.append(line)
    return found


@pytest.fixture(scope="module")
def ten_day_api_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten days, a line every 10 s, times jittered by up to 40 s (writers slightly out of order)."""
    rng = random.Random(7)
    path = tmp_path_factory.mktemp("logs") / "api.log"
    lines = [
        api_line(f"203.0.113.{i % 50}", T0 + i * 10 + rng.uniform(-40, 40), "GET /api/estimates", 200, 12)
        for i in range(10 * DAY // 10)
    ]
    path.write_text("".join(lines))
    return path


def test_the_last_day_of_ten_is_found_without_reading_the_nine_before(ten_day_api_log: Path) -> None:
    size = ten_day_api_log.stat().st_size
    end = T0 + 10 * DAY
    start = end - DAY

    lines, stats = read_window(ten_day_api_log, "api", start, end)

    assert lines == expected_lines(ten_day_api_log, "api", start, end)
    window_bytes = size - stats.window_offset
    assert window_bytes < size * 0.11  # the window starts near the 9-day mark
    probes = (size // PROBE_SIZE).bit_length() + 2
    assert stats.bytes_read <= window_bytes + probes * PROBE_SIZE + 64 * 1024
    assert stats.lines == len(lines)


def test_a_window_in_the_middle_stops_reading_after_its_end(ten_day_api_log: Path) -> None:
    size = ten_day_api_log.stat().st_size
    start, end = T0 + 3 * DAY, T0 + 4 * DAY

    lines, stats = read_window(ten_day_api_log, "api", start, end)

    assert lines == expected_lines(ten_day_api_log, "api", start, end)
    assert stats.bytes_read < size * 0.2


@pytest.mark.parametrize("chunk_size", [4096, 100_000, 8 * 1024 * 1024])
def test_out_of_order_lines_at_both_edges_are_kept_or_dropped_by_their_own_time(
    ten_day_api_log: Path, chunk_size: int
) -> None:
    start, end = T0 + 5 * DAY + 123, T0 + 5 * DAY + 7_777

    lines, _ = read_window(ten_day_api_log, "api", start, end, chunk_size=chunk_size)

    assert lines == expected_lines(ten_day_api_log, "api", start, end)
    assert len(lines) > 700


def test_lines_a_little_out_of_order_inside_edge_chunks_are_judged_by_their_own_time(tmp_path: Path) -> None:
    # Fixed-width lines, one a second, chunks of exactly ten lines: chunk k holds seconds 10k..10k+9.
    times = {i: T0 + i for i in range(300)}
    times[105] = T0 + 95  # written late: older than the window, in a chunk that starts inside it
    times[163] = T0 + 175  # written early: newer than the window's end, in a chunk that ends inside it
    times[172] = T0 + 168  # written late: inside the window, in a chunk that starts after its end
    path = tmp_path / "api.log"
    path.write_text("".join(api_line("203.0.113.1", times[i], "GET /health", 200, 10) for i in range(300)))
    width = len(api_line("203.0.113.1", T0, "GET /health", 200, 10))
    start, end = T0 + 100, T0 + 169

    lines, _ = read_window(path, "api", start, end, chunk_size=10 * width)

    assert lines == expected_lines(path, "api", start, end)
    assert len(lines) == 70 - 1 - 1 + 1


def test_junk_lines_and_a_last_line_without_newline_are_kept_in_the_window(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    body = [auth_line("192.0.2.1", T0 + i, "login ok") for i in range(100)]
    body.insert(50, "garbage \x00\xff line\n")
    unfinished = auth_line("192.0.2.9", T0 + 200, "login ok").rstrip("\n")
    path.write_bytes(("".join(body) + unfinished).encode())

    lines, stats = read_window(path, "auth", T0 + 10, T0 + 10_000)

    assert b"garbage \x00\xc3\xbf line" in lines  # junk inside the window stays, to be counted
    assert lines[-1].startswith(b"192.0.2.9 ")
    assert stats.lines == 90 + 1 + 1


@pytest.mark.parametrize("kind", ["api", "auth"])
def test_junk_lines_with_a_number_where_the_time_goes_do_not_mislead_the_search(
    tmp_path: Path, kind: logscan.Kind
) -> None:
    # Every third line is junk whose word in the time's place is a number (1970 if read as a time):
    # the binary search lands on them and, reading them as old, would start the window too late.
    path = tmp_path / f"{kind}.log"
    junk = 'scanner probe at 12345 "GET / HTTP/1.1" 200 1\n' if kind == "api" else "x 12345 y z\n"
    good = []
    body = []
    for i in range(2 * DAY // 10):
        line = (
            api_line("203.0.113.7", T0 + i * 10, "GET /api/estimates", 200, 12)
            if kind == "api"
            else (auth_line("203.0.113.7", T0 + i * 10, "login ok"))
        )
        body += [line, junk] if i % 2 else [line]
        good.append((T0 + i * 10, line.rstrip("\n").encode()))
    path.write_text("".join(body))
    start, end = T0 + DAY, T0 + 2 * DAY

    lines, stats = read_window(path, kind, start, end)

    in_window = [line for moment, line in good if start <= moment <= end]
    assert [line for line in lines if line != junk[:-1].encode()] == in_window
    assert stats.window_offset > path.stat().st_size * 0.4  # still found by the search, not read whole


@pytest.mark.parametrize(
    ("start", "end", "count"),
    [(T0 - 2 * DAY, T0 - DAY, 0), (T0 + 2 * DAY, T0 + 3 * DAY, 0), (T0 - DAY, T0 + DAY, 1000)],
)
def test_windows_before_after_and_around_the_log(
    tmp_path: Path, start: float, end: float, count: int
) -> None:
    path = tmp_path / "api.log"
    path.write_text("".join(api_line("203.0.113.1", T0 + i, "GET /health", 200, 1) for i in range(1000)))

    lines, _ = read_window(path, "api", start, end)

    assert len(lines) == count


def test_an_empty_log_has_an_empty_window(tmp_path: Path) -> None:
    path = tmp_path / "empty.log"
    path.write_bytes(b"")
    assert read_window(path, "api", T0, T0 + DAY) == ([], ScanStats(str(path)))


def test_times_are_read_in_every_shape_naive_ones_in_the_configured_zone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    assert parse_time("2025-11-25T01:00:00+09:00") == T0
    assert parse_time("2025-11-24T16:00:00Z") == T0
    assert parse_time("2025-11-25T01:00:00", tokyo) == T0
    assert parse_time(b"1764000000") == T0 and parse_time(b"1764000000.5") == T0 + 0.5
    assert parse_time(b"yesterday") is None and parse_time(b"") is None
    assert time_reader("error", tokyo)(b"2025-11-25 01:00:00,250 ERROR boom") == T0 + 0.25
    assert time_reader("error")(b"2025-11-24T16:00:00+00:00 CRITICAL down") == T0
    assert time_reader("auth")(b'{"ip": "192.0.2.1", "time": "2025-11-24T16:00:00Z"}') == T0
    assert time_reader("api")(b'{"ip": "192.0.2.1", "time": 1764000000}') == T0
    assert time_reader("api")(b"{not json") is None


def test_a_missing_log_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunbookFailed) as caught:
        open_log(tmp_path / "nope.log")
    assert caught.value.message_key == "logs.unreadable"


@pytest.mark.parametrize("hours", [0, -5, 24 * 31 + 1])
def test_hours_out_of_range_are_refused(hours: int) -> None:
    with pytest.raises(UsageError):
        check_hours(hours)


def test_lines_longer_than_the_bisection_step_are_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "api.log"
    long_path = "/api/search?q=" + "x" * 3000
    path.write_text("".join(api_line("203.0.113.1", T0 + i, f"GET {long_path}", 200, 5) for i in range(200)))

    lines, _ = read_window(path, "api", T0 + 50, T0 + 150, chunk_size=16 * 1024)

    assert lines == expected_lines(path, "api", T0 + 50, T0 + 150)
    assert len(lines) == 101


def test_lines_after_a_long_traceback_at_the_windows_end_are_read(tmp_path: Path) -> None:
    # 120 untimed lines (one deep traceback) between the last errors: the search inside the chunk
    # must not take the untimed run for the window's end and drop the lines after it.
    path = tmp_path / "error.log"
    before = [error_line(T0 + i, "ERROR", f"before {i}") for i in range(40)]
    traceback = ["Traceback (most recent call last):\n"] + [
        f'  File "app.py", line {n}\n' for n in range(119)
    ]
    after = [error_line(T0 + 100 + i, "ERROR", f"after {i}") for i in range(40)]
    path.write_text("".join(before + traceback + after), encoding="utf-8")

    lines, stats = read_window(path, "error", T0 + 10, T0 + 135)

    assert [line for line in lines if b"after" in line] == [line.rstrip("\n").encode() for line in after[:36]]
    assert lines[0].endswith(b"before 10") and stats.lines == len(lines) == 30 + 120 + 36


def test_a_line_longer_than_the_limit_is_dropped_and_lines_spanning_blocks_are_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logscan, "LINE_MAX", 300_000)
    path = tmp_path / "api.log"
    long_but_allowed = "x" * 250_000  # spans several 64 KiB blocks
    too_long = "y" * 1_000_000
    body = [api_line("203.0.113.1", T0 + i, "GET /a", 200, 1) for i in range(10)]
    body += [long_but_allowed + "\n", too_long + "\n"]
    body += [api_line("203.0.113.1", T0 + 10 + i, "GET /a", 200, 1) for i in range(10)]
    path.write_text("".join(body))

    lines, stats = read_window(path, "api", T0, T0 + 100)

    assert long_but_allowed.encode() in lines
    assert not any(line.startswith(b"y") for line in lines)
    assert len(lines) == 21 and stats.skipped == 1
