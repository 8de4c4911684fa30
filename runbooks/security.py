"""`security [hours]`: failed-login bursts and request bursts per source address, from the app's logs.

The manual's thresholds, configurable: more than 5 failed logins from one address within any
5 minutes (a sliding window over each failure's own time), more than 100 requests from one address
within one minute of the API log. Each log is read only over the window asked for (runbooks.logscan).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

from runbooks.logscan import (
    DEFAULT_TOLERANCE_S,
    LineTime,
    ScanStats,
    check_hours,
    json_fields,
    json_lines,
    json_time,
    open_log,
    parse_time,
    split_offset,
    time_reader,
    window_chunks,
)

FAILED = b"authentication failed"
AUTH_LINE = re.compile(rb"\n\S+ \d{4}-\d\d-\d\dT")
API_ADDRESS = re.compile(rb"\n(\S+) - - \d+(?:\.\d*)? \"")
TOP = 10


@dataclass(frozen=True)
class SecurityThresholds:
    failed_logins: int = 5  # more than this many …
    failed_login_window: timedelta = timedelta(minutes=5)  # … within this long is a burst
    requests_per_minute: int = 100  # more than this many requests from one address in a minute


@dataclass(frozen=True)
class FailedLoginBurst:
    address: str
    failures: int  # in its busiest window
    first_at: datetime  # that window's first and last failure
    last_at: datetime


@dataclass(frozen=True)
class RequestBurst:
    address: str
    minute: datetime
    requests: int


@dataclass(frozen=True)
class SecurityReport:
    hours: int
    since: datetime
    until: datetime
    thresholds: SecurityThresholds
    failed_logins: int
    failed_by_address: tuple[tuple[str, int], ...]  # top 10
    failed_login_bursts: tuple[FailedLoginBurst, ...]
    request_bursts: tuple[RequestBurst, ...]
    sources: tuple[ScanStats, ...]

    @property
    def events(self) -> int:
        """Security events in the KPI's sense (target: 0)."""
        return len(self.failed_login_bursts) + len(self.request_bursts)


@dataclass
class _FailureWindows:
    """Per address, a sliding window of failure times and its busiest moment."""

    window: float
    recent: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    busiest: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    total: Counter[str] = field(default_factory=Counter)

    def add(self, failures: Iterable[tuple[float, str]]) -> None:
        for moment, address in sorted(failures):
            times = self.recent[address]
            times.append(moment)
            while moment - times[0] > self.window:
                times.popleft()
            self.total[address] += 1
            if len(times) > self.busiest.get(address, (0, 0.0, 0.0))[0]:
                self.busiest[address] = (len(times), times[0], moment)


def _auth_failures(chunk: bytes, zone: tzinfo) -> tuple[list[tuple[float, str]], int]:
    """(time, address) of each failed login in the chunk, and how many lines had a known shape."""
    failures: list[tuple[float, str]] = []
    shaped = len(AUTH_LINE.findall(b"\n" + chunk))
    at = chunk.find(FAILED)
    while at >= 0:  # failures are few: find them, then read only their lines
        begin = chunk.rfind(b"\n", 0, at) + 1
        words = chunk[begin:at].split(b" ", 2)
        text_line = chunk[begin : begin + 1] != b"{"  # JSON lines are read below
        moment = parse_time(words[1], zone) if text_line and len(words) > 2 else None
        if moment is not None:
            failures.append((moment, words[0].decode("ascii", "replace")))
        at = chunk.find(FAILED, chunk.find(b"\n", at))  # chunks end with a newline
    for line in json_lines(chunk):
        fields = json_fields(line)
        moment = json_time(fields, zone) if fields else None
        if fields is None or moment is None or "ip" not in fields:
            continue
        shaped += 1
        if "authentication failed" in str(fields.get("message", "")):
            failures.append((moment, str(fields["ip"])))
    return failures, shaped


def scan_auth_log(
    path: Path, *, start: float, end: float, thresholds: SecurityThresholds, zone: tzinfo, tolerance: float
) -> tuple[_FailureWindows, ScanStats]:
    windows = _FailureWindows(thresholds.failed_login_window.total_seconds())
    stats = ScanStats(str(path))
    with open_log(path) as f:
        reader = time_reader("auth", zone)
        for chunk in window_chunks(
            f, start=start, end=end, line_time=reader, stats=stats, tolerance=tolerance
        ):
            failures, shaped = _auth_failures(chunk, zone)
            stats.skipped += chunk.count(b"\n") - shaped
            windows.add(failures)
    return windows, stats


@dataclass
class _MinuteCounts:
    """Requests per address, one minute at a time (a minute may span two chunks)."""

    limit: int
    minute: int | None = None
    counts: Counter[bytes] = field(default_factory=Counter)
    bursts: list[RequestBurst] = field(default_factory=list)

    def add(self, minute: int, counts: Counter[bytes]) -> None:
        if minute != self.minute:
            self.close()
            self.minute = minute
        self.counts.update(counts)

    def close(self) -> None:
        if self.minute is not None and self.counts and max(self.counts.values()) > self.limit:
            at = datetime.fromtimestamp(self.minute * 60, UTC)
            self.bursts += [
                RequestBurst(address.decode("ascii", "replace"), at, n)
                for address, n in self.counts.items()
                if n > self.limit
            ]
        self.counts = Counter()


def _api_chunk(chunk: bytes, reader: LineTime, minutes: _MinuteCounts, zone: tzinfo) -> int:
    """Count the chunk's requests per address and minute; returns how many lines had a known shape.

    The chunk is cut at each minute's first line by the lines' own times, then each slice's
    addresses are counted in C (no per-line Python): the log is in time order, give or take
    a few seconds at a minute's edge."""
    first, last = reader(chunk[: chunk.find(b"\n")]), reader(chunk[chunk.rfind(b"\n", 0, -1) + 1 : -1])
    shaped = 0
    if first is not None and last is not None:
        at = 0
        for minute in range(int(first // 60), int(last // 60) + 1):
            stop = split_offset(chunk, (minute + 1) * 60, reader) if minute < last // 60 else len(chunk)
            addresses = API_ADDRESS.findall(b"\n" + chunk[at:stop])
            shaped += len(addresses)
            minutes.add(minute, Counter(addresses))
            at = max(at, stop)
    else:  # no time at the edges: every line judged alone
        for line in chunk.split(b"\n")[:-1]:
            moment = None if line.startswith(b"{") else reader(line)
            if moment is not None:
                shaped += 1
                minutes.add(int(moment // 60), Counter([line.split(b" ", 1)[0]]))
    for line in json_lines(chunk):
        fields = json_fields(line)
        moment = json_time(fields, zone) if fields else None
        if fields is not None and moment is not None and "ip" in fields:
            shaped += 1
            minutes.add(int(moment // 60), Counter([str(fields["ip"]).encode()]))
    return shaped


def scan_api_log(
    path: Path, *, start: float, end: float, thresholds: SecurityThresholds, zone: tzinfo, tolerance: float
) -> tuple[list[RequestBurst], ScanStats]:
    minutes = _MinuteCounts(thresholds.requests_per_minute)
    stats = ScanStats(str(path))
    reader = time_reader("api", zone)
    with open_log(path) as f:
        for chunk in window_chunks(
            f, start=start, end=end, line_time=reader, stats=stats, tolerance=tolerance
        ):
            stats.skipped += chunk.count(b"\n") - _api_chunk(chunk, reader, minutes, zone)
    minutes.close()
    return minutes.bursts, stats


def scan_security(
    *,
    auth_log: Path | None,
    api_log: Path | None,
    hours: int = 24,
    now: datetime | None = None,
    thresholds: SecurityThresholds | None = None,
    zone: tzinfo = UTC,
    tolerance: float = DEFAULT_TOLERANCE_S,
) -> SecurityReport:
    """Failed-login and request bursts over the last `hours`; CPU and file work: run it in a thread."""
    limits = thresholds or SecurityThresholds()
    until = now or datetime.now(UTC)
    since = until - timedelta(hours=check_hours(hours))
    start, end = since.timestamp(), until.timestamp()
    sources: list[ScanStats] = []
    failed_bursts: list[FailedLoginBurst] = []
    windows = _FailureWindows(limits.failed_login_window.total_seconds())
    if auth_log is not None:
        windows, stats = scan_auth_log(
            auth_log, start=start, end=end, thresholds=limits, zone=zone, tolerance=tolerance
        )
        sources.append(stats)
        for address, (count, first, last) in windows.busiest.items():
            if count > limits.failed_logins:
                at = (datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(last, UTC))
                failed_bursts.append(FailedLoginBurst(address, count, *at))
    request_bursts: list[RequestBurst] = []
    if api_log is not None:
        request_bursts, stats = scan_api_log(
            api_log, start=start, end=end, thresholds=limits, zone=zone, tolerance=tolerance
        )
        sources.append(stats)
    failed_bursts.sort(key=lambda b: (-b.failures, b.address))
    request_bursts.sort(key=lambda b: (-b.requests, b.minute, b.address))
    return SecurityReport(
        hours=hours,
        since=since,
        until=until,
        thresholds=limits,
        failed_logins=sum(windows.total.values()),
        failed_by_address=tuple(windows.total.most_common(TOP)),
        failed_login_bursts=tuple(failed_bursts),
        request_bursts=tuple(request_bursts),
        sources=tuple(sources),
    )
