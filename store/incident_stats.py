"""Incidents over a report's window, per severity: how many, and how long until acknowledged and resolved.

Counted in SQL from the incidents table (store/incidents.py writes it): an incident belongs to the
window it was declared in; the means are over the incidents of that severity that have been
acknowledged (resolved) by now, in minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from store.db import Store


@dataclass(frozen=True)
class SeverityCounts:
    severity: str
    count: int
    mean_ack_minutes: float | None
    mean_resolve_minutes: float | None
    unresolved: int


async def incidents_by_severity(store: Store, *, since: datetime, until: datetime) -> list[SeverityCounts]:
    """Severities with at least one incident declared in [since, until), most severe first."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "SELECT severity, count(*) AS count,"
            " avg(extract(epoch FROM acked_at - declared_at)) / 60 AS ack,"
            " avg(extract(epoch FROM resolved_at - declared_at)) / 60 AS resolve,"
            " count(*) FILTER (WHERE resolved_at IS NULL) AS unresolved"
            " FROM incidents WHERE declared_at >= %s AND declared_at < %s"
            " GROUP BY severity ORDER BY severity",
            (since, until),
        )
        rows = await cur.fetchall()
    return [
        SeverityCounts(
            severity=row["severity"],
            count=int(row["count"]),
            mean_ack_minutes=float(row["ack"]) if row["ack"] is not None else None,
            mean_resolve_minutes=float(row["resolve"]) if row["resolve"] is not None else None,
            unresolved=int(row["unresolved"]),
        )
        for row in rows
    ]
