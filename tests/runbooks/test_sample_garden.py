"""The sample Garden DX loads into a real PostgreSQL, whole, deterministic and in Japanese."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from runbooks.sample_garden import (
    create_sample_cache,
    create_sample_garden,
    garden_schema_exists,
    sample_sql,
)
from tests.support.servers import REDIS_URL, redis_prefix, throwaway_database

EXPECTED_ROWS = {
    "companies": 4,
    "users": 12,
    "user_activity_logs": 420,
    "estimates": 37,
    "estimate_items": 110,
    "price_master": 50,
}
BCRYPT_SHAPE = re.compile(r"^\$2b\$12\$[./A-Za-z0-9]{53}$")

Conn = psycopg.AsyncConnection[Any]


@pytest.fixture
async def empty_db() -> AsyncIterator[Conn]:
    with throwaway_database("gbt_sample") as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            yield conn


@pytest.fixture(scope="module")
async def garden() -> AsyncIterator[Conn]:
    """One loaded sample shared by the tests that only read it."""
    with throwaway_database("gbt_sample") as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await create_sample_garden(conn)
            yield conn


async def scalar(conn: Conn, query: str) -> Any:
    cur = await conn.execute(query.encode())
    row = await cur.fetchone()
    assert row is not None
    return row[0]


def test_sample_sql_is_shipped_as_package_data() -> None:
    text = sample_sql()
    for table in EXPECTED_ROWS:
        assert f"CREATE TABLE {table} (" in text
    assert "佐藤造園" in text


async def test_sample_has_the_expected_rows(garden: Conn) -> None:
    counts = {table: await scalar(garden, f"SELECT count(*) FROM {table}") for table in EXPECTED_ROWS}
    assert counts == EXPECTED_ROWS


async def test_japanese_text_survives_the_round_trip(garden: Conn) -> None:
    cur = await garden.execute(
        "SELECT u.name, c.name FROM users u JOIN companies c ON c.id = u.company_id WHERE u.email = %s",
        ("test@garden-dx.example",),
    )
    assert await cur.fetchone() == ("テスト太郎", "佐藤造園")
    names = {row[0] for row in await (await garden.execute("SELECT name FROM users")).fetchall()}
    assert {"山田花子", "Emily Carter"} <= names
    categories = {
        row[0] for row in await (await garden.execute("SELECT category FROM price_master")).fetchall()
    }
    assert {"植木", "砂利", "芝生", "剪定"} <= categories


async def test_activity_spans_the_last_fourteen_days(garden: Conn) -> None:
    cur = await garden.execute(
        "SELECT min(created_at) >= now() - interval '14 days',"
        " max(created_at) <= now(),"
        " max(created_at) >= now() - interval '1 day',"
        " count(DISTINCT created_at::date) >= 14"
        " FROM user_activity_logs"
    )
    assert await cur.fetchone() == (True, True, True, True)
    failed = await scalar(garden, "SELECT count(*) FROM user_activity_logs WHERE action = 'login_failed'")
    assert failed > 0


async def test_estimate_totals_are_their_lines_plus_tax(garden: Conn) -> None:
    mismatched = await scalar(
        garden,
        "SELECT count(*) FROM estimates e"
        " JOIN (SELECT estimate_id, sum(amount) AS subtotal FROM estimate_items"
        "       GROUP BY estimate_id) t ON t.estimate_id = e.id"
        " WHERE e.total_amount <> floor(t.subtotal * 1.10) OR e.total_amount = 0",
    )
    assert mismatched == 0
    statuses = await scalar(garden, "SELECT array_agg(DISTINCT status ORDER BY status) FROM estimates")
    assert statuses == ["accepted", "draft", "rejected", "sent"]


async def test_password_hashes_are_placeholders(garden: Conn) -> None:
    rows = await (await garden.execute("SELECT password_hash FROM users")).fetchall()
    assert all(BCRYPT_SHAPE.match(row[0]) for row in rows)
    assert len({row[0] for row in rows}) == len(rows)


async def test_two_loads_hold_the_same_rows(garden: Conn) -> None:
    # Everything except timestamps, which follow now().
    fingerprint = (
        "SELECT md5(string_agg(concat_ws('|', e.id, e.company_id, e.customer_name, e.title,"
        " e.total_amount, e.status, e.created_by, i.name, i.quantity, i.amount), ','"
        " ORDER BY e.id, i.sort_order))"
        " FROM estimates e JOIN estimate_items i ON i.estimate_id = e.id"
    )
    logs = (
        "SELECT md5(string_agg(concat_ws('|', id, user_id, action, ip_address), ',' ORDER BY id))"
        " FROM user_activity_logs"
    )
    first = (await scalar(garden, fingerprint), await scalar(garden, logs))
    with throwaway_database("gbt_sample") as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as other:
            await create_sample_garden(other)
            second = (await scalar(other, fingerprint), await scalar(other, logs))
    assert first == second


async def test_schema_exists_only_after_loading(empty_db: Conn) -> None:
    assert await garden_schema_exists(empty_db) is False
    await create_sample_garden(empty_db)
    assert await garden_schema_exists(empty_db) is True


async def test_a_failed_load_leaves_nothing_behind(empty_db: Conn) -> None:
    await empty_db.execute("CREATE TABLE estimates (id int)")
    with pytest.raises(psycopg.errors.DuplicateTable):
        await create_sample_garden(empty_db)
    assert await garden_schema_exists(empty_db) is False


async def test_sample_cache_holds_sessions_and_cached_estimates(garden: Conn) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        with redis_prefix() as prefix:
            written = await create_sample_cache(redis=client, conn=garden, prefix=prefix)
            keys = sorted(
                [
                    key.decode().removeprefix(prefix)
                    async for key in client.scan_iter(match=prefix + "*", count=500)
                ]
            )
            assert len(keys) == written
            assert sum(k.startswith("session:") for k in keys) == 6
            assert sum(k.startswith("cache:estimate:") for k in keys) == 12
            raw = await client.get(f"{prefix}cache:estimate:1")
            assert raw is not None
            cached = json.loads(raw)
            title = await scalar(garden, "SELECT title FROM estimates WHERE id = 1")
            assert cached["title"] == title
            assert await client.ttl(f"{prefix}session:sample0001") > 0
    finally:
        await client.aclose()
