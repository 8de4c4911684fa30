"""The embedded default: real private PostgreSQL and Redis under a state directory."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import redis
import redis.asyncio as aioredis

import runbooks.sample_garden
from bot.embedded import EmbeddedServers, EmbeddedStartFailed, start_embedded, stop_embedded

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# A second gardenbot process: starts the embedded servers, optionally waits for a line on stdin,
# stops them. Warnings are errors and stdout must stay empty unless it says "ready".
CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bot.embedded import start_embedded, stop_embedded
    servers = start_embedded(Path(sys.argv[1]))
    if sys.argv[2] == "hold":
        print("ready", flush=True)
        sys.stdin.readline()
    stop_embedded(servers)
    """
)


def child(state_dir: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-W", "error", "-c", CHILD, str(state_dir), mode],
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def postgres_answers(servers: EmbeddedServers) -> bool:
    try:
        with psycopg.connect(servers.database_url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def redis_answers(servers: EmbeddedServers) -> bool:
    client = redis.Redis.from_url(servers.redis_url, socket_timeout=3, retry_on_timeout=False)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, OSError):
        return False
    finally:
        client.close()


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
    assert row is not None
    return int(row[0])


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    # Not under pytest's basetemp: a concurrent pytest session closes that to 0700, locking out
    # the unprivileged user pgserver runs PostgreSQL as when we are root.
    path = Path(tempfile.mkdtemp(prefix="gbt-embedded-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    with scratch_dir() as path:
        yield path
        # Whatever a failed test left running: adopt it and stop it.
        stop_embedded(start_embedded(path))


@pytest.fixture
def servers(state_dir: Path) -> Iterator[EmbeddedServers]:
    started = start_embedded(state_dir)
    yield started
    stop_embedded(started)


async def test_servers_are_reachable_and_kept_apart(servers: EmbeddedServers) -> None:
    async with await psycopg.AsyncConnection.connect(servers.database_url) as conn:
        cur = await conn.execute("SELECT current_database(), current_setting('server_version_num')")
        row = await cur.fetchone()
        assert row is not None
        assert row[0] == "gardenbot"
        server_major = int(row[1]) // 10000
    async with await psycopg.AsyncConnection.connect(servers.garden_database_url) as conn:
        cur = await conn.execute("SELECT current_database(), (SELECT count(*) FROM companies)")
        assert await cur.fetchone() == ("garden_dx", 4)

    bot_cache = aioredis.Redis.from_url(servers.redis_url)
    garden_cache = aioredis.Redis.from_url(servers.garden_redis_url)
    try:
        assert await bot_cache.ping()
        assert await garden_cache.ping()
        assert [key async for key in garden_cache.scan_iter(match="session:*")]
        assert [key async for key in garden_cache.scan_iter(match="cache:estimate:*")]
        assert await bot_cache.dbsize() == 0
    finally:
        await bot_cache.aclose()
        await garden_cache.aclose()

    version = await asyncio.create_subprocess_exec(
        str(servers.pg_bin_dir / "pg_dump"), "--version", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await version.communicate()
    assert out.decode().startswith(f"pg_dump (PostgreSQL) {server_major}.")

    # The URL is one libpq command line tools accept as is.
    dump = await asyncio.create_subprocess_exec(
        str(servers.pg_bin_dir / "pg_dump"),
        "--schema-only",
        "--table=companies",
        servers.garden_database_url,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await dump.communicate()
    assert dump.returncode == 0
    assert "CREATE TABLE public.companies" in out.decode()


def test_restart_keeps_the_data_and_does_not_recreate_the_sample(state_dir: Path) -> None:
    first = start_embedded(state_dir)
    users_before = count(first.garden_database_url, "users")
    with psycopg.connect(first.garden_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO companies (name) VALUES ('再起動テスト造園')")
    bot_cache = redis.Redis.from_url(first.redis_url)
    bot_cache.set("test:restart", "kept")
    bot_cache.close()

    stop_embedded(first)
    assert not postgres_answers(first)
    assert not redis_answers(first)

    second = start_embedded(state_dir)
    try:
        assert second == first
        assert count(second.garden_database_url, "companies") == 5
        assert count(second.garden_database_url, "users") == users_before
        bot_cache = redis.Redis.from_url(second.redis_url)
        assert bot_cache.get("test:restart") == b"kept"
        bot_cache.delete("test:restart")
        bot_cache.close()
        with psycopg.connect(second.garden_database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM companies WHERE name = '再起動テスト造園'")
    finally:
        stop_embedded(second)


def test_servers_stay_up_while_another_process_uses_them(state_dir: Path) -> None:
    mine = start_embedded(state_dir)
    other = child(state_dir, "hold")
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "ready"
        stop_embedded(mine)
        assert postgres_answers(mine)
        assert redis_answers(mine)
    finally:
        _, err = other.communicate("\n", timeout=60)
    assert other.returncode == 0, err
    assert not postgres_answers(mine)
    assert not redis_answers(mine)


async def test_start_from_inside_a_running_event_loop(state_dir: Path) -> None:
    started = start_embedded(state_dir)
    try:
        async with await psycopg.AsyncConnection.connect(started.garden_database_url) as conn:
            cur = await conn.execute("SELECT count(*) FROM estimates")
            assert await cur.fetchone() == (37,)
    finally:
        stop_embedded(started)


def test_two_first_starts_at_once_on_a_deep_directory() -> None:
    with scratch_dir() as scratch:
        _two_first_starts_at_once(scratch)


def _two_first_starts_at_once(scratch: Path) -> None:
    # Deeper than a unix socket path allows, so both servers need their short socket fallback.
    deep = scratch / ("d" * 60) / ("e" * 60)
    deep.parent.mkdir()
    racers = [child(deep, "once"), child(deep, "once")]
    results = [racer.communicate(timeout=120) for racer in racers]
    for racer, (out, err) in zip(racers, results, strict=True):
        assert racer.returncode == 0, err
        assert out == ""  # the console's stdout is its command output

    servers = start_embedded(deep)
    pg_socket_dir = Path(parse_qs(urlsplit(servers.database_url).query)["host"][0])
    redis_socket = Path(urlsplit(servers.redis_url).path)
    try:
        assert count(servers.garden_database_url, "companies") == 4
        assert count(servers.garden_database_url, "user_activity_logs") == 420
        assert not redis_socket.is_relative_to(deep)
    finally:
        stop_embedded(servers)
        with contextlib.suppress(OSError):
            pg_socket_dir.rmdir()  # pgserver's short socket directory, empty once stopped
    assert not redis_socket.parent.exists()


def test_a_failed_first_start_stops_the_servers_and_the_next_one_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with scratch_dir() as scratch:
        _failed_first_start(scratch / "state", monkeypatch)


def _failed_first_start(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken_sample(conn: psycopg.AsyncConnection[object]) -> None:
        raise psycopg.errors.DiskFull("no space left for the sample")

    monkeypatch.setattr(runbooks.sample_garden, "create_sample_garden", broken_sample)
    try:
        with pytest.raises(EmbeddedStartFailed, match="DiskFull"):
            start_embedded(state)
        assert not (state / "pg" / "postmaster.pid").exists()
        assert not (state / "redis" / "redis.sock").exists()
    finally:
        monkeypatch.undo()
        servers = start_embedded(state)
        companies = count(servers.garden_database_url, "companies")
        stop_embedded(servers)
    assert companies == 4
