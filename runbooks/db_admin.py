"""`db stats`, `db maintain [--vacuum]`, `db reindex <index>` and the WAL line of `health`.

Reads need only the pg_monitor role, so the caller may hand `database_stats` a least-privileged
connection; maintenance and reindex need the owner's. No statement is built from user text: an
index name is checked in pg_class/pg_index first and then quoted with psycopg.sql.Identifier.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from core.errors import NotFound, RunbookFailed, UsageError
from core.formatting import format_age
from runbooks.health import CheckResult, Level

Conn = psycopg.AsyncConnection[Any]
LONG_QUERY_S = 1.0
SLOW_STATEMENT_MS = 1000.0
TOP = 10
ARCHIVE_MAX_AGE = timedelta(minutes=15)
INDEX_NAME = re.compile(r"(?:([A-Za-z_][A-Za-z0-9_$]{0,62})\.)?([A-Za-z_][A-Za-z0-9_$]{0,62})")  # fullmatch


@dataclass(frozen=True)
class LongQuery:
    pid: int
    user: str
    state: str
    seconds: float
    query: str  # first 200 characters


@dataclass(frozen=True)
class SlowStatement:
    query: str
    calls: int
    mean_ms: float
    total_ms: float


@dataclass(frozen=True)
class TableSize:
    table: str  # schema.name
    total_bytes: int
    live_rows: int
    dead_rows: int
    last_autovacuum: datetime | None


@dataclass(frozen=True)
class UnusedIndex:
    index: str  # schema.name
    table: str
    size_bytes: int


@dataclass(frozen=True)
class StandbyLag:
    name: str
    address: str | None
    state: str
    lag_bytes: int | None
    replay_lag_s: float | None


@dataclass(frozen=True)
class Archiving:
    mode: str  # archive_mode: off, on, always
    archived: int
    last_archived_wal: str | None
    last_archived_at: datetime | None
    failed: int
    last_failed_wal: str | None
    last_failed_at: datetime | None

    @property
    def failing(self) -> bool:
        """The newest attempt failed (a failure after the last success)."""
        if self.last_failed_at is None:
            return False
        return self.last_archived_at is None or self.last_failed_at > self.last_archived_at


@dataclass(frozen=True)
class DatabaseStats:
    database: str
    size_bytes: int
    connections: tuple[tuple[str, int], ...]  # (state, count)
    long_queries: tuple[LongQuery, ...]
    slow_statements: tuple[SlowStatement, ...] | None  # None: pg_stat_statements is not there
    slow_statements_missing: str | None  # why not, for the line that says so
    largest_tables: tuple[TableSize, ...]
    unused_indexes: tuple[UnusedIndex, ...]
    dead_tuples: tuple[TableSize, ...]
    standbys: tuple[StandbyLag, ...]
    archiving: Archiving


@dataclass(frozen=True)
class MaintenanceStep:
    name: str  # ANALYZE, VACUUM
    seconds: float


@dataclass(frozen=True)
class MaintenanceResult:
    steps: tuple[MaintenanceStep, ...]


@dataclass(frozen=True)
class IndexRef:
    schema: str
    name: str
    table: str
    size_bytes: int

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class ReindexResult:
    index: IndexRef
    seconds: float
    size_before: int
    size_after: int


async def _rows(conn: Conn, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query.encode(), params)
        return await cur.fetchall()


CONNECTIONS_SQL = """
SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
GROUP BY 1 ORDER BY 2 DESC, 1"""
LONG_QUERIES_SQL = """
SELECT pid, coalesce(usename, ''), coalesce(state, ''),
       extract(epoch FROM clock_timestamp() - query_start)::float8, left(query, 200)
FROM pg_stat_activity
WHERE datname = current_database() AND state <> 'idle' AND pid <> pg_backend_pid()
  AND query_start < clock_timestamp() - make_interval(secs => %s)
ORDER BY query_start LIMIT 20"""
SLOW_STATEMENTS_SQL = """
SELECT left(query, 200), calls, mean_exec_time, total_exec_time FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND mean_exec_time > %s
ORDER BY mean_exec_time DESC LIMIT %s"""
TABLES_SQL = """
SELECT schemaname || '.' || relname, pg_total_relation_size(relid), n_live_tup, n_dead_tup,
       greatest(last_autovacuum, last_vacuum)
FROM pg_stat_user_tables"""
UNUSED_INDEXES_SQL = """
SELECT s.schemaname || '.' || s.indexrelname, s.schemaname || '.' || s.relname,
       pg_relation_size(s.indexrelid)
FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary
ORDER BY 3 DESC, 1 LIMIT 20"""
STANDBYS_SQL = """
SELECT coalesce(application_name, ''), host(client_addr), coalesce(state, ''),
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint END,
       extract(epoch FROM replay_lag)::float8
FROM pg_stat_replication ORDER BY 1"""
ARCHIVER_SQL = """
SELECT current_setting('archive_mode'), archived_count, last_archived_wal, last_archived_time,
       failed_count, last_failed_wal, last_failed_time FROM pg_stat_archiver"""


async def slow_statements(
    conn: Conn, *, over_ms: float = SLOW_STATEMENT_MS
) -> tuple[tuple[SlowStatement, ...] | None, str | None]:
    """The 10 slowest statements by mean time, or None and why when pg_stat_statements is absent."""
    installed = await _rows(conn, "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
    if not installed:
        return None, "CREATE EXTENSION pg_stat_statements"
    try:
        async with conn.transaction():
            rows = await _rows(conn, SLOW_STATEMENTS_SQL, (over_ms, TOP))
    except psycopg.errors.ObjectNotInPrerequisiteState:
        return None, "shared_preload_libraries = 'pg_stat_statements'"
    return tuple(SlowStatement(str(q), int(c), float(m), float(t)) for q, c, m, t in rows), None


async def archiving(conn: Conn) -> Archiving:
    [row] = await _rows(conn, ARCHIVER_SQL)
    return Archiving(str(row[0]), int(row[1]), row[2], row[3], int(row[4]), row[5], row[6])


async def standbys(conn: Conn) -> tuple[StandbyLag, ...]:
    rows = await _rows(conn, STANDBYS_SQL)
    return tuple(
        StandbyLag(str(n), a, str(s), None if lag is None else int(lag), None if r is None else float(r))
        for n, a, s, lag, r in rows
    )


async def database_stats(*, conn: Conn) -> DatabaseStats:
    """Everything `db stats` shows; pg_monitor is enough to read it all."""
    [(database, size)] = await _rows(conn, "SELECT current_database(), pg_database_size(current_database())")
    connections = tuple((str(s), int(n)) for s, n in await _rows(conn, CONNECTIONS_SQL))
    long_queries = tuple(
        LongQuery(int(p), str(u), str(s), float(sec), str(q))
        for p, u, s, sec, q in await _rows(conn, LONG_QUERIES_SQL, (LONG_QUERY_S,))
    )
    statements, missing = await slow_statements(conn)
    tables = [
        TableSize(str(t), int(b), int(lv), int(dd), va) for t, b, lv, dd, va in await _rows(conn, TABLES_SQL)
    ]
    unused = tuple(UnusedIndex(str(i), str(t), int(b)) for i, t, b in await _rows(conn, UNUSED_INDEXES_SQL))
    return DatabaseStats(
        database=str(database),
        size_bytes=int(size),
        connections=connections,
        long_queries=long_queries,
        slow_statements=statements,
        slow_statements_missing=missing,
        largest_tables=tuple(sorted(tables, key=lambda t: (-t.total_bytes, t.table))[:TOP]),
        unused_indexes=unused,
        dead_tuples=tuple(
            sorted((t for t in tables if t.dead_rows), key=lambda t: (-t.dead_rows, t.table))[:TOP]
        ),
        standbys=await standbys(conn),
        archiving=await archiving(conn),
    )


async def check_wal(
    *, conn: Conn, now: datetime | None = None, max_age: timedelta = ARCHIVE_MAX_AGE
) -> CheckResult:
    """The health line: WAL archiving and replication when configured; warn when archiving lags or fails."""
    archive, replicas = await archiving(conn), await standbys(conn)
    if archive.mode == "off" and not replicas:
        return CheckResult("wal", "info", "archiving off, no standby")
    parts: list[str] = []
    level: Level = "ok"
    if archive.mode != "off":
        moment = now or datetime.now(UTC)
        if archive.failing:
            level = "warn"
            parts.append(f"archiving FAILING ({archive.failed} failures, last {archive.last_failed_wal})")
        elif archive.last_archived_at is None:
            parts.append("nothing archived yet")
        else:
            age = moment - archive.last_archived_at
            level = "warn" if age > max_age else level
            parts.append(f"last archived {format_age(age)} ago")
    if replicas:
        worst = max((r.lag_bytes or 0) for r in replicas)
        parts.append(f"{len(replicas)} standby, max lag {worst} bytes")
    return CheckResult("wal", level, ", ".join(parts))


async def maintain_database(*, conn: Conn, vacuum: bool = False) -> MaintenanceResult:
    """ANALYZE, then VACUUM (ANALYZE) when asked, each timed; needs an autocommit connection."""
    steps: list[MaintenanceStep] = []
    for name, statement in (("ANALYZE", "ANALYZE"), ("VACUUM", "VACUUM")):
        if name == "VACUUM" and not vacuum:
            continue
        started = time.monotonic()
        try:
            await conn.execute(statement.encode())
        except psycopg.Error as exc:
            raise RunbookFailed("db.maintenance_failed", step=name, detail=_first_line(exc)) from None
        steps.append(MaintenanceStep(name, time.monotonic() - started))
    return MaintenanceResult(tuple(steps))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _shown(text: str) -> str:
    clean = "".join(ch if ch.isprintable() else "?" for ch in text)
    return clean if len(clean) <= 80 else clean[:77] + "..."


async def find_index(*, conn: Conn, index: str) -> IndexRef:
    """The one existing user index named `index` (or `schema.index`); refused otherwise."""
    match = INDEX_NAME.fullmatch(index)
    if match is None:
        raise UsageError("db.invalid_index_name", index=_shown(index))
    schema, name = match.group(1), match.group(2)
    rows = await _rows(
        conn,
        "SELECT n.nspname, c.relname, t.relname, pg_relation_size(c.oid)"
        " FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
        " JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'i' AND c.relname = %s AND (%s::text IS NULL OR n.nspname = %s)"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'"
        " ORDER BY 1",
        (name, schema, schema),
    )
    if not rows:
        raise NotFound("db.index_not_found", index=index)
    if len(rows) > 1:
        raise UsageError("db.index_ambiguous", index=index, schemas=", ".join(str(r[0]) for r in rows))
    return IndexRef(str(rows[0][0]), str(rows[0][1]), str(rows[0][2]), int(rows[0][3]))


async def reindex_index(*, conn: Conn, index: str) -> ReindexResult:
    """REINDEX INDEX CONCURRENTLY one named, existing index (never a table or the database)."""
    ref = await find_index(conn=conn, index=index)
    statement = sql.SQL("REINDEX INDEX CONCURRENTLY {}.{}").format(
        sql.Identifier(ref.schema), sql.Identifier(ref.name)
    )
    started = time.monotonic()
    try:
        await conn.execute(statement)  # CONCURRENTLY: the connection must be in autocommit
    except psycopg.Error as exc:
        raise RunbookFailed("db.reindex_failed", index=ref.qualified, detail=_first_line(exc)) from None
    seconds = time.monotonic() - started
    after = await find_index(conn=conn, index=ref.qualified)
    return ReindexResult(ref, seconds, ref.size_bytes, after.size_bytes)
