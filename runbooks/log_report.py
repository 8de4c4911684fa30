"""`logs [hours]`: errors and critical lines, top endpoints, response times and the 5xx rate.

Read from the error log and the API access log over the window asked for (runbooks.logscan); the
5xx ratio is set against the manual's error-rate target (< 0.1 %).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

from runbooks import logscan, logworkers
from runbooks.logcolumns import LEVELS, ChunkLines, access_parts, group, leftover, level_lines, requests
from runbooks.logscan import (
    DEFAULT_TOLERANCE_S,
    ScanStats,
    check_hours,
    json_fields,
    json_lines,
    log_chunks,
    time_reader,
    window_spans,
)

ERROR_RATE_TARGET = 0.001  # the manual's KPI: error rate < 0.1 %
TOP = 10
MESSAGE_MAX = 200
MESSAGES_KEPT = 5000  # distinct error messages held at once; the rarest go first
MS_MAX = 1e15  # as the columnar path: a longer number of milliseconds is not one
MS_HISTOGRAM = 1 << 16  # response times under this many milliseconds are counted in an array
# At a line's start, for the lines the numpy path leaves (runbooks.logcolumns.level_lines reads the same).
ERROR_LINE = re.compile(rb"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S* (DEBUG|INFO|WARNING|ERROR|CRITICAL) ([^\n]*)")
# At a line's start, for the lines the numpy path leaves (runbooks.logcolumns reads the same shape);
# no end-of-line anchor: what follows the milliseconds is ignored.
API_LINE = re.compile(rb"\S+ - - \d+(?:\.\d*)? \"([A-Z]+ [^ ?\"\n]*)[^\"\n]*\" (\d{3}) (\d+)")
NUMBER = re.compile(r"\d+")
ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


@dataclass(frozen=True)
class ErrorMessage:
    level: str  # ERROR or CRITICAL
    message: str  # numbers shown as '#', so one message with different ids counts once
    count: int


@dataclass(frozen=True)
class LogSummary:
    hours: int
    since: datetime
    until: datetime
    errors: int
    criticals: int
    top_messages: tuple[ErrorMessage, ...]
    requests: int
    top_endpoints: tuple[tuple[str, int], ...]  # ("GET /api/estimates/{id}", count)
    average_ms: float | None
    p95_ms: int | None
    server_errors: int  # 5xx
    error_rate_target: float
    sources: tuple[ScanStats, ...]

    @property
    def error_rate(self) -> float | None:
        return self.server_errors / self.requests if self.requests else None

    @property
    def meets_error_rate_target(self) -> bool | None:
        rate = self.error_rate
        return None if rate is None else rate < self.error_rate_target


@dataclass
class _ErrorTally:
    levels: Counter[str]
    messages: Counter[tuple[str, str]]

    def add(self, level: str, message: str, count: int = 1) -> None:
        self.levels[level] += count
        if level in ("ERROR", "CRITICAL"):
            self._count(level, NUMBER.sub("#", message.strip())[:MESSAGE_MAX], count)

    def add_errors(self, found: list[tuple[bytes, bytes]]) -> None:
        """ERROR and CRITICAL lines, in line order, as (level, message): decoded and their numbers
        replaced all at once, then counted once per distinct message."""
        if not found:
            return
        text = b"\n".join(message for _, message in found).decode("utf-8", "replace")
        normal = NUMBER.sub("#", text).split("\n")  # a message holds no newline
        for (level, message), n in Counter(zip((lv for lv, _ in found), normal, strict=True)).items():
            self.levels[level.decode()] += n
            self._count(level.decode(), message.strip()[:MESSAGE_MAX], n)

    def _count(self, level: str, message: str, count: int) -> None:
        self.messages[(level, message)] += count
        if len(self.messages) > 2 * MESSAGES_KEPT:  # flat memory whatever the log holds
            self.messages = Counter(dict(self.messages.most_common(MESSAGES_KEPT)))


_ERROR, _CRITICAL = LEVELS.index(b"ERROR"), LEVELS.index(b"CRITICAL")


def _error_chunk(chunk: bytes, tally: _ErrorTally) -> int:
    """Tally the chunk's levels and error messages; returns the lines in a known shape.

    Lines in the usual shape are read as numpy columns (levels counted at once, only ERROR and
    CRITICAL lines' messages read, each distinct one once), the others one by one, in line order."""
    lines = ChunkLines(chunk)
    fast = level_lines(lines)
    counts = np.bincount(fast.level, minlength=len(LEVELS)).tolist()
    serious = np.flatnonzero((fast.level == _ERROR) | (fast.level == _CRITICAL))
    index = fast.index[serious]
    spans = zip(fast.message[serious].tolist(), lines.ends[index].tolist(), strict=True)
    levels = [LEVELS[code] for code in fast.level[serious].tolist()]
    found = list(zip(index.tolist(), levels, [chunk[a:b] for a, b in spans], strict=True))
    slow = 0
    for at in leftover(lines, [fast.index]).tolist():
        match = ERROR_LINE.match(lines.line(at))
        if match:
            slow += 1
            counts[LEVELS.index(match[1])] += 1
            if match[1] in (b"ERROR", b"CRITICAL"):
                found.append((at, match[1], match[2]))
    found.sort()  # in line order: the first of equally frequent messages comes first
    for code, n in enumerate(counts):
        if n and code not in (_ERROR, _CRITICAL):
            tally.levels[LEVELS[code].decode()] += n
    tally.add_errors([(level, message) for _, level, message in found])
    shaped = len(fast.index) + slow
    for line in json_lines(chunk):
        fields = json_fields(line)
        if fields and isinstance(fields.get("level"), str) and "time" in fields:
            shaped += 1
            tally.add(str(fields["level"]).upper(), str(fields.get("message", "")))
    return shaped


def scan_error_log(
    path: Path, *, start: float, end: float, zone: tzinfo, tolerance: float
) -> tuple[_ErrorTally, ScanStats]:
    tally = _ErrorTally(Counter(), Counter())
    stats = ScanStats(str(path))
    for chunk in log_chunks(path, "error", zone=zone, start=start, end=end, stats=stats, tolerance=tolerance):
        stats.skipped += chunk.count(b"\n") - _error_chunk(chunk, tally)
    return tally, stats


@dataclass
class _RequestTally:
    endpoints: Counter[bytes]
    statuses: Counter[bytes]
    latencies: Counter[int]  # milliseconds
    # Lines read as columns count here first (one numpy addition a chunk), then `settle` folds them in.
    status_histogram: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(1000, np.int64))
    ms_histogram: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(MS_HISTOGRAM, np.int64))

    def add_columns(self, statuses: npt.NDArray[np.int64], ms: npt.NDArray[np.int64]) -> None:
        self.status_histogram += np.bincount(statuses, minlength=1000)
        small = ms < MS_HISTOGRAM
        self.ms_histogram += np.bincount(ms[small], minlength=MS_HISTOGRAM)
        if not small.all():
            self.latencies.update(ms[~small].tolist())

    def settle(self) -> None:
        for status in np.flatnonzero(self.status_histogram).tolist():
            self.statuses[b"%03d" % status] += int(self.status_histogram[status])
        for ms in np.flatnonzero(self.ms_histogram).tolist():
            self.latencies[ms] += int(self.ms_histogram[ms])
        self.status_histogram[:] = 0
        self.ms_histogram[:] = 0

    def add_json(self, fields: dict[str, object]) -> bool:
        method, path, status, ms = (fields.get(k) for k in ("method", "path", "status", "ms"))
        if not (isinstance(method, str) and isinstance(path, str) and isinstance(status, int | str)):
            return False
        latency = milliseconds(ms)
        if latency is None:
            return False
        self.endpoints[f"{method} {path.split('?', 1)[0]}".encode()] += 1
        self.statuses[str(status).encode()] += 1
        self.latencies[latency] += 1
        return True


def milliseconds(value: object) -> int | None:
    """A JSON line's `ms` as whole milliseconds, or None when it is not a number a response time
    can be ("12ms", NaN, infinity, negative, absurdly large): the line is then skipped, not fatal."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return round(number) if math.isfinite(number) and 0.0 <= number < MS_MAX else None


def _api_chunk(chunk: bytes, tally: _RequestTally) -> tuple[int, int]:
    """Tally the chunk's requests; returns (lines, lines in a known shape).

    Lines in the usual shape are read as numpy columns (runbooks.logcolumns), endpoints grouped
    in C; the others (JSON, junk, unusual fields) one by one."""
    lines = ChunkLines(chunk)
    handled = []
    for part in access_parts(lines):
        found = requests(lines, part)
        handled.append(found.index)
        rows, counts = group([found.endpoint_length, *found.endpoint_words().T])
        for endpoint, n in zip(found.endpoints(rows), counts.tolist(), strict=True):
            tally.endpoints[endpoint] += n
        tally.add_columns(found.status, found.ms)
    shaped = sum(len(index) for index in handled)
    for index in leftover(lines, handled).tolist():
        shaped += _slow_request(lines.line(index), tally)
    return len(lines), shaped


def _slow_request(line: bytes, tally: _RequestTally) -> bool:
    """Tally one line read alone; whether it had a known shape."""
    if line.startswith(b"{"):
        fields = json_fields(line)
        return bool(fields and "time" in fields and tally.add_json(fields))
    found = API_LINE.match(line)
    if found is None:
        return False
    tally.endpoints[found[1]] += 1
    tally.statuses[found[2]] += 1
    tally.latencies[int(found[3])] += 1
    return True


def _access_part(
    path: Path,
    start: float,
    end: float,
    zone: tzinfo,
    tolerance: float,
    chunk_size: int,
    span: tuple[int, int],
    after: bool,
) -> tuple[_RequestTally, ScanStats]:
    """One part of the window (a worker's, or this process's)."""
    tally = _RequestTally(Counter(), Counter(), Counter())
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
        lines, shaped = _api_chunk(chunk, tally)
        stats.skipped += lines - shaped
        if len(tally.endpoints) > 4 * MESSAGES_KEPT:  # ids in paths: fold them as we go
            tally.endpoints = _fold_endpoints(tally.endpoints)
    tally.settle()
    return tally, stats


def scan_access_log(
    path: Path, *, start: float, end: float, zone: tzinfo, tolerance: float
) -> tuple[_RequestTally, ScanStats]:
    """The access log's window, a large one in two processes (runbooks.logworkers)."""
    stats = ScanStats(str(path))
    reader = time_reader("api", zone)
    work = partial(_access_part, path, start, end, zone, tolerance, logscan.CHUNK_SIZE)
    tally = _RequestTally(Counter(), Counter(), Counter())
    with logworkers.lease() as workers:
        spans = window_spans(
            path, start=start, line_time=reader, stats=stats, tolerance=tolerance, parts=workers.parts
        )
        parts = workers.scan(work, spans)
    for part, part_stats in parts:
        tally.endpoints.update(part.endpoints)
        tally.statuses.update(part.statuses)
        tally.latencies.update(part.latencies)
        stats.add(part_stats)
    return tally, stats


def _fold_endpoints(raw: Counter[bytes]) -> Counter[bytes]:
    folded: Counter[bytes] = Counter()
    for endpoint, count in raw.items():
        folded[ID_SEGMENT.sub("/{id}", endpoint.decode("utf-8", "replace")).encode()] += count
    return folded


def _latency(latencies: Counter[int]) -> tuple[float | None, int | None]:
    """Average and 95th percentile (nearest rank) of a histogram of milliseconds."""
    histogram = sorted((int(ms), n) for ms, n in latencies.items())
    total = sum(n for _, n in histogram)
    if not total:
        return None, None
    average = sum(ms * n for ms, n in histogram) / total
    rank, seen = -(-95 * total // 100), 0
    for ms, n in histogram:
        seen += n
        if seen >= rank:
            return average, ms
    return average, histogram[-1][0]


def summarize_logs(
    *,
    error_log: Path | None,
    api_log: Path | None,
    hours: int = 24,
    now: datetime | None = None,
    error_rate_target: float = ERROR_RATE_TARGET,
    zone: tzinfo = UTC,
    tolerance: float = DEFAULT_TOLERANCE_S,
) -> LogSummary:
    """The `logs` report over the last `hours`; CPU and file work: run it in a thread."""
    until = now or datetime.now(UTC)
    since = until - timedelta(hours=check_hours(hours))
    start, end = since.timestamp(), until.timestamp()
    sources: list[ScanStats] = []
    errors = _ErrorTally(Counter(), Counter())
    requests = _RequestTally(Counter(), Counter(), Counter())
    if error_log is not None:
        errors, stats = scan_error_log(error_log, start=start, end=end, zone=zone, tolerance=tolerance)
        sources.append(stats)
    if api_log is not None:
        requests, stats = scan_access_log(api_log, start=start, end=end, zone=zone, tolerance=tolerance)
        sources.append(stats)
    endpoints = _fold_endpoints(requests.endpoints)
    average, p95 = _latency(requests.latencies)
    return LogSummary(
        hours=hours,
        since=since,
        until=until,
        errors=errors.levels["ERROR"],
        criticals=errors.levels["CRITICAL"],
        top_messages=tuple(ErrorMessage(lv, msg, n) for (lv, msg), n in errors.messages.most_common(TOP)),
        requests=requests.statuses.total(),
        top_endpoints=tuple((e.decode("utf-8", "replace"), n) for e, n in endpoints.most_common(TOP)),
        average_ms=average,
        p95_ms=p95,
        server_errors=sum(n for status, n in requests.statuses.items() if status.startswith(b"5")),
        error_rate_target=error_rate_target,
        sources=tuple(sources),
    )
