"""The sample Garden DX: a small, believable operated system for the embedded default and demos.

`create_sample_garden` fills an empty database from `sql/garden_dx_sample.sql` (companies, users,
activity log, estimates, price master); `create_sample_cache` puts a few keys in the target Redis
so `cache stats` has something to show.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg import sql
from psycopg.rows import tuple_row

log = logging.getLogger(__name__)

SAMPLE_SQL = "garden_dx_sample.sql"
SESSION_TTL_S = 14 * 24 * 3600
ESTIMATE_CACHE_TTL_S = 30 * 24 * 3600
LOGIN_RATE_TTL_S = 15 * 60
CACHED_ESTIMATES = 12
SESSIONS = 6
CACHED_ESTIMATES_SQL = """
    SELECT id, company_id, title, total_amount::bigint, status
    FROM estimates ORDER BY id LIMIT %s
"""
SESSION_USERS_SQL = "SELECT id, company_id, role FROM users WHERE is_active ORDER BY id LIMIT %s"


def sample_sql() -> str:
    """The sample schema and rows, as shipped in the package."""
    return (resources.files("runbooks") / "sql" / SAMPLE_SQL).read_text(encoding="utf-8")


async def garden_schema_exists(conn: psycopg.AsyncConnection[Any]) -> bool:
    """True when the database already holds the Garden DX tables (sample or real)."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute("SELECT to_regclass('public.companies') IS NOT NULL")
        row = await cur.fetchone()
    return bool(row and row[0])


async def create_sample_garden(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create the garden_dx schema and sample rows in an empty database, all or nothing."""
    async with conn.transaction():
        await conn.execute(sample_sql().encode())


async def create_sample_cache(
    *, redis: aioredis.Redis, conn: psycopg.AsyncConnection[Any], prefix: str = ""
) -> int:
    """Sessions, cached estimates and a login rate counter as the app writes them; returns count."""
    # Plain tuples whatever row factory the caller's connection uses.
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(CACHED_ESTIMATES_SQL, (CACHED_ESTIMATES,))
        estimates = await cur.fetchall()
        await cur.execute(SESSION_USERS_SQL, (SESSIONS,))
        users = await cur.fetchall()
    async with redis.pipeline(transaction=True) as pipe:
        for user_id, company_id, role in users:
            # Deterministic stand-ins for session tokens: nothing here is a credential.
            key = f"{prefix}session:sample{user_id:04d}"
            pipe.hset(key, mapping={"user_id": user_id, "company_id": company_id, "role": role})
            pipe.expire(key, SESSION_TTL_S)
        for estimate_id, company_id, title, total, status in estimates:
            body = {
                "id": estimate_id,
                "company_id": company_id,
                "title": title,
                "total_amount": total,
                "status": status,
            }
            pipe.set(
                f"{prefix}cache:estimate:{estimate_id}",
                json.dumps(body, ensure_ascii=False),
                ex=ESTIMATE_CACHE_TTL_S,
            )
        pipe.set(f"{prefix}cache:price_master:1:version", "25")
        pipe.set(f"{prefix}cache:price_master:2:version", "25")
        pipe.set(f"{prefix}rate:login:203.0.113.66", "7", ex=LOGIN_RATE_TTL_S)
        await pipe.execute()
    return len(users) + len(estimates) + 3


async def prepare_sample_system(
    *, admin_url: str, databases: Sequence[str], garden_database_url: str, garden_redis_url: str
) -> None:
    """Create the missing databases, then fill garden_dx and its cache once (later runs keep data)."""
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
        cur = await admin.execute("SELECT datname FROM pg_database")
        existing = {str(row[0]) for row in await cur.fetchall()}
        for name in databases:
            if name not in existing:
                await admin.execute(
                    sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                        sql.Identifier(name)
                    )
                )
                log.info("embedded database %s created", name)
    async with await psycopg.AsyncConnection.connect(garden_database_url) as garden:
        if await garden_schema_exists(garden):
            return
        await create_sample_garden(garden)
        cache = aioredis.Redis.from_url(garden_redis_url)
        try:
            await create_sample_cache(redis=cache, conn=garden)
        finally:
            await cache.aclose()
        log.info("sample garden_dx created")
