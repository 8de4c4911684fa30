"""What a dead or cut-off restore leaves on the target server, and how it is put right: a live
database set to refuse connections by a swap that never reached its `finally`, and scratch or
restore copies that no in-process cleanup will ever drop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from runbooks import restore as restore_runbook
from runbooks.health import check_database
from runbooks.pg_tools import AnyConn
from runbooks.restore import reopen_after_interrupted_swap, swap_databases, sweep_scratch_databases
from runbooks.verify_backup import scratch_database_name
from tests.support.chinook import CHINOOK_ROWS, clone_database
from tests.support.servers import ADMIN_DSN, drop_database, url_for

REPO = Path(__file__).resolve().parents[2]
RESTORE_COPY = "_restore_20200101_000000"
BEFORE_COPY = "_before_20200101_000000"


def admin(statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        cur = conn.execute(statement.encode())
        return cur.fetchall() if cur.description else []


def allows_connections(name: str) -> bool:
    [(allowed,)] = admin(f"SELECT datallowconn FROM pg_database WHERE datname = '{name}'")
    return bool(allowed)


def exists(name: str) -> bool:
    return bool(admin(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))


@pytest.fixture
def live(chinook: str) -> Iterator[str]:
    """A Chinook copy; it and every database named after it are dropped afterwards."""
    name = clone_database(chinook)
    try:
        yield name
    finally:
        admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        for (leftover,) in admin(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}%'"):
            drop_database(str(leftover))


@pytest.fixture
def replacement(live: str) -> str:
    admin(f'CREATE DATABASE "{live}{RESTORE_COPY}"')
    return f"{live}{RESTORE_COPY}"


SWAP_THAT_HANGS_IN_THE_DRAIN = textwrap.dedent(
    """
    import asyncio, sys
    import runbooks.restore as restore

    async def drain_forever(conn, names):
        print("draining", flush=True)
        await asyncio.sleep(3600)

    restore._drain = drain_forever
    admin, live, replacement, keep_as = sys.argv[1:]
    asyncio.run(restore.swap_databases(admin_dsn=admin, live=live, replacement=replacement, keep_as=keep_as))
    """
)


async def test_a_swap_killed_while_draining_leaves_live_refusing_logins_until_recovery_allows_them(
    live: str, replacement: str
) -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            SWAP_THAT_HANGS_IN_THE_DRAIN,
            ADMIN_DSN,
            live,
            replacement,
            f"{live}{BEFORE_COPY}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ) as swap:
        try:
            assert swap.stdout is not None
            assert swap.stdout.readline().strip() == "draining"
        finally:
            swap.send_signal(signal.SIGKILL)
            swap.wait(10)

    # Killed between ALLOW_CONNECTIONS false and its `finally`: nothing else would ever undo it.
    assert not allows_connections(live)
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        psycopg.connect(url_for(live)).close()
    unhealthy = await check_database(url_for(live), timeout=5)
    assert (unhealthy.level, unhealthy.detail_key) == ("fail", "health.detail.allow_connections_false")
    assert f"ALTER DATABASE {live} WITH ALLOW_CONNECTIONS true" in unhealthy.detail

    reopened = await reopen_after_interrupted_swap(admin_dsn=ADMIN_DSN, live=live)

    assert reopened == [live]
    assert allows_connections(live)
    healthy = await check_database(url_for(live), timeout=5)
    assert healthy.level == "ok"
    with psycopg.connect(url_for(live)) as conn:
        assert conn.execute("SELECT count(*) FROM track").fetchone() == (CHINOOK_ROWS["public.track"],)
    assert exists(replacement) and not exists(f"{live}{BEFORE_COPY}")  # the swap never happened
    assert await reopen_after_interrupted_swap(admin_dsn=ADMIN_DSN, live=live) == []  # allowed: left alone


async def test_recovery_reopens_only_live_and_its_before_copies(live: str) -> None:
    before, stranger = f"{live}{BEFORE_COPY}", f"{live}_other"
    for name in (before, stranger):
        admin(f'CREATE DATABASE "{name}" WITH ALLOW_CONNECTIONS false')

    reopened = await reopen_after_interrupted_swap(admin_dsn=ADMIN_DSN, live=live)

    assert reopened == [before]  # live already accepted connections: it was not touched
    assert allows_connections(before) and allows_connections(live)
    assert not allows_connections(stranger)
    assert not allows_connections("template0")


async def test_a_swap_whose_admin_connection_dies_mid_drain_allows_live_again_on_a_fresh_one(
    live: str, replacement: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    drain = restore_runbook._drain

    async def drain_after_losing_the_connection(conn: AnyConn, names: tuple[str, ...]) -> None:
        # The swap's own backend is terminated, as a failover or a network cut would end it.
        admin(f"SELECT pg_terminate_backend({conn.info.backend_pid})")
        await asyncio.sleep(0.2)
        await drain(conn, names)

    monkeypatch.setattr(restore_runbook, "_drain", drain_after_losing_the_connection)

    with pytest.raises(psycopg.OperationalError):
        await swap_databases(
            admin_dsn=ADMIN_DSN, live=live, replacement=replacement, keep_as=f"{live}{BEFORE_COPY}"
        )

    assert allows_connections(live)
    with psycopg.connect(url_for(live)) as conn:
        assert conn.execute("SELECT count(*) FROM track").fetchone() == (CHINOOK_ROWS["public.track"],)
    assert exists(replacement) and not exists(f"{live}{BEFORE_COPY}")  # live untouched


async def test_the_sweep_drops_verify_scratch_and_abandoned_restore_copies_and_nothing_else(
    live: str,
) -> None:
    scratch = scratch_database_name()
    abandoned = f"{live}{RESTORE_COPY}"
    kept = {
        live,
        f"{live}{BEFORE_COPY}",  # retention's, not the sweep's
        f"{live}_restore_20200101_000000_x",
        f"{live}_restore_2020",
        f"{live}x{RESTORE_COPY}",  # another live database's copy
        f"{live}_scratch",
    }
    in_use = scratch_database_name()
    for name in (scratch, abandoned, in_use, *kept - {live}):
        admin(f'CREATE DATABASE "{name}"')
    not_hex = f"gardenbot_verify_{live[-8:]}x"  # a near miss: not the generated name
    admin(f'CREATE DATABASE "{not_hex}"')
    session = psycopg.connect(url_for(in_use))  # a pg_restore still running into it
    try:
        swept = await sweep_scratch_databases(admin_dsn=ADMIN_DSN, live=live)

        assert {scratch, abandoned} <= set(swept.dropped)
        assert in_use in swept.in_use and exists(in_use)
        assert all(n.startswith("gardenbot_verify_") or n == abandoned for n in swept.dropped)
        assert not exists(scratch) and not exists(abandoned)
        assert all(exists(name) for name in kept) and exists(not_hex)
    finally:
        session.close()
        for name in (in_use, not_hex):
            drop_database(name)
    assert await count_tracks(live) == CHINOOK_ROWS["public.track"]


async def count_tracks(name: str) -> int:
    async with await psycopg.AsyncConnection.connect(url_for(name)) as conn:
        cur = await conn.execute("SELECT count(*) FROM track")
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])
