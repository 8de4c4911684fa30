"""PostgreSQL client tools (pg_dump, pg_restore) and connections to the target database.

Passwords never reach a command line: child processes get PG* environment variables instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.errors import RunbookFailed, TargetUnreachable
from core.secrets import mask_text

PG_BIN_SETTING = "GARDENBOT_PG_BIN_DIR"
CONNECT_TIMEOUT_S = 5
TOOL_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")

# libpq connection keywords and the environment variables that carry them to a child process.
CONNINFO_ENV: dict[str, str] = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "sslpassword": "PGSSLPASSWORD",
    "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "krbsrvname": "PGKRBSRVNAME",
}

# Every user table (not the catalogs', not an extension's).
USER_TABLES = """
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""
TABLES_SQL = "SELECT n.nspname AS schema_name, c.relname AS table_name" + USER_TABLES + "ORDER BY 1, 2"
# The planner's estimate (ANALYZE's count), else the statistics' live tuples: no table is read or locked.
ESTIMATED_ROWS_SQL = (
    "SELECT count(*), coalesce(sum(CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint"
    " ELSE pg_stat_get_live_tuples(c.oid) END), 0)" + USER_TABLES
)

# All a pg tool inherits from the bot's environment (besides LC_*): never a token, key or the bot's DSN.
INHERITED_ENV = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR"})

AnyConn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True)
class PgTools:
    """The pg_dump/pg_restore pair the bot runs, and the PostgreSQL version they come from."""

    pg_dump: Path
    pg_restore: Path
    psql: Path | None
    version: tuple[int, int]
    version_text: str


def tool_env(*, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A pg tool's environment without a connection: the allow-listed variables only."""
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if k in INHERITED_ENV or k.startswith("LC_")}


def child_env(dsn: str, *, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for pg_dump/pg_restore: tool_env() plus the DSN split into PG* variables
    (its password included: only the target's tools get a DSN); no PG* variable is inherited."""
    env = tool_env(base=base)
    for key, value in conninfo_to_dict(dsn).items():
        name = CONNINFO_ENV.get(key)
        if name is not None and value is not None and str(value) != "":
            env[name] = str(value)
    env.setdefault("PGCONNECT_TIMEOUT", str(CONNECT_TIMEOUT_S))
    env.setdefault("PGAPPNAME", "gardenbot")
    return env


def admin_dsn(dsn: str) -> str:
    """The same server and credentials, on the `postgres` maintenance database."""
    return make_conninfo(dsn, dbname="postgres")


def database_name(dsn: str) -> str:
    name = conninfo_to_dict(dsn).get("dbname")
    return str(name) if name else str(conninfo_to_dict(dsn).get("user") or "postgres")


def dsn_for_database(dsn: str, name: str) -> str:
    return make_conninfo(dsn, dbname=name)


def major(version: tuple[int, int]) -> tuple[int, int]:
    """The release line: 15 for 15.x, (9, 6) for 9.6.x."""
    return (version[0], 0) if version[0] >= 10 else version


async def _tool_version(path: Path) -> tuple[tuple[int, int], str] | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            str(path),
            "--version",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=tool_env(),
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return None
    out, _ = await proc.communicate()
    found = TOOL_VERSION.search(out.decode(errors="replace"))
    if proc.returncode != 0 or found is None:
        return None
    numbers = (int(found.group(1)), int(found.group(2) or 0))
    return numbers, f"{numbers[0]}.{numbers[1]}"


def _locate(name: str, bin_dir: Path | None) -> Path | None:
    if bin_dir is not None:
        candidate = bin_dir / name
        return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None
    found = shutil.which(name)
    return Path(found) if found else None


async def find_pg_tools(bin_dir: Path | None, *, server_version: tuple[int, int] | None = None) -> PgTools:
    """pg_dump and pg_restore from bin_dir or PATH; refused if missing or older than the server."""
    where = str(bin_dir) if bin_dir is not None else "PATH"
    found: dict[str, tuple[Path, tuple[int, int], str]] = {}
    for name in ("pg_dump", "pg_restore"):
        path = _locate(name, bin_dir)
        version = await _tool_version(path) if path is not None else None
        if path is None or version is None:
            raise RunbookFailed("pg_tools.missing", tool=name, where=where, setting=PG_BIN_SETTING)
        found[name] = (path, *version)
    psql = _locate("psql", bin_dir)
    oldest = min(found.values(), key=lambda item: item[1])
    if server_version is not None and major(oldest[1]) < major(server_version):
        raise RunbookFailed(
            "pg_tools.too_old",
            tool_version=oldest[2],
            server_version=f"{server_version[0]}.{server_version[1]}",
            where=where,
            setting=PG_BIN_SETTING,
        )
    return PgTools(
        pg_dump=found["pg_dump"][0],
        pg_restore=found["pg_restore"][0],
        psql=psql,
        version=oldest[1],
        version_text=oldest[2],
    )


def check_tools_match_server(tools: PgTools, server_version: tuple[int, int]) -> None:
    """pg_dump refuses newer servers; say so before it starts, naming the setting to change."""
    if major(tools.version) < major(server_version):
        raise RunbookFailed(
            "pg_tools.too_old",
            tool_version=tools.version_text,
            server_version=f"{server_version[0]}.{server_version[1]}",
            where=str(tools.pg_dump.parent),
            setting=PG_BIN_SETTING,
        )


@asynccontextmanager
async def connect_target(dsn: str, *, autocommit: bool = True) -> AsyncIterator[AnyConn]:
    """A connection to the operated server; TargetUnreachable (password masked) when it is down."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            dsn,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="gardenbot",
        )
    except psycopg.OperationalError as exc:
        raise TargetUnreachable(
            "target.database_unreachable",
            database=database_name(dsn),
            detail=mask_text(str(exc).strip().splitlines()[-1] if str(exc).strip() else ""),
        ) from None
    try:
        yield conn
    finally:
        await conn.close()


async def server_version_of(conn: AnyConn) -> tuple[tuple[int, int], str]:
    """(major, minor) and the server's own version text."""
    cur = await conn.execute("SELECT current_setting('server_version_num')::int, version()")
    row = await cur.fetchone()
    assert row is not None
    number, text = int(row[0]), str(row[1])
    if number >= 100000:
        return (number // 10000, number % 10000), text
    return (number // 10000, (number // 100) % 100), text


async def count_rows_in(conn: AnyConn) -> dict[str, int]:
    """Exact count(*) of every user table, as `schema.table`, seen by the connection's snapshot."""
    cur = await conn.execute(TABLES_SQL)
    tables = [(str(r[0]), str(r[1])) for r in await cur.fetchall()]
    counts: dict[str, int] = {}
    for schema, table in tables:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        row = await (await conn.execute(query)).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


async def count_rows(dsn: str) -> dict[str, int]:
    """Row counts per table of the database at dsn, all from one snapshot."""
    async with connect_target(dsn, autocommit=False) as conn:
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        async with conn.transaction():
            return await count_rows_in(conn)


@dataclass(frozen=True)
class RowEstimate:
    tables: int
    rows: int


async def estimate_rows(dsn: str) -> RowEstimate:
    """Tables and about how many rows, from the catalog: prompt even while a table is locked."""
    async with connect_target(dsn) as conn:
        row = await (await conn.execute(ESTIMATED_ROWS_SQL)).fetchone()
    return RowEstimate(tables=int(row[0]), rows=int(row[1])) if row else RowEstimate(0, 0)


def tail(text: bytes, lines: int = 5) -> str:
    """The last lines of a tool's stderr, secrets masked, for an error message."""
    kept = text.decode(errors="replace").strip().splitlines()[-lines:]
    return mask_text(" | ".join(kept))


async def end_process_group(proc: asyncio.subprocess.Process) -> None:
    """Kill a pg tool started in its own process group (it and its workers) if it still runs."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
