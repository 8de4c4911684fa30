"""`security [hours]`: failed-login bursts and request bursts per source address, from the app's logs.

The manual's thresholds, configurable: more than 5 failed logins from one address within any
5 minutes (a sliding window over each failure's own time), more than 100 requests from one address
within one minute of the API log. Each log is read only over the window asked for (runbooks.logscan).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

from runbooks import logscan, logworkers
from runbooks.logcolumns import (
    ChunkLines,
    Ints,
    access_parts,
    cut_rows,
    group,
    iso_lines,
    leftover,
    masked_words,
    number,
)
from runbooks.logscan import (
    DEFAULT_TOLERANCE_S,
    ScanStats,
    check_hours,
    json_fields,
    json_lines,
    json_time,
    log_chunks,
    parse_time,
    time_reader,
    window_spans,
)

FAILED = b"authentication failed"
AUTH_LINE = re.compile(rb"\S+ \d{4}-\d\d-\d\dT")  # at a line's start
API_ADDRESS = re.compile(rb"(\S+) - - (\d+(?:\.\d*)?) \"")  # at a line's start
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


def _auth_failures(chunk: bytes, zone: tzinfo) -> tuple[list[tuple[float, str]], int, int]:
    """(time, address) of each failed login in the chunk, its lines and how many had a known shape."""
    failures: list[tuple[float, str]] = []
    auth_time = time_reader("auth", zone)
    lines = ChunkLines(chunk)
    shaped, left = iso_lines(lines)
    shaped += sum(AUTH_LINE.match(lines.line(index)) is not None for index in left.tolist())
    at = chunk.find(FAILED)
    while at >= 0:  # failures are few: find them, then read only their lines
        begin = chunk.rfind(b"\n", 0, at) + 1
        text_line = chunk[begin : begin + 1] != b"{"  # JSON lines are read below
        moment = auth_time(chunk[begin:at]) if text_line else None
        if moment is not None:
            address = chunk[begin : chunk.find(b" ", begin)]
            failures.append((moment, address.decode("ascii", "replace")))
        at = chunk.find(FAILED, chunk.find(b"\n", at))  # chunks end with a newline
    for line in json_lines(chunk):
        fields = json_fields(line)
        moment = json_time(fields, zone) if fields else None
        if fields is None or moment is None or "ip" not in fields:
            continue
        shaped += 1
        if "authentication failed" in str(fields.get("message", "")):
            failures.append((moment, str(fields["ip"])))
    return failures, len(lines), shaped


def scan_auth_log(
    path: Path, *, start: float, end: float, thresholds: SecurityThresholds, zone: tzinfo, tolerance: float
) -> tuple[_FailureWindows, ScanStats]:
    windows = _FailureWindows(thresholds.failed_login_window.total_seconds())
    stats = ScanStats(str(path))
    for chunk in log_chunks(path, "auth", zone=zone, start=start, end=end, stats=stats, tolerance=tolerance):
        failures, lines, shaped = _auth_failures(chunk, zone)
        stats.skipped += lines - shaped
        windows.add(failures)
    return windows, stats


@dataclass
class _Grouped:
    """Requests grouped by (minute, address): one row per group."""

    minutes: Ints
    counts: Ints
    heads: npt.NDArray[np.uint8]  # the first bytes of one line of each group
    address_lengths: Ints

    def addresses(self, rows: Ints) -> list[bytes]:
        return cut_rows(self.heads[rows], self.address_lengths[rows])


@dataclass
class _MinuteCounts:
    """Requests per address and minute of each line's own time, a chunk's worth at a time.

    A minute well inside a chunk is complete there (lines are in time order give or take
    `tolerance`): its addresses over the limit are bursts, the rest are dropped at once. Only the
    minutes near a chunk's edges, or holding a line read the slow way, are kept open for the
    next chunk, and closed once the log has moved `margin` minutes past them: flat memory.
    In a part of the window after another (`after`), the first minutes are never closed here:
    the part before holds lines of them too, and the caller merges both (`merge`)."""

    limit: int
    margin: int  # minutes
    after: bool = False
    floor: int | None = None  # minutes up to this one stay open (set by the first chunk, when `after`)
    open: dict[int, Counter[bytes]] = field(default_factory=lambda: defaultdict(Counter))
    bursts: list[RequestBurst] = field(default_factory=list)

    def add_chunk(self, groups: list[_Grouped], slow: list[tuple[int, bytes]]) -> None:
        """`groups`: requests grouped by minute and address; `slow`: (minute, address) one by one."""
        seen = [int(g.minutes.min()) for g in groups if len(g.minutes)] + [m for m, _ in slow]
        if not seen:
            return
        low = min(seen) + self.margin
        if self.after and self.floor is None:
            self.floor = low
        low = max(low, self.floor if self.floor is not None else low)
        high = max([int(g.minutes.max()) for g in groups if len(g.minutes)] + [m for m, _ in slow])
        held = np.array(sorted({m for m, _ in slow}), np.int64)
        for g in groups:
            edge = (g.minutes <= low) | (g.minutes >= high - self.margin) | np.isin(g.minutes, held)
            rows = np.flatnonzero(edge | (g.counts > self.limit))
            picked = zip(
                g.minutes[rows].tolist(),
                g.counts[rows].tolist(),
                edge[rows].tolist(),
                g.addresses(rows),
                strict=True,
            )
            for minute, n, held_open, address in picked:
                if held_open:
                    self.open[minute][address] += n
                else:
                    self._burst(minute, address, n)
        for minute, address in slow:
            self.open[minute][address] += 1
        self.close(before=high - self.margin)

    def merge(self, part: _MinuteCounts) -> None:
        """Take in a part's bursts and the minutes it left open."""
        self.bursts += part.bursts
        for minute, counts in part.open.items():
            self.open[minute].update(counts)

    def close(self, before: int | None = None) -> None:
        kept = self.floor if before is not None and self.floor is not None else None
        for minute in sorted(
            m for m in self.open if (before is None or m < before) and (kept is None or m > kept)
        ):
            for address, n in self.open.pop(minute).items():
                if n > self.limit:
                    self._burst(minute, address, n)

    def _burst(self, minute: int, address: bytes, n: int) -> None:
        at = datetime.fromtimestamp(minute * 60, UTC)
        self.bursts.append(RequestBurst(address.decode("ascii", "replace"), at, n))


def _slow_request(line: bytes, zone: tzinfo) -> tuple[int, bytes] | None:
    """(minute, address) of one line read alone: a JSON line, or a text line the fast path left."""
    if line.startswith(b"{"):
        fields = json_fields(line)
        moment = json_time(fields, zone) if fields else None
        if fields is None or moment is None or "ip" not in fields:
            return None
        return int(moment // 60), str(fields["ip"]).encode()
    found = API_ADDRESS.match(line)
    moment = parse_time(found[2], zone) if found else None
    return None if found is None or moment is None else (int(moment // 60), found[1])


def _api_chunk(chunk: bytes, minutes: _MinuteCounts, zone: tzinfo) -> tuple[int, int]:
    """Count the chunk's requests per address and minute; returns (lines, lines in a known shape).

    Lines in the usual shape are read as numpy columns (runbooks.logcolumns): minute from the
    epoch, address as words, grouped in C; the others one by one."""
    lines = ChunkLines(chunk)
    parts = access_parts(lines)
    groups = []
    for part in parts:
        minute = number(part.epoch, part.epoch_length) // 60
        words = masked_words(part.head, part.address_length)
        rows, counts = group([minute * 64 + part.address_length, *words.T])
        groups.append(_Grouped(minute[rows], counts, part.head[rows], part.address_length[rows]))
    slow = []
    for index in leftover(lines, [part.index for part in parts]).tolist():
        request = _slow_request(lines.line(index), zone)
        if request is not None:
            slow.append(request)
    minutes.add_chunk(groups, slow)
    return len(lines), sum(len(part.index) for part in parts) + len(slow)


def _api_part(
    path: Path,
    start: float,
    end: float,
    limits: tuple[int, int],
    zone: tzinfo,
    tolerance: float,
    chunk_size: int,
    span: tuple[int, int],
    after: bool,
) -> tuple[_MinuteCounts, ScanStats]:
    """One part of the window (a worker's, or this process's); its last minutes are left open."""
    minutes = _MinuteCounts(*limits, after=after)
    stats = ScanStats(str(path))
    chunks = log_chunks(
        path,
        "api",
        zone=zone,
        start=start,
        end=end,
        stats=stats,
        tolerance=tolerance,
        chunk_size=chunk_size,
        span=span,
        after=after,
    )
    for chunk in chunks:
        lines, shaped = _api_chunk(chunk, minutes, zone)
        stats.skipped += lines - shaped
    return minutes, stats


def scan_api_log(
    path: Path, *, start: float, end: float, thresholds: SecurityThresholds, zone: tzinfo, tolerance: float
) -> tuple[list[RequestBurst], ScanStats]:
    """Request bursts in the API log's window, a large one in two processes (runbooks.logworkers)."""
    limits = (thresholds.requests_per_minute, math.ceil(tolerance / 60) + 1)
    stats = ScanStats(str(path))
    work = partial(_api_part, path, start, end, limits, zone, tolerance, logscan.CHUNK_SIZE)
    minutes = _MinuteCounts(*limits)
    with logworkers.lease() as workers:
        spans = window_spans(
            path,
            start=start,
            line_time=time_reader("api", zone),
            stats=stats,
            tolerance=tolerance,
            parts=workers.parts,
        )
        parts = workers.scan(work, spans)
    for part, part_stats in parts:
        minutes.merge(part)
        stats.add(part_stats)
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
