"""The bot's own PostgreSQL: a connection pool, versioned migrations, and 'is it there' checks.

Every query of the bot's store goes through `Store.connection()`; a store that cannot be reached
raises StoreUnavailable quickly (connect timeout, pool timeout) instead of hanging the caller.

A store that accepts connections and then never answers (a frozen server, a dead link) would make
a query wait for ever: the server-side statement_timeout never fires on a server that does not
run. So every use of a connection has a client-side bound too: when it passes, the connection's
socket is shut down under the query, which then fails at once (no cancel request to a server that
cannot answer it), the pool discards the broken connection, and the caller gets StoreUnavailable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, NoReturn

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from core.errors import StoreUnavailable
from core.secrets import mask_dsn

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3
POOL_TIMEOUT_S = 4.0
DOWN_POOL_TIMEOUT_S = 0.5  # once the store is known down, callers wait this long, not POOL_TIMEOUT_S
STATEMENT_TIMEOUT_MS = 15_000
REACHABLE_TIMEOUT_S = 1.5  # below /readyz's own 2 s, so readiness never waits on a cancellation
QUERY_BOUND_S = 3.0  # longest a use of a connection may take, acquiring it included
DOWN_QUERY_BOUND_S = 0.5  # once a bound was hit, until a use succeeds again
MIGRATE_BOUND_S = 300.0  # migrations may rewrite tables: long maintenance gets a long bound
MIGRATION_LOCK = 0x6761_7264_656E  # "garden": one migrator at a time across processes

Conn = psycopg.AsyncConnection[dict[str, Any]]


def _configure_kwargs() -> dict[str, object]:
    return {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "row_factory": dict_row,
        "autocommit": True,
        "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        "application_name": "gardenbot",
    }


class Store:
    """The bot's store. Cheap to build; `open()` never fails even when the database is down."""

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.dsn = dsn
        self._pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs=_configure_kwargs(),
            open=False,
            timeout=POOL_TIMEOUT_S,
            reconnect_timeout=0,  # keep trying in the background; never give up on the store
            name="gardenbot-store",
        )
        self._migrated = False
        self._known_down = False

    def __repr__(self) -> str:
        return f"Store({mask_dsn(self.dsn)})"

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def connection(self, *, bound: float | None = None) -> AsyncIterator[Conn]:
        """A pooled connection for at most `bound` seconds (default QUERY_BOUND_S), acquiring included.

        Past the bound the connection is severed: the query in flight fails, the pool drops the
        connection, and StoreUnavailable is raised. Long maintenance (migrate) passes a longer bound.
        """
        limit = self._bound(bound)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        severed: list[Conn] = []
        watchdog: asyncio.TimerHandle | None = None
        pool_timeout = DOWN_POOL_TIMEOUT_S if self._known_down else POOL_TIMEOUT_S
        try:
            async with self._pool.connection(timeout=min(pool_timeout, limit)) as conn:
                watchdog = loop.call_at(deadline, _sever, conn, severed)
                yield conn
            self._known_down = False
        except (PoolTimeout, psycopg.OperationalError) as exc:
            self._unavailable(type(exc).__name__)
        except psycopg.Error as exc:
            if not severed:
                raise
            self._unavailable(type(exc).__name__)
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if severed:  # the body swallowed the failure: still, the store did not answer in time
            self._unavailable("bound")

    def _bound(self, bound: float | None) -> float:
        if bound is not None:
            return bound
        return DOWN_QUERY_BOUND_S if self._known_down else QUERY_BOUND_S

    def _unavailable(self, why: str) -> NoReturn:
        self._known_down = True
        log.warning("bot store unreachable: %s", why)
        raise StoreUnavailable("store.unavailable") from None

    async def is_reachable(self) -> bool:
        """Answers within REACHABLE_TIMEOUT_S even when the server is frozen."""
        try:
            async with self.connection(bound=REACHABLE_TIMEOUT_S) as conn:
                await conn.execute("SELECT 1")
        except StoreUnavailable:
            return False
        return True

    async def ready(self) -> bool:
        """Reachable and migrated: a store that comes back after start-up is migrated then."""
        if not await self.is_reachable():
            return False
        if not self._migrated:
            try:
                await self.migrate()
            except StoreUnavailable:
                return False
        return True

    async def migrate(self) -> list[str]:
        """Apply the migrations not yet applied; safe to run twice and from two processes at once."""
        applied: list[str] = []
        async with self.connection(bound=MIGRATE_BOUND_S) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM schema_migrations")
            done = {str(row["version"]) for row in await cur.fetchall()}
            for name, sql in migration_files():
                if name in done:
                    continue
                await conn.execute(sql.encode())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (name,))
                applied.append(name)
        self._migrated = True
        if applied:
            log.info("store migrated: %s", ", ".join(applied))
        return applied


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) in order; the version is the file name without .sql."""
    folder = resources.files("store") / "migrations"
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")) for entry in files]


def _sever(conn: Conn, severed: list[Conn]) -> None:
    """Shut the connection's socket down: a query waiting on it fails now, with no server reply."""
    severed.append(conn)
    log.warning("bot store did not answer in time: dropping the connection")
    try:
        fd = conn.pgconn.socket
    except psycopg.OperationalError:
        return  # already closed
    try:
        # A duplicate of libpq's socket: shutting it down ends the connection, closing it does not.
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
