"""Job locks in the bot's PostgreSQL, the fence beside the Redis lock (store/coordination.py).

Redis may restart empty or evict a key; this row does not. A lock is taken only when the Redis key
and this row are both free (or this row has expired: its holder stopped renewing it), and the
holder renews both on every heartbeat. A holder whose row was taken or removed has lost its lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from store.db import Store


async def claim(
    store: Store, name: str, *, token: str, holder: dict[str, Any], ttl_seconds: float
) -> dict[str, Any] | None:
    """Record the lock as ours unless another holder's row is still live; return that holder then."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO job_locks (name, token, holder, expires_at)"
            " VALUES (%s, %s, %s, now() + make_interval(secs => %s))"
            " ON CONFLICT (name) DO UPDATE SET token = EXCLUDED.token, holder = EXCLUDED.holder,"
            " taken_at = now(), expires_at = EXCLUDED.expires_at"
            " WHERE job_locks.expires_at <= now() OR job_locks.token = EXCLUDED.token"
            " RETURNING token",
            (name, token, Jsonb(holder), ttl_seconds),
        )
        if await cur.fetchone() is not None:
            return None
        cur = await conn.execute("SELECT holder FROM job_locks WHERE name = %s", (name,))
        row = await cur.fetchone()
    return dict(row["holder"]) if row is not None else {}


async def renew(store: Store, name: str, *, token: str, ttl_seconds: float) -> bool:
    """Extend our row; False when it is no longer ours (taken by another holder, or removed)."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "UPDATE job_locks SET expires_at = now() + make_interval(secs => %s)"
            " WHERE name = %s AND token = %s",
            (ttl_seconds, name, token),
        )
        return cur.rowcount == 1


async def release(store: Store, name: str, *, token: str) -> None:
    async with store.connection() as conn:
        await conn.execute("DELETE FROM job_locks WHERE name = %s AND token = %s", (name, token))


async def holder(store: Store, name: str) -> dict[str, Any] | None:
    """Who holds the lock by this record, or None when it is free or expired."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "SELECT holder FROM job_locks WHERE name = %s AND expires_at > now()", (name,)
        )
        row = await cur.fetchone()
    return dict(row["holder"]) if row is not None else None


async def break_for_jobs(store: Store, name: str, job_ids: Sequence[int]) -> int:
    """Free the lock when one of these (dead, interrupted) jobs holds it."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "DELETE FROM job_locks WHERE name = %s AND holder->>'job_id' = ANY(%s)",
            (name, [str(j) for j in job_ids]),
        )
        return cur.rowcount


async def release_for_job(store: Store, job_id: int) -> int:
    """Free every lock row this (finished) job still holds: its release ran while the store was down."""
    async with store.connection() as conn:
        cur = await conn.execute("DELETE FROM job_locks WHERE holder->>'job_id' = %s", (str(job_id),))
        return cur.rowcount
