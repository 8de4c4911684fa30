"""Restore a backup beside the live database, check it, then swap the two by renaming.

Until the swap commits the live database is never touched, so a failed restore leaves it as it was.
The approval and the safety backup are the caller's; the safety backup may run alongside the
restore (the live database stays whole until the swap), and the swap waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import httpx
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.errors import NotFound, RunbookFailed
from core.secrets import mask_text
from runbooks.backups import OpenedBackup, count_toc_entries
from runbooks.pg_tools import (
    AnyConn,
    PgTools,
    admin_dsn,
    check_tools_match_server,
    child_env,
    connect_target,
    count_rows,
    database_name,
    dsn_for_database,
    end_process_group,
    server_version_of,
    tail,
    tool_env,
)
from runbooks.progress import ProgressCallback, Step, report

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_IDENTIFIER = 63
STAMP_FORMAT = "%Y%m%d_%H%M%S"
SWAP_ATTEMPTS = 5
DRAIN_WAIT_S = 5.0
RESTORE_STEP = re.compile(rb"^pg_restore: (creating|processing|executing|launching)")
MAX_AUTO_JOBS = 8  # pg_restore --jobs when sized to the target's cores
UNKNOWN_CORES_JOBS = 2  # a remote server that does not tell its cores
LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class RowCountDifference:
    table: str
    expected: int | None  # None: the table was not in the backup
    actual: int | None  # None: the table is missing after the restore


@dataclass(frozen=True)
class RestoreOutcome:
    live: str
    kept_as: str
    row_counts: dict[str, int]
    duration_ms: int


def compare_row_counts(
    expected: Mapping[str, int], actual: Mapping[str, int]
) -> tuple[RowCountDifference, ...]:
    return tuple(
        RowCountDifference(table, expected.get(table), actual.get(table))
        for table in sorted(set(expected) | set(actual))
        if expected.get(table) != actual.get(table)
    )


def restore_database_names(live: str, at: datetime | None = None) -> tuple[str, str]:
    """(`<live>_restore_<time>`, `<live>_before_<time>`), time in UTC."""
    stamp = (at or datetime.now(UTC)).astimezone(UTC).strftime(STAMP_FORMAT)
    names = (f"{live}_restore_{stamp}", f"{live}_before_{stamp}")
    if any(len(name.encode()) > MAX_IDENTIFIER for name in names):
        raise RunbookFailed("restore.name_too_long", database=live, limit=MAX_IDENTIFIER)
    return names


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


async def create_database(admin: str, name: str, *, owner: str | None = None) -> None:
    """An empty database from template0; RunbookFailed if the name is taken (it is not ours)."""
    query = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(_ident(name))
    if owner is not None:
        query = sql.SQL("{} OWNER {}").format(query, _ident(owner))
    async with connect_target(admin) as conn:
        try:
            await conn.execute(query)
        except pg_errors.DuplicateDatabase:
            raise RunbookFailed("restore.database_exists", database=name) from None


async def drop_database(admin: str, name: str) -> None:
    async with connect_target(admin) as conn:
        await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(name)))


async def database_owner(admin: str, name: str) -> str:
    async with connect_target(admin) as conn:
        cur = await conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound("restore.database_not_found", database=name)
    return str(row[0])


async def server_cores(admin: str) -> int | None:
    """The target server's CPU count read through the server (/proc/cpuinfo; superuser or
    pg_read_server_files), or None when it cannot tell: PostgreSQL itself does not report it."""
    try:
        async with connect_target(admin) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM regexp_split_to_table(pg_read_file('/proc/cpuinfo'), E'\\n') AS l"
                " WHERE l ~ '^processor\\s*:'"
            )
            row = await cur.fetchone()
    except pg_errors.Error:
        return None
    return int(row[0]) if row is not None and int(row[0]) > 0 else None


def _is_local(admin: str) -> bool:
    host = str(conninfo_to_dict(admin).get("host") or "")
    return host.startswith("/") or host in LOCAL_HOSTS


async def parallel_jobs(admin: str, configured: int | None = None) -> int:
    """pg_restore --jobs: `configured` if given, else the target's cores (at most MAX_AUTO_JOBS).

    Cores come from the server when it can tell, else from this host when the server is local,
    else UNKNOWN_CORES_JOBS.
    """
    if configured is not None:
        return max(1, configured)
    cores = await server_cores(admin)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if _is_local(admin) else UNKNOWN_CORES_JOBS
    return max(1, min(MAX_AUTO_JOBS, cores))


async def check_checksum(
    backup: OpenedBackup, expected_sha256: str, *, progress: ProgressCallback | None = None
) -> None:
    """Hash the open file (what the pg tools will read); RunbookFailed if it is not the approved one."""
    await report(progress, Step("checking_checksum", 0))
    backup.checked_sha256 = None
    if await asyncio.to_thread(backup.sha256) != expected_sha256:
        raise RunbookFailed("restore.checksum_mismatch", file=backup.path.name)
    backup.checked_sha256 = expected_sha256
    await report(progress, Step("checksum_matched", 1))


async def _run_pg_restore(
    *,
    admin: str,
    backup: OpenedBackup,
    name: str,
    tools: PgTools,
    jobs: int,
    progress: ProgressCallback | None,
) -> None:
    total = await count_toc_entries(backup, tools=tools)
    args = [str(tools.pg_restore), "--no-password", "--exit-on-error", "--verbose"]
    if jobs > 1:
        args.append(f"--jobs={jobs}")
    # A conninfo naming only the database: the server and credentials come from the environment.
    args += [f"--dbname={make_conninfo('', dbname=name)}", backup.archive]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(admin),
        limit=1 << 20,
        pass_fds=backup.pass_fds,  # the checked file itself; its workers inherit it
        start_new_session=True,  # with --jobs it forks workers; a kill must reach them too
    )
    assert proc.stderr is not None
    steps, last_report = 0, 0.0
    recent: list[bytes] = []
    try:
        async for line in proc.stderr:
            if RESTORE_STEP.match(line):
                steps += 1
            else:
                recent = [*recent[-9:], line]
            if time.monotonic() - last_report >= 0.5:
                last_report = time.monotonic()
                await report(progress, Step("restoring", min(99, steps * 100 // max(1, total))))
        await proc.wait()
    finally:
        await end_process_group(proc)
    if proc.returncode != 0:
        raise RunbookFailed("restore.pg_restore_failed", code=proc.returncode, detail=tail(b"".join(recent)))


async def restore_into_new_database(
    *,
    admin_dsn: str,
    backup: OpenedBackup,
    new_name: str,
    tools: PgTools,
    owner: str | None = None,
    jobs: int = 1,
    progress: ProgressCallback | None = None,
) -> None:
    """Create `new_name` and pg_restore into it; on any failure the new database is dropped."""
    await create_database(admin_dsn, new_name, owner=owner)
    try:
        await _run_pg_restore(
            admin=admin_dsn, backup=backup, name=new_name, tools=tools, jobs=jobs, progress=progress
        )
    except BaseException:
        await asyncio.shield(drop_database(admin_dsn, new_name))
        raise


async def check_restored_database(
    *, admin_dsn: str, name: str, expected_rows: Mapping[str, int]
) -> tuple[dict[str, int], tuple[RowCountDifference, ...]]:
    """Row counts of the restored database and where they differ from the catalog's."""
    actual = await count_rows(dsn_for_database(admin_dsn, name))
    return actual, compare_row_counts(expected_rows, actual)


async def _drain(conn: AnyConn, names: tuple[str, ...]) -> None:
    """Terminate every session on these databases and wait until they are gone."""
    deadline = time.monotonic() + DRAIN_WAIT_S
    while True:
        cur = await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
            (list(names),),
        )
        row = await cur.fetchone()
        if row is None or row[0] == 0 or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


async def _allow_connections(conn: AnyConn, name: str, allowed: bool) -> None:
    await conn.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(_ident(name), sql.Literal(allowed))
    )


async def swap_databases(*, admin_dsn: str, live: str, replacement: str, keep_as: str) -> None:
    """live -> keep_as and replacement -> live, both renames in one transaction (all or nothing).

    New sessions on live are refused while its sessions are terminated; whatever happens,
    the database named live afterwards accepts connections again.
    """
    if "postgres" in (live, replacement):
        raise RunbookFailed("restore.refused_maintenance_database")
    async with connect_target(admin_dsn) as conn:
        cur = await conn.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)",
            ([live, replacement, keep_as],),
        )
        present = {str(r[0]) for r in await cur.fetchall()}
        for name in (live, replacement):
            if name not in present:
                raise NotFound("restore.database_not_found", database=name)
        if keep_as in present:
            raise RunbookFailed("restore.database_exists", database=keep_as)
        await _allow_connections(conn, live, False)
        try:
            for attempt in range(SWAP_ATTEMPTS):
                await _drain(conn, (live, replacement))
                try:
                    async with conn.transaction():
                        await conn.execute(
                            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_ident(live), _ident(keep_as))
                        )
                        await conn.execute(
                            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                                _ident(replacement), _ident(live)
                            )
                        )
                    break
                except pg_errors.ObjectInUse:
                    if attempt == SWAP_ATTEMPTS - 1:
                        raise RunbookFailed("restore.live_database_busy", database=live) from None
        finally:
            # After a swap `live` is the restored database; after a failure it is the original.
            await asyncio.shield(_allow_connections_surely(conn, admin_dsn, live))
        await asyncio.shield(_allow_connections_surely(conn, admin_dsn, keep_as))


async def _allow_connections_surely(conn: AnyConn, admin: str, name: str) -> None:
    """ALLOW_CONNECTIONS true on this connection, or on a fresh one when it broke (its backend
    killed, the network cut): a database left refusing connections refuses every login for good."""
    if not conn.broken and not conn.closed:
        try:
            await _allow_connections(conn, name, True)
            return
        except psycopg.Error:
            log.warning("swap: re-allowing connections to %s on a fresh connection", name, exc_info=True)
    await allow_connections_again(admin_dsn=admin, names=(name,))


async def allow_connections_again(*, admin_dsn: str, names: Sequence[str]) -> list[str]:
    """Those of these databases that refuse connections (ALLOW_CONNECTIONS false) accept them
    again; the names it changed."""
    async with connect_target(admin_dsn) as conn:
        cur = await conn.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s) AND NOT datallowconn ORDER BY datname",
            (list(names),),
        )
        refused = [str(r[0]) for r in await cur.fetchall()]
        for name in refused:
            await _allow_connections(conn, name, True)
    return refused


async def reopen_after_interrupted_swap(*, admin_dsn: str, live: str) -> list[str]:
    """After a process died during a swap: live, and a `<live>_before_*` copy the swap had just
    made, accept connections again if they refuse them; the names it changed.

    A swap refuses connections to live while it drains its sessions, and only its own `finally`
    allows them again: killed in between, the live database refuses every login.
    """
    before = re.compile(rf"^{re.escape(live)}_before_\d{{8}}_\d{{6}}$")
    async with connect_target(admin_dsn) as conn:
        cur = await conn.execute("SELECT datname FROM pg_database WHERE NOT datallowconn")
        refusing = [str(r[0]) for r in await cur.fetchall()]
    names = [name for name in refusing if name == live or before.match(name)]
    return await allow_connections_again(admin_dsn=admin_dsn, names=names) if names else []


BEFORE_OR_RESTORE = r"^{live}_(before|restore)_(\d{{8}}_\d{{6}})$"


async def prune_old_databases(
    *, admin_dsn: str, live: str, keep_days: int = 7, now: datetime | None = None
) -> list[str]:
    """Drop `<live>_before_*` and abandoned `<live>_restore_*` databases older than keep_days.

    Call it holding the restore lock, so a restore in progress is not taken for an abandoned one.
    """
    pattern = re.compile(BEFORE_OR_RESTORE.format(live=re.escape(live)))
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    async with connect_target(admin_dsn) as conn:
        cur = await conn.execute("SELECT datname FROM pg_database ORDER BY datname")
        names = [str(r[0]) for r in await cur.fetchall()]
    dropped = []
    for name in names:
        found = pattern.match(name)
        if found is None:
            continue
        made = datetime.strptime(found.group(2), STAMP_FORMAT).replace(tzinfo=UTC)
        if made < cutoff:
            await drop_database(admin_dsn, name)
            dropped.append(name)
    return dropped


VERIFY_SCRATCH_PREFIX = "gardenbot_verify_"
VERIFY_SCRATCH = re.compile(rf"^{VERIFY_SCRATCH_PREFIX}[0-9a-f]{{8}}$")  # verify_backup's scratch names
RESTORE_COPY = r"^{live}_restore_\d{{8}}_\d{{6}}$"


@dataclass(frozen=True)
class ScratchSweep:
    dropped: tuple[str, ...]
    in_use: tuple[str, ...]  # sessions still connected (a pg_restore outliving its bot): kept


async def sweep_scratch_databases(*, admin_dsn: str, live: str) -> ScratchSweep:
    """Drop what a killed verify or restore left on the target server: `gardenbot_verify_<hex>`
    and `<live>_restore_<time>`, exactly these names (never live, never a `_before_` copy).

    Call it holding the backup lock, so no verify or restore of this bot is making one now. A
    database with sessions is kept, not forced: someone is still using it.
    """
    restore_copy = re.compile(RESTORE_COPY.format(live=re.escape(live)))
    async with connect_target(admin_dsn) as conn:
        cur = await conn.execute("SELECT datname FROM pg_database ORDER BY datname")
        names = [str(r[0]) for r in await cur.fetchall()]
        dropped: list[str] = []
        in_use: list[str] = []
        for name in names:
            if name == live or not (VERIFY_SCRATCH.match(name) or restore_copy.match(name)):
                continue
            try:
                await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(_ident(name)))
            except pg_errors.ObjectInUse:
                in_use.append(name)
                continue
            dropped.append(name)
    return ScratchSweep(tuple(dropped), tuple(in_use))


# Database-level properties are not in the database's own catalogs: pg_restore writes them only
# with --create, naming the database as it was dumped. They are taken from the backup (not copied
# from the live database being replaced), so the restored database carries what the backup carried;
# only these statement shapes are applied, renamed to the new database.
DATABASE_TOC_ENTRY = re.compile(
    r"^\d+; \d+ \d+ (?:DATABASE PROPERTIES -|(?:COMMENT|ACL|SECURITY LABEL) - DATABASE) "
)
DUMPED_DBNAME = re.compile(r"^;\s+dbname: (?P<name>.*)$", re.MULTILINE)
IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
DATABASE_STATEMENTS = tuple(
    re.compile(pattern, re.DOTALL)
    for pattern in (
        rf"^COMMENT ON DATABASE (?P<db>{IDENT}) IS ",
        rf"^SECURITY LABEL (?:FOR {IDENT} )?ON DATABASE (?P<db>{IDENT}) IS ",
        rf"^ALTER DATABASE (?P<db>{IDENT}) (?:SET|RESET) ",
        rf"^ALTER ROLE {IDENT} IN DATABASE (?P<db>{IDENT}) (?:SET|RESET) ",
        rf"^(?:GRANT|REVOKE) [A-Z, ]+ ON DATABASE (?P<db>{IDENT}) (?:TO|FROM) ",
    )
)


def split_statements(script: str) -> list[str]:
    """A pg_restore script's statements: split at `;` outside quotes, comments and psql commands left out."""
    statements: list[str] = []
    current: list[str] = []
    quote: str | None = None
    for line in script.splitlines(keepends=True):
        if quote is None and not "".join(current).strip() and line.startswith(("--", "\\")):
            continue
        for ch in line:
            current.append(ch)
            if quote is not None:
                quote = None if ch == quote else quote  # a doubled quote closes and reopens
            elif ch in "'\"":
                quote = ch
            elif ch == ";":
                statements.append("".join(current).strip())
                current = []
    return statements


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident.lower()


def database_statements(script: str, dumped_as: str, new_name: str) -> list[str]:
    """The database-level statements of the script, aimed at new_name instead of dumped_as."""
    aimed = []
    target = sql.Identifier(new_name).as_string(None)
    for statement in split_statements(script):
        for pattern in DATABASE_STATEMENTS:
            found = pattern.match(statement)
            if found is not None and _unquote(found.group("db")) == dumped_as:
                aimed.append(statement[: found.start("db")] + target + statement[found.end("db") :])
                break
    return aimed


async def _pg_restore_output(backup: OpenedBackup, tools: PgTools, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(tools.pg_restore),
        *args,
        backup.archive,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=tool_env(),
        pass_fds=backup.pass_fds,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RunbookFailed("backup.unreadable", file=backup.path.name, detail=tail(err))
    return out.decode()


async def dumped_database_statements(backup: OpenedBackup, tools: PgTools, new_name: str) -> list[str]:
    """The backup's database-level GRANTs, settings and comment, as statements for new_name."""
    listing = await _pg_restore_output(backup, tools, "--create", "--list")
    dumped = DUMPED_DBNAME.search(listing)
    chosen = [line for line in listing.splitlines() if DATABASE_TOC_ENTRY.match(line)]
    if dumped is None or not chosen:
        return []
    with tempfile.NamedTemporaryFile("w", prefix="gardenbot-toc-", suffix=".list") as entries:
        entries.write("\n".join(chosen) + "\n")
        entries.flush()
        script = await _pg_restore_output(backup, tools, "--create", f"--use-list={entries.name}", "--file=-")
    return database_statements(script, dumped.group("name"), new_name)


async def apply_database_properties(
    *, admin_dsn: str, backup: OpenedBackup, new_name: str, tools: PgTools
) -> int:
    """Give new_name the backup's database-level properties; the number of statements applied."""
    statements = await dumped_database_statements(backup, tools, new_name)
    async with connect_target(admin_dsn) as conn:
        for statement in statements:
            try:
                await conn.execute(statement.encode())
            except pg_errors.Error as exc:
                raise RunbookFailed(
                    "restore.database_property_failed",
                    statement=mask_text(statement[:80]),
                    detail=mask_text(str(exc).strip().splitlines()[0] if str(exc).strip() else ""),
                ) from None
    return len(statements)


@dataclass(frozen=True)
class ApiHealth:
    healthy: bool
    waited_ms: int
    figure: str  # the last answer: "HTTP 200", "HTTP 503", "ConnectError"


HEALTHY_WORD = re.compile(rb"\bhealthy\b", re.IGNORECASE)  # "unhealthy" does not count


async def wait_for_api(
    http: httpx.AsyncClient, base_url: str, *, limit_s: float, interval_s: float = 0.25
) -> ApiHealth:
    """Poll GET {base}/health until it is healthy (2xx with "healthy" in the body) or limit_s passes."""
    started = time.monotonic()
    deadline = started + limit_s
    figure = "-"
    while True:
        remaining = deadline - time.monotonic()
        try:
            response = await http.get(f"{base_url}/health", timeout=max(0.1, min(5.0, remaining)))
            figure = f"HTTP {response.status_code}"
            if 200 <= response.status_code < 300 and HEALTHY_WORD.search(response.content):
                return ApiHealth(True, int((time.monotonic() - started) * 1000), figure)
        except httpx.HTTPError as exc:
            figure = type(exc).__name__
        if time.monotonic() + interval_s > deadline:
            return ApiHealth(False, int((time.monotonic() - started) * 1000), figure)
        await asyncio.sleep(interval_s)


async def restore_backup(
    *,
    dsn: str,
    backup: OpenedBackup,
    expected_sha256: str,
    expected_rows: Mapping[str, int],
    tools: PgTools,
    jobs: int = 1,
    at: datetime | None = None,
    progress: ProgressCallback | None = None,
    before_swap: Callable[[], Awaitable[None]] | None = None,
    alongside: Callable[[], Awaitable[object]] | None = None,
) -> RestoreOutcome:
    """Checksum, restore into `<live>_restore_<time>`, check row counts, swap.

    `alongside` (the caller's safety backup of the live database) runs at the same time as the
    restore; the swap waits for both, and a failed `alongside` stops the restore before the swap.
    `before_swap` runs right before the swap and stops the restore by raising (the caller's check
    that it still holds its lock).

    The live database (dsn's) is kept as `<live>_before_<time>`; on any failure before the swap
    the new database is dropped and live is untouched. Every pg tool reads the open `backup`,
    hashed again after the restore: bytes that differ from the approved ones are never swapped in.
    """
    started = time.monotonic()
    live = database_name(dsn)
    admin = admin_dsn(dsn)
    if backup.checked_sha256 != expected_sha256:
        await check_checksum(backup, expected_sha256, progress=progress)
    async with connect_target(admin) as conn:
        version, _ = await server_version_of(conn)
    check_tools_match_server(tools, version)
    new_name, keep_as = restore_database_names(live, at)
    owner = await database_owner(admin, live)
    restore = _restore_stream(
        admin=admin,
        backup=backup,
        new_name=new_name,
        expected_sha256=expected_sha256,
        expected_rows=expected_rows,
        tools=tools,
        owner=owner,
        jobs=jobs,
        progress=progress,
    )
    try:
        actual = await side_by_side(restore, alongside() if alongside is not None else None)
        if before_swap is not None:
            await before_swap()
        await report(progress, Step("swapping", 99))
        await swap_databases(admin_dsn=admin, live=live, replacement=new_name, keep_as=keep_as)
    except BaseException:
        await asyncio.shield(drop_database(admin, new_name))
        raise
    await report(progress, Step("restored", 100))
    return RestoreOutcome(
        live=live,
        kept_as=keep_as,
        row_counts=actual,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


async def side_by_side(main: Awaitable[T], other: Awaitable[object] | None) -> T:
    """Run both at once and return main's result once both succeeded.

    If `other` fails, main is cancelled and other's error raised. If main fails, other still
    finishes (a safety backup is worth keeping) and main's error is raised. Cancelled, both are.
    """
    if other is None:
        return await main
    main_task = asyncio.ensure_future(main)
    other_task = asyncio.ensure_future(other)
    try:
        await asyncio.wait([main_task, other_task], return_when=asyncio.FIRST_EXCEPTION)
        if other_task.done() and other_task.exception() is not None:
            main_task.cancel()
            await asyncio.wait([main_task])
            other_task.result()  # raises other's error
        await asyncio.wait([main_task, other_task])
    except BaseException:
        for task in (main_task, other_task):
            task.cancel()
        await asyncio.wait([main_task, other_task])
        raise
    if main_task.exception() is not None:
        if not other_task.cancelled() and other_task.exception() is not None:
            log.warning("alongside the failed restore, this failed too: %r", other_task.exception())
        return main_task.result()  # raises main's error
    other_task.result()
    return main_task.result()


async def _restore_stream(
    *,
    admin: str,
    backup: OpenedBackup,
    new_name: str,
    expected_sha256: str,
    expected_rows: Mapping[str, int],
    tools: PgTools,
    owner: str,
    jobs: int,
    progress: ProgressCallback | None,
) -> dict[str, int]:
    """The new database created, restored and checked, ready to swap; dropped on any failure."""
    await restore_into_new_database(
        admin_dsn=admin,
        backup=backup,
        new_name=new_name,
        tools=tools,
        owner=owner,
        jobs=jobs,
        progress=progress,
    )
    try:
        actual = await _finish_new_database(
            admin=admin,
            backup=backup,
            new_name=new_name,
            expected_sha256=expected_sha256,
            expected_rows=expected_rows,
            tools=tools,
            progress=progress,
        )
    except BaseException:
        await asyncio.shield(drop_database(admin, new_name))
        raise
    await report(progress, Step("ready_to_swap", 99))
    return actual


async def _finish_new_database(
    *,
    admin: str,
    backup: OpenedBackup,
    new_name: str,
    expected_sha256: str,
    expected_rows: Mapping[str, int],
    tools: PgTools,
    progress: ProgressCallback | None,
) -> dict[str, int]:
    """Row counts checked, the file hashed again, the backup's database properties applied."""
    await report(progress, Step("counting_rows", 99))
    actual, differences = await check_restored_database(
        admin_dsn=admin, name=new_name, expected_rows=expected_rows
    )
    if differences:
        raise RunbookFailed(
            "restore.row_counts_differ",
            tables=", ".join(d.table for d in differences[:10]),
            count=len(differences),
        )
    # Changed in place while pg_restore read it? Then what was restored is not what was approved.
    await check_checksum(backup, expected_sha256)
    await report(progress, Step("database_properties", 99))
    await apply_database_properties(admin_dsn=admin, backup=backup, new_name=new_name, tools=tools)
    return actual
