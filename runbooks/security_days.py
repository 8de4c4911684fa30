"""Security counts over one span of time (a finished day, or today so far), read from the app's logs.

What a report's security KPI needs, in a form that adds up across days: failed logins, the
addresses with a failed-login burst, the request bursts (address and minute over the limit) and
their addresses. The span is [start, end): a line timed exactly at midnight belongs to the day it
starts. A failed-login burst across the span's start (23:58 to 00:02) counts in the span holding
its last failure, so summing days misses no burst a single scan would find. Each log's identity
(device, inode), its first line's time and the span's byte range are noted, so a caller can tell
whether the file it read still held the whole span (after a rotation the new file starts later)
before keeping the counts. Logs are read by runbooks.security's scanners.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from runbooks.logscan import DEFAULT_TOLERANCE_S, Kind, ScanStats, find_window_start, open_log, time_reader
from runbooks.security import SecurityThresholds, scan_api_log, scan_auth_log

END_EPSILON_S = 1e-6  # the scanners' windows include their end: stop just short of the next span
FIRST_LINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class LogSpan:
    """Where the span was in one log file, and whether that file held all of it."""

    kind: str  # auth | api
    path: str
    device: int
    inode: int
    first_at: float | None  # the file's first timed line (epoch seconds); None: no timed line
    start_offset: int  # the span's bytes in the file (line starts, give or take the scan tolerance)
    end_offset: int
    start: float  # the span, epoch seconds

    @property
    def holds_span(self) -> bool:
        """The file began before the span did (not a file rotated in during it, nor empty)."""
        return self.first_at is not None and self.first_at <= self.start

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "device": self.device,
            "inode": self.inode,
            "first_at": self.first_at,
            "bytes": [self.start_offset, self.end_offset],
        }


@dataclass(frozen=True)
class SpanCounts:
    start: datetime
    end: datetime
    failed_logins: int
    burst_addresses: tuple[str, ...]
    request_bursts: int
    request_addresses: tuple[str, ...]
    logs: tuple[LogSpan, ...]

    @property
    def complete(self) -> bool:
        """Every log read held the whole span: the counts may be kept."""
        return all(log.holds_span for log in self.logs)


def day_span(day: datetime, zone: tzinfo) -> tuple[datetime, datetime]:
    """The calendar day starting at `day`'s date in `zone`: [its midnight, the next midnight)."""
    local = day.astimezone(zone).date()
    start = datetime(local.year, local.month, local.day, tzinfo=zone)
    after = local + timedelta(days=1)
    return start, datetime(after.year, after.month, after.day, tzinfo=zone)


def _log_span(kind: Kind, path: Path, start: float, end: float, zone: tzinfo) -> LogSpan:
    reader = time_reader(kind, zone)
    stats = ScanStats(str(path))
    with open_log(path) as f:
        info = os.fstat(f.fileno())
        first_at = None
        for line in f.read(FIRST_LINE_BYTES).split(b"\n")[:-1]:
            first_at = reader(line)
            if first_at is not None:
                break
        lo = find_window_start(f, info.st_size, start, reader, stats)
        hi = find_window_start(f, info.st_size, end, reader, stats)
    return LogSpan(kind, str(path), info.st_dev, info.st_ino, first_at, lo, hi, start)


def _auth_counts(
    path: Path, start: float, end: float, thresholds: SecurityThresholds, zone: tzinfo, tolerance: float
) -> tuple[int, tuple[str, ...]]:
    """Failed logins in [start, end], and the addresses whose burst ends in it.

    Bursts are looked for from one burst window before the span, so one that straddles the span's
    start counts (in the span holding its last failure); failures count only inside the span."""
    lead = start - thresholds.failed_login_window.total_seconds()
    found, _ = scan_auth_log(path, start=lead, end=end, thresholds=thresholds, zone=zone, tolerance=tolerance)
    before, _ = scan_auth_log(
        path, start=lead, end=start - END_EPSILON_S, thresholds=thresholds, zone=zone, tolerance=tolerance
    )
    failed = sum(found.total.values()) - sum(before.total.values())
    limit = thresholds.failed_logins
    bursts = sorted(a for a, (n, _, last) in found.busiest.items() if n > limit and last >= start)
    return failed, tuple(bursts)


def count_span(
    *,
    auth_log: Path | None,
    api_log: Path | None,
    start: datetime,
    end: datetime,
    thresholds: SecurityThresholds,
    zone: tzinfo,
    tolerance: float = DEFAULT_TOLERANCE_S,
) -> SpanCounts:
    """The span's counts; file work and CPU: run it in a thread."""
    s, e = start.timestamp(), end.timestamp() - END_EPSILON_S
    logs: list[LogSpan] = []
    failed = 0
    bursts: tuple[str, ...] = ()
    if auth_log is not None:
        logs.append(_log_span("auth", auth_log, s, e, zone))
        failed, bursts = _auth_counts(auth_log, s, e, thresholds, zone, tolerance)
    requests: list[str] = []
    if api_log is not None:
        logs.append(_log_span("api", api_log, s, e, zone))
        found, _ = scan_api_log(
            api_log, start=s, end=e, thresholds=thresholds, zone=zone, tolerance=tolerance
        )
        requests = [b.address for b in found]
    return SpanCounts(start, end, failed, bursts, len(requests), tuple(sorted(set(requests))), tuple(logs))
