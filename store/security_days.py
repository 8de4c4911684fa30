"""Security counts of finished days, kept in the bot's store (migration 0010).

A day is kept once: the first writer wins (the nightly schedule, or the first report that needed it)
and later ones change nothing, so two replicas or a report racing the nightly never count a day
twice. Rows are final: a log rotated or rewritten later does not change a day already kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg.types.json import Jsonb

from store.db import Store

COLUMNS = "day, failed_logins, burst_addresses, request_bursts, request_addresses, sources, kept_at, kept_by"


@dataclass(frozen=True)
class SecurityDay:
    day: date
    failed_logins: int
    burst_addresses: tuple[str, ...]  # addresses with a failed-login burst that day
    request_bursts: int  # (address, minute) pairs over the request limit
    request_addresses: tuple[str, ...]
    sources: tuple[dict[str, Any], ...]  # per log: path, device, inode, first line time, byte range
    kept_at: datetime | None = None
    kept_by: str = ""


def _day(row: dict[str, Any]) -> SecurityDay:
    return SecurityDay(
        day=row["day"],
        failed_logins=int(row["failed_logins"]),
        burst_addresses=tuple(row["burst_addresses"]),
        request_bursts=int(row["request_bursts"]),
        request_addresses=tuple(row["request_addresses"]),
        sources=tuple(row["sources"]),
        kept_at=row["kept_at"],
        kept_by=row["kept_by"],
    )


async def kept_days(
    store: Store, *, zone: str, setup: str, first: date, last: date
) -> dict[date, SecurityDay]:
    """The days in [first, last] kept for this zone and setup."""
    async with store.connection() as conn:
        cur = await conn.execute(
            f"SELECT {COLUMNS} FROM security_days"
            " WHERE zone = %s AND setup = %s AND day BETWEEN %s AND %s ORDER BY day",
            (zone, setup, first, last),
        )
        rows = await cur.fetchall()
    return {row["day"]: _day(row) for row in rows}


async def keep_days(
    store: Store, days: Sequence[SecurityDay], *, zone: str, setup: str, at: datetime, by: str
) -> int:
    """Keep the days not kept yet; how many this call kept (a day already kept stays as it was)."""
    kept = 0
    async with store.connection() as conn:
        for d in days:
            cur = await conn.execute(
                "INSERT INTO security_days (day, zone, setup, failed_logins, burst_addresses,"
                " request_bursts, request_addresses, sources, kept_at, kept_by)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    d.day,
                    zone,
                    setup,
                    d.failed_logins,
                    list(d.burst_addresses),
                    d.request_bursts,
                    list(d.request_addresses),
                    Jsonb(list(d.sources)),
                    at,
                    by,
                ),
            )
            kept += cur.rowcount
    return kept
