"""Probe history in the bot's store: each minute's answer of each probed path under the target API.

This history is what availability and response time are measured from when no Prometheus is
configured: `window_stats` over a report's window, `daily_stats` for the chart, p95 computed in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from store.db import Store

STATS = (
    "count(*) AS samples,"
    " count(*) FILTER (WHERE healthy) AS healthy,"
    " count(*) FILTER (WHERE status_code >= 500 OR status_code IS NULL) AS errors,"
    " avg(latency_ms) AS avg_ms,"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_ms"
)


@dataclass(frozen=True)
class ProbeRecord:
    """One probe, as written (runbooks.probes.ProbeResult has these fields)."""

    path: str
    probed_at: datetime
    status_code: int | None
    healthy: bool
    latency_ms: float | None
    error: str | None = None


@dataclass(frozen=True)
class ProbeStats:
    """Probes over a window (all paths together): what availability and response time come from."""

    samples: int
    healthy: int
    errors: int  # 5xx answers and no answer at all
    avg_ms: float | None
    p95_ms: float | None

    @property
    def availability_percent(self) -> float | None:
        return 100.0 * self.healthy / self.samples if self.samples else None

    @property
    def error_percent(self) -> float | None:
        return 100.0 * self.errors / self.samples if self.samples else None


@dataclass(frozen=True)
class DailyProbeStats:
    day: date  # in the zone asked for
    stats: ProbeStats


def _stats(row: dict[str, Any]) -> ProbeStats:
    return ProbeStats(
        samples=int(row["samples"]),
        healthy=int(row["healthy"]),
        errors=int(row["errors"]),
        avg_ms=float(row["avg_ms"]) if row["avg_ms"] is not None else None,
        p95_ms=float(row["p95_ms"]) if row["p95_ms"] is not None else None,
    )


async def record_probes(store: Store, probes: Sequence[ProbeRecord]) -> None:
    if not probes:
        return
    async with store.connection() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO probe_results (path, probed_at, status_code, healthy, latency_ms, error)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [(p.path, p.probed_at, p.status_code, p.healthy, p.latency_ms, p.error) for p in probes],
        )


async def latest_health(store: Store, *, since: datetime) -> dict[str, bool]:
    """Each path's newest probe since `since`: healthy or not (a path not probed since is absent)."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT ON (path) path, healthy FROM probe_results WHERE probed_at >= %s"
            " ORDER BY path, probed_at DESC, id DESC",
            (since,),
        )
        rows = await cur.fetchall()
    return {row["path"]: bool(row["healthy"]) for row in rows}


async def window_stats(store: Store, *, since: datetime, until: datetime) -> ProbeStats:
    async with store.connection() as conn:
        cur = await conn.execute(
            f"SELECT {STATS} FROM probe_results WHERE probed_at >= %s AND probed_at < %s",
            (since, until),
        )
        row = await cur.fetchone()
    assert row is not None
    return _stats(row)


async def daily_stats(store: Store, *, since: datetime, until: datetime, zone: str) -> list[DailyProbeStats]:
    """Per calendar day in `zone` (an IANA name), oldest first; days without probes are absent."""
    async with store.connection() as conn:
        cur = await conn.execute(
            f"SELECT (probed_at AT TIME ZONE %(zone)s)::date AS day, {STATS} FROM probe_results"
            " WHERE probed_at >= %(since)s AND probed_at < %(until)s GROUP BY 1 ORDER BY 1",
            {"zone": zone, "since": since, "until": until},
        )
        rows = await cur.fetchall()
    return [DailyProbeStats(day=row["day"], stats=_stats(row)) for row in rows]


async def prune_probes(store: Store, *, before: datetime) -> int:
    """Drop history older than `before` (retention); returns how many rows went."""
    async with store.connection() as conn:
        cur = await conn.execute("DELETE FROM probe_results WHERE probed_at < %s", (before,))
        return cur.rowcount
