"""Read the part of an application log that falls in a time window, by each line's own time.

Logs are appended in time order, so the window's start is found by a binary search on byte offsets
(each probe resyncs to the next line start and reads that line's time) and only the window is read,
in fixed-size chunks of whole lines: a 1 GB log costs the window and a few probes, in flat memory.
Lines may be slightly out of order (several writers): the search aims `tolerance` seconds early and
the chunks near either edge are filtered line by line; chunks well inside the window pass whole.

Shapes (SPEC, "The app's logs"), and JSON lines with the same facts for each:
    auth   <client address> <ISO 8601 time> …            (failed: contains "authentication failed")
    api    <client address> - - <epoch seconds> "<METHOD> <path>" <status> <milliseconds>
    error  <ISO 8601 time> <LEVEL> <message>
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from itertools import pairwise
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from core.errors import RunbookFailed, UsageError

Kind = Literal["auth", "api", "error"]
CHUNK_SIZE = 2 * 1024 * 1024
PROBE_SIZE = 64 * 1024  # the search stops when the interval is this small; a probe reads at most this
PEEK_SIZE = 4096  # a probe reads this much at a time until it has a whole timed line
PEEK_LINES = 50  # lines looked back from a chunk's end for its last time
LINE_MAX = 16 * 1024 * 1024  # a longer line is dropped as junk: memory stays flat
BISECT_STOP = 512  # bytes: within a chunk, the edges are found to this precision
DEFAULT_TOLERANCE_S = 60.0
HOURS_MAX = 24 * 31
LineTime = Callable[[bytes], float | None]
NEWLINE = 10
EPOCH_MAX = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last second a datetime holds


@dataclass
class ScanStats:
    """What reading one log cost and found."""

    path: str
    size: int = 0
    window_offset: int = 0  # where the window starts in the file
    bytes_read: int = 0  # probes included
    lines: int = 0  # lines in the window
    skipped: int = 0  # lines in the window in no known shape

    @property
    def parsed(self) -> int:
        return self.lines - self.skipped

    def add(self, part: ScanStats) -> None:
        """Count in what reading one part of the window (in a worker) cost and found."""
        self.bytes_read += part.bytes_read
        self.lines += part.lines
        self.skipped += part.skipped


def check_hours(hours: int) -> int:
    if not 1 <= hours <= HOURS_MAX:
        raise UsageError("logs.bad_hours", limit=HOURS_MAX)
    return hours


def plausible_time(moment: float) -> float | None:
    """`moment` if it is an epoch a log line can carry (finite, 1970 to 9999), else None: a hostile
    line's 1e999 or 400-digit epoch must not reach a minute count or a datetime."""
    return moment if math.isfinite(moment) and 0.0 <= moment <= EPOCH_MAX else None


def parse_time(text: str | bytes, zone: tzinfo = UTC) -> float | None:
    """ISO 8601 (naive times are in `zone`) or epoch seconds, as epoch seconds; None if neither."""
    raw = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    if raw[:1].isdigit() and "-" not in raw[:5]:
        try:
            return plausible_time(float(raw))
        except ValueError:
            return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    try:
        return plausible_time(moment.timestamp())
    except (OverflowError, ValueError):  # 0001-01-01 in a zone east of UTC
        return None


def json_fields(line: bytes) -> dict[str, Any] | None:
    """The object on a JSON line, or None when the line is not one."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def json_time(fields: dict[str, Any], zone: tzinfo) -> float | None:
    value = fields.get("time")
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return plausible_time(float(value))
        except OverflowError:  # an integer too large for a float
            return None
    return parse_time(value, zone) if isinstance(value, str) and value else None


# A line's own time, read only from a line in its log's shape: a junk line whose word in the time's
# place happens to be a number is untimed, not a line from 1970 that would mislead the search.
LINE_TIMES: dict[Kind, re.Pattern[bytes]] = {
    "auth": re.compile(rb"\S+ (\d{4}-\d\d-\d\dT\S*)"),
    "api": re.compile(rb"\S+ - - (\d+(?:\.\d*)?) \""),
    "error": re.compile(rb"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S*)(?: |$)"),
}


def time_reader(kind: Kind, zone: tzinfo = UTC) -> LineTime:
    """The function that reads a line's own time for this kind of log (None: the line has none)."""
    shape = LINE_TIMES[kind]

    def read(line: bytes) -> float | None:
        if line.startswith(b"{"):
            fields = json_fields(line)
            return json_time(fields, zone) if fields else None
        found = shape.match(line)
        if found is None:
            return None
        return parse_time(found[1].replace(b",", b".") if kind == "error" else found[1], zone)

    return read


def _first_timed_line(f: BinaryIO, offset: int, line_time: LineTime, stats: ScanStats) -> float | None:
    """Time of the first line that starts after `offset` and has one, reading at most one probe."""
    f.seek(offset)
    block = b""
    while len(block) < PROBE_SIZE:
        more = f.read(PEEK_SIZE)
        stats.bytes_read += len(more)
        block += more
        lines = block.split(b"\n")
        for line in lines[1:-1] if offset else lines[:-1]:  # skip the partial first and last lines
            moment = line_time(line)
            if moment is not None:
                return moment
        if not more:
            return None
    return None


def find_window_start(f: BinaryIO, size: int, target: float, line_time: LineTime, stats: ScanStats) -> int:
    """A line-start offset before which every line is older than `target` (give or take a probe)."""
    lo, hi = 0, size
    while hi - lo > PROBE_SIZE:
        mid = (lo + hi) // 2
        moment = _first_timed_line(f, mid, line_time, stats)
        if moment is None or moment >= target:
            hi = mid
        else:
            lo = mid
    if lo == 0:
        return 0
    f.seek(lo - 1)
    skipped = f.readline()  # the rest of the line that straddles lo
    stats.bytes_read += len(skipped)
    return lo - 1 + len(skipped)


def _time_at(chunk: bytes, at: int, line_time: LineTime) -> float | None:
    """Time of the first timed line starting at or after line start `at`; after the chunk's last
    timed line, that line's time (untimed lines go with the line before them). A long run of
    untimed lines (a traceback, junk) never reads as the window's end: the lines after it count."""
    start = at
    while at < len(chunk):
        stop = chunk.find(b"\n", at)
        moment = line_time(chunk[at:stop])
        if moment is not None:
            return moment
        at = stop + 1
    return _last_time(chunk, line_time, end=start, lines=None) if start > 0 else None


def _line_start(chunk: bytes, at: int) -> int:
    """The first line start at or after byte `at` of a chunk of whole lines."""
    return 0 if at <= 0 else chunk.find(b"\n", at - 1) + 1 or len(chunk)


def _bisect(chunk: bytes, moment: float, line_time: LineTime) -> tuple[int, int]:
    """Line starts (lo, hi), a few hundred bytes apart: lines before lo are older than `moment`,
    lines from hi on are not (for lines in time order; the caller's tolerance covers the rest)."""
    lo, hi = 0, len(chunk)
    while hi - lo > BISECT_STOP:
        mid = _line_start(chunk, (lo + hi) // 2)
        if mid >= hi:  # one long line spans the rest
            break
        found = _time_at(chunk, mid, line_time)
        if found is None or found >= moment:
            hi = mid
        else:
            lo = mid
    return _line_start(chunk, lo), _line_start(chunk, hi)


def split_offset(chunk: bytes, moment: float, line_time: LineTime) -> int:
    """Where lines timed `moment` or later begin in a chunk of lines in time order: the first line,
    near the bisection point, whose own time is not older (untimed lines stay with the line before)."""
    at, hi = _bisect(chunk, moment, line_time)
    while at < hi:
        found = _time_at(chunk, at, line_time)
        if found is None or found >= moment:
            break
        at = chunk.find(b"\n", at) + 1
    return at


def _by_own_time(part: bytes, line_time: LineTime, start: float, end: float, keep: bool = False) -> bytes:
    """The lines of `part` timed in [start, end]; an untimed line goes with the line before it
    (`keep`: whether the line before `part` was in the window)."""
    kept: list[bytes] = []
    for line in part.split(b"\n")[:-1]:
        moment = line_time(line)
        if moment is not None:
            keep = start <= moment <= end
        if keep:
            kept.append(line)
    return b"\n".join(kept) + b"\n" if kept else b""


def _last_time(
    chunk: bytes, line_time: LineTime, *, end: int | None = None, lines: int | None = PEEK_LINES
) -> float | None:
    """Time of the last timed line of a chunk of whole lines, or of those before line start `end`
    (looking `lines` lines back; None: as far as it takes)."""
    stop = (len(chunk) if end is None else end) - 1
    looked = 0
    while lines is None or looked < lines:
        begin = chunk.rfind(b"\n", 0, stop) + 1
        moment = line_time(chunk[begin:stop])
        if moment is not None or begin == 0:
            return moment
        stop = begin - 1
        looked += 1
    return None


def _window_part(
    chunk: bytes, line_time: LineTime, start: float, end: float, tolerance: float, after: bool = False
) -> bytes:
    """The chunk's lines in the window: the middle passes whole, only the lines near an edge
    (within `tolerance` of it, where out-of-order lines may be) are judged one by one. `after`:
    the previous chunk's last line was in the window (untimed lines starting this one go with it)."""
    if after:  # a chunk well inside the window passes whole, without a copy
        first, last = _time_at(chunk, 0, line_time), _last_time(chunk, line_time)
        if first is not None and last is not None and start + tolerance <= first and last <= end - tolerance:
            return chunk
    a, _ = _bisect(chunk, start - tolerance, line_time)
    _, b = _bisect(chunk, start + tolerance, line_time)
    c, _ = _bisect(chunk, end - tolerance, line_time)
    _, d = _bisect(chunk, end + tolerance, line_time)
    if b >= c:  # the window is narrower than the tolerance here: judge it all
        return _by_own_time(chunk[a:d], line_time, start, end, after and a == 0)
    head = _by_own_time(chunk[a:b], line_time, start, end, after and a == 0) if a < b else b""
    tail = _by_own_time(chunk[c:d], line_time, start, end, b < c) if c < d else b""  # after the middle
    return head + chunk[b:c] + tail


def _whole_lines(
    f: BinaryIO, offset: int, chunk_size: int, stats: ScanStats, stop: int | None = None
) -> Iterator[bytes]:
    """Blocks of whole lines. A line longer than LINE_MAX is dropped (counted as skipped), so
    memory stays flat and a line is copied once however many blocks it spans."""
    f.seek(offset)
    rest: list[bytes] = []  # the start of a line that spans blocks
    held = 0
    dropping = False  # inside a line over LINE_MAX
    while block := f.read(chunk_size if stop is None else min(chunk_size, stop - f.tell())):
        stats.bytes_read += len(block)
        cut = block.rfind(b"\n")
        if cut < 0:
            held += len(block)
            if held > LINE_MAX and not dropping:
                rest, dropping = [], True
            if not dropping:
                rest.append(block)
            continue
        if dropping:
            stats.skipped += 1
            first_end = block.find(b"\n") + 1
            rest, dropping, block, cut = [], False, block[first_end:], cut - first_end
        if cut >= 0 and not rest and cut == len(block) - 1:
            yield block  # the usual case: no copy
        elif cut >= 0:
            yield b"".join((*rest, memoryview(block)[: cut + 1]))
        rest = [block[cut + 1 :]] if cut + 1 < len(block) else []
        held = len(block) - cut - 1
    if rest and not dropping:
        yield b"".join(rest) + b"\n"  # a last line still being written
    elif dropping:
        stats.skipped += 1


def window_chunks(
    f: BinaryIO,
    *,
    start: float,
    end: float,
    line_time: LineTime,
    stats: ScanStats,
    tolerance: float = DEFAULT_TOLERANCE_S,
    chunk_size: int | None = None,
    span: tuple[int, int] | None = None,
    after: bool = False,
) -> Iterator[bytes]:
    """Chunks of whole lines (each ending in a newline) holding the lines timed in [start, end].

    `span`: only these bytes (line starts, from `window_spans`), the window's start already found;
    `after`: the span follows another part of the window (untimed lines at its start are kept)."""
    if span is None:
        f.seek(0, 2)
        stats.size = f.tell()
        offset = find_window_start(f, stats.size, start - tolerance, line_time, stats)
        stats.window_offset = offset
        span = (offset, stats.size)
    for chunk in _whole_lines(f, span[0], chunk_size or CHUNK_SIZE, stats, span[1]):
        first = _time_at(chunk, 0, line_time)
        if first is not None and first > end + tolerance:
            return
        kept = _window_part(chunk, line_time, start, end, tolerance, after)
        after = kept.endswith(chunk[chunk.rfind(b"\n", 0, -1) + 1 :]) if kept else False
        if kept:
            stats.lines += int(np.count_nonzero(np.frombuffer(kept, np.uint8) == NEWLINE))
            yield kept


def open_log(path: Path) -> BinaryIO:
    """The log opened for reading, or one clear error naming it."""
    try:
        return path.open("rb")
    except OSError as exc:
        raise RunbookFailed(
            "logs.unreadable", path=str(path), detail=exc.strerror or type(exc).__name__
        ) from None


def log_chunks(
    path: Path,
    kind: Kind,
    *,
    zone: tzinfo,
    start: float,
    end: float,
    stats: ScanStats,
    tolerance: float = DEFAULT_TOLERANCE_S,
    chunk_size: int | None = None,
    span: tuple[int, int] | None = None,
    after: bool = False,
) -> Iterator[bytes]:
    """`window_chunks` of the log at `path`, each line timed as its `kind` says; the file is open
    while they are read."""
    with open_log(path) as f:
        yield from window_chunks(
            f,
            start=start,
            end=end,
            line_time=time_reader(kind, zone),
            stats=stats,
            tolerance=tolerance,
            chunk_size=chunk_size,
            span=span,
            after=after,
        )


def json_lines(chunk: bytes) -> list[bytes]:
    """The JSON-object lines of a chunk (cheap to rule out: most chunks have none)."""
    if not chunk.startswith(b"{") and b"\n{" not in chunk:
        return []
    return [line for line in chunk.split(b"\n") if line.startswith(b"{")]


def window_spans(
    path: Path,
    *,
    start: float,
    line_time: LineTime,
    stats: ScanStats,
    tolerance: float,
    parts: Callable[[int], int],
) -> list[tuple[int, int]]:
    """The window's bytes (found as `window_chunks` finds them) cut at line starts into up to
    `parts(window bytes)` spans, for as many processes (runbooks.logworkers.Lease.parts)."""
    with open_log(path) as f:
        f.seek(0, 2)
        stats.size = f.tell()
        offset = find_window_start(f, stats.size, start - tolerance, line_time, stats)
        stats.window_offset = offset
        count = parts(stats.size - offset)
        cuts = [offset]
        for part in range(1, count):
            f.seek(offset + (stats.size - offset) * part // count)
            skipped = f.readline()  # to the next line start
            stats.bytes_read += len(skipped)
            if cuts[-1] < f.tell() < stats.size:
                cuts.append(f.tell())
        cuts.append(stats.size)
    return list(pairwise(cuts))
