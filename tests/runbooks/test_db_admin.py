"""`db stats`, `db maintain`, `db reindex` and the WAL health line, against real PostgreSQL servers.

Most tests use a throwaway database on the shared server. pg_stat_statements, WAL archiving and a
standby need server settings, so those run on a private cluster of this module's own, started with
shared_preload_libraries=pg_stat_statements and archive_mode=on, plus a streaming standby of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.errors import NotFound, RunbookFailed, UsageError
from runbooks.db_admin import (
    check_wal,
    database_stats,
    find_index,
    maintain_database,
    reindex_index,
)
from runbooks.sample_garden import create_sample_garden
from tests.support.serve import (
    PG_BIN,
    PrivatePostgres,
    PrivatePostgresUnavailable,
    free_port,
    private_postgres,
)
from tests.support.servers import throwaway_database

Conn = psycopg.AsyncConnection[Any]
CONTRIB = PG_BIN.parent / "lib" / "pg_stat_statements.so"


@pytest.fixture
async def garden() -> AsyncIterator[Conn]:
    with throwaway_database("gbt_dbadmin") as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await create_sample_garden(conn)
            yield conn


async def scalar(conn: Conn, query: str, params: tuple[Any, ...] = ()) -> Any:
    cur = await conn.execute(query.encode(), params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def flush_stats(conn: Conn) -> None:
    """Make this backend's counters visible in pg_stat_* now rather than within a second."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT 1")
    await conn.execute("SELECT pg_stat_clear_snapshot()")


async def test_stats_show_tables_unused_indexes_dead_tuples_and_connections(garden: Conn) -> None:
    await garden.execute("CREATE INDEX companies_name_kana_idx ON companies (name_kana)")
    await garden.execute("UPDATE estimates SET status = status")  # every row leaves a dead tuple
    await flush_stats(garden)

    stats = await database_stats(conn=garden)

    tables = {t.table for t in stats.largest_tables}
    assert {"public.estimates", "public.user_activity_logs", "public.users"} <= tables
    assert len(stats.largest_tables) <= 10
    sizes = [t.total_bytes for t in stats.largest_tables]
    assert sizes == sorted(sizes, reverse=True)
    assert "public.companies_name_kana_idx" in {i.index for i in stats.unused_indexes}
    assert not any(i.index.endswith("_pkey") for i in stats.unused_indexes)  # primary keys stay
    dead = {t.table: t.dead_rows for t in stats.dead_tuples}
    assert dead.get("public.estimates", 0) >= 37
    assert dict(stats.connections).get("active", 0) >= 1
    assert stats.size_bytes > 0


async def test_stats_say_when_pg_stat_statements_is_not_installed(garden: Conn) -> None:
    stats = await database_stats(conn=garden)
    assert stats.slow_statements is None
    assert stats.slow_statements_missing == "CREATE EXTENSION pg_stat_statements"


async def test_stats_say_when_pg_stat_statements_is_installed_but_not_preloaded(garden: Conn) -> None:
    if not CONTRIB.exists():
        pytest.skip(f"postgresql-contrib is not installed ({CONTRIB} missing)")
    loaded = await scalar(garden, "SELECT current_setting('shared_preload_libraries')")
    if "pg_stat_statements" in loaded:
        pytest.skip("the shared server preloads pg_stat_statements")
    await garden.execute("CREATE EXTENSION pg_stat_statements")

    stats = await database_stats(conn=garden)

    assert stats.slow_statements is None
    assert stats.slow_statements_missing is not None
    assert "shared_preload_libraries" in stats.slow_statements_missing


async def test_a_query_running_over_a_second_is_listed(garden: Conn) -> None:
    url = garden.info.dsn
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as other:
        sleeper = asyncio.create_task(other.execute("SELECT pg_sleep(4) /* long one */"))
        try:
            deadline = time.monotonic() + 10
            stats = await database_stats(conn=garden)
            while not stats.long_queries and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                stats = await database_stats(conn=garden)
        finally:
            await other.cancel_safe()  # ask the server to stop the sleep
            with contextlib.suppress(psycopg.errors.QueryCanceled):
                await sleeper

    [long_query] = stats.long_queries
    assert "long one" in long_query.query and long_query.seconds > 1


async def test_the_wal_line_is_informational_when_nothing_is_configured(garden: Conn) -> None:
    if await scalar(garden, "SELECT current_setting('archive_mode')") != "off":
        pytest.skip("the shared server archives WAL")
    line = await check_wal(conn=garden)
    assert (line.name, line.level) == ("wal", "info")


async def test_maintain_analyzes_and_vacuums_when_asked_with_durations(garden: Conn) -> None:
    analyzed = await maintain_database(conn=garden)
    both = await maintain_database(conn=garden, vacuum=True)
    await flush_stats(garden)

    assert [s.name for s in analyzed.steps] == ["ANALYZE"]
    assert [s.name for s in both.steps] == ["ANALYZE", "VACUUM"]
    assert all(s.seconds >= 0 for s in both.steps)
    vacuumed = await scalar(garden, "SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = 'users'")
    assert vacuumed is not None


async def relfilenode(conn: Conn, index: str) -> int:
    return int(await scalar(conn, "SELECT relfilenode FROM pg_class WHERE relname = %s", (index,)))


async def test_reindex_rebuilds_one_named_index_concurrently(garden: Conn) -> None:
    before = await relfilenode(garden, "estimates_company_status_idx")

    result = await reindex_index(conn=garden, index="estimates_company_status_idx")

    assert result.index.qualified == "public.estimates_company_status_idx"
    assert result.index.table == "estimates"
    assert await relfilenode(garden, "estimates_company_status_idx") != before  # rebuilt


async def snapshot(conn: Conn) -> tuple[Any, ...]:
    relations = await (await conn.execute("SELECT relname, relfilenode FROM pg_class ORDER BY 1")).fetchall()
    users = await scalar(conn, "SELECT count(*) FROM users")
    return tuple(relations), users


HOSTILE_INDEX_NAMES = [
    ("'; DROP TABLE users;--", UsageError, "db.invalid_index_name"),
    ('users_pkey"; DROP TABLE users;--', UsageError, "db.invalid_index_name"),
    ("i" * 10_000, UsageError, "db.invalid_index_name"),
    ("users_pkey\x00", UsageError, "db.invalid_index_name"),
    ("a.b.c", UsageError, "db.invalid_index_name"),
    ("", UsageError, "db.invalid_index_name"),
    ("users", NotFound, "db.index_not_found"),  # a table, not an index
    ("no_such_index", NotFound, "db.index_not_found"),
    ("pg_class_oid_index", NotFound, "db.index_not_found"),  # a catalog index is not ours to touch
    ("other.users_pkey", NotFound, "db.index_not_found"),
]


@pytest.mark.parametrize(("name", "error", "key"), HOSTILE_INDEX_NAMES)
async def test_a_name_that_is_not_one_of_our_indexes_is_refused_and_nothing_changes(
    garden: Conn, name: str, error: type[Exception], key: str
) -> None:
    before = await snapshot(garden)

    with pytest.raises(error) as caught:
        await reindex_index(conn=garden, index=name)

    assert getattr(caught.value, "message_key", None) == key
    assert len(str(caught.value)) < 300
    assert await snapshot(garden) == before


async def test_an_index_name_in_two_schemas_must_be_qualified(garden: Conn) -> None:
    await garden.execute("CREATE SCHEMA archive")
    await garden.execute("CREATE TABLE archive.users (id int PRIMARY KEY)")

    with pytest.raises(UsageError) as caught:
        await find_index(conn=garden, index="users_pkey")
    found = await find_index(conn=garden, index="archive.users_pkey")

    assert caught.value.message_key == "db.index_ambiguous"
    assert (found.schema, found.table) == ("archive", "users")


# --- a private cluster: pg_stat_statements preloaded, WAL archived, one streaming standby ----------


def _standby(pg: PrivatePostgres) -> Iterator[int]:
    port = free_port()
    data = pg.root / "standby"
    copy = pg.run(
        "pg_basebackup", "-D", str(data), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-R"
    )
    if copy.returncode != 0:
        pytest.skip(f"pg_basebackup failed: {copy.stderr[-300:]}")
    options = f"-p {port} -k {pg.root} -c listen_addresses=127.0.0.1 -c archive_mode=off"
    log = pg.root / "standby.log"
    start = pg.run("pg_ctl", "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
    if start.returncode != 0:
        pytest.skip(f"the standby did not start: {start.stderr[-300:]}")
    try:
        yield port
    finally:
        pg.run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[PrivatePostgres, int]]:
    if not CONTRIB.exists():
        pytest.skip(f"postgresql-contrib is not installed ({CONTRIB} missing)")
    settings = ["shared_preload_libraries=pg_stat_statements", "archive_mode=on", "wal_level=replica"]
    try:
        with private_postgres(settings) as pg:
            yield from ((pg, port) for port in _standby(pg))
    except PrivatePostgresUnavailable as exc:
        pytest.skip(str(exc))


def private_url(pg: PrivatePostgres, database: str = "postgres", user: str = "postgres") -> str:
    return f"postgresql://{user}@127.0.0.1:{pg.port}/{database}"


@pytest.fixture
async def primary(cluster: tuple[PrivatePostgres, int]) -> AsyncIterator[Conn]:
    pg, _ = cluster
    async with await psycopg.AsyncConnection.connect(private_url(pg), autocommit=True) as conn:
        yield conn


async def test_slow_statements_come_from_pg_stat_statements_by_mean_time(primary: Conn) -> None:
    await primary.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await primary.execute("SELECT pg_stat_statements_reset()")
    await primary.execute("SELECT pg_sleep(1.2), 'slow report'")
    await primary.execute("SELECT 'quick one', pg_sleep(0.01)")

    stats = await database_stats(conn=primary)

    assert stats.slow_statements_missing is None and stats.slow_statements is not None
    [slow] = stats.slow_statements
    assert slow.query == "SELECT pg_sleep($1), $2" and slow.calls == 1 and slow.mean_ms > 1000


async def test_each_standby_is_listed_with_its_lag(primary: Conn) -> None:
    deadline = time.monotonic() + 20
    stats = await database_stats(conn=primary)
    while not stats.standbys and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        stats = await database_stats(conn=primary)

    [standby] = stats.standbys
    assert standby.address == "127.0.0.1" and standby.state == "streaming"
    assert standby.lag_bytes is not None and standby.lag_bytes >= 0
    line = await check_wal(conn=primary)
    assert "1 standby" in line.figure


async def wait_archiver(conn: Conn, column: str, above: int) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS wal_filler (n int)")
    await conn.execute("INSERT INTO wal_filler SELECT generate_series(1, 1000)")
    await conn.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 30
    query = sql.SQL("SELECT {} FROM pg_stat_archiver").format(sql.Identifier(column))
    while time.monotonic() < deadline:
        cur = await conn.execute(query)
        row = await cur.fetchone()
        if row and int(row[0]) > above:
            return
        await asyncio.sleep(0.3)
    pytest.fail(f"pg_stat_archiver.{column} did not move")


async def set_archive_command(conn: Conn, command: str) -> None:
    await conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(command)))
    await conn.execute("SELECT pg_reload_conf()")
    await asyncio.sleep(0.5)


async def test_archiving_is_ok_then_stale_then_failing(
    cluster: tuple[PrivatePostgres, int], primary: Conn
) -> None:
    pg, _ = cluster
    archive = Path(pg.root) / "archive"
    await set_archive_command(primary, f"mkdir -p {archive} && cp %p {archive}/%f")
    await wait_archiver(primary, "archived_count", 0)

    fresh = await check_wal(conn=primary)
    stale = await check_wal(conn=primary, now=datetime.now(UTC) + timedelta(minutes=20))
    archived = (await database_stats(conn=primary)).archiving

    assert fresh.level == "ok" and "last archived" in fresh.figure
    assert stale.level == "warn"
    assert archived.mode == "on" and archived.archived >= 1 and archived.last_archived_wal

    failed_before = archived.failed
    await set_archive_command(primary, "false")
    await wait_archiver(primary, "failed_count", failed_before)

    failing = await check_wal(conn=primary)
    stats = await database_stats(conn=primary)
    assert failing.level == "warn" and "FAILING" in failing.figure
    assert stats.archiving.failing and stats.archiving.last_failed_at is not None
    await set_archive_command(primary, f"cp %p {archive}/%f")


async def test_a_pg_monitor_login_reads_everything_and_can_change_nothing(
    cluster: tuple[PrivatePostgres, int], primary: Conn
) -> None:
    await primary.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")  # alone, no test before did
    await primary.execute("DROP ROLE IF EXISTS gbt_monitor")
    await primary.execute("CREATE ROLE gbt_monitor LOGIN IN ROLE pg_monitor")
    await primary.execute("CREATE TABLE IF NOT EXISTS owned (id int PRIMARY KEY)")
    pg, _ = cluster
    async with await psycopg.AsyncConnection.connect(
        private_url(pg, user="gbt_monitor"), autocommit=True
    ) as monitor:
        stats = await database_stats(conn=monitor)
        with pytest.raises(RunbookFailed) as caught:
            await reindex_index(conn=monitor, index="owned_pkey")

    assert stats.slow_statements is not None  # pg_monitor may read pg_stat_statements
    assert stats.standbys and stats.archiving.mode == "on"
    assert caught.value.message_key == "db.reindex_failed"
