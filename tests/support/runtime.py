"""A bot on throwaway state: settings, runtime, CLI runs, and stand-ins for the target system.

Everything here talks to the real PostgreSQL and Redis of the test run (tests/support/servers.py).
The target's API is a tiny local HTTP server; a hanging target is a TCP listener that accepts and
never answers; an unreachable one is a port nobody listens on.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import redis
import yaml

from bot.runtime import Runtime, open_runtime
from commands.base import Actor, Request
from core.config import Settings, load_settings
from core.reply import Reply, Table
from tests.support.servers import ADMIN_DSN, REDIS_URL, free_port, redis_prefix, throwaway_database

GARDENBOT = Path(sys.executable).with_name("gardenbot")
REPO_ROOT = Path(__file__).resolve().parents[2]

# `cache flush` empties this whole Redis database: nobody else's tests may use it (another run beside
# this one picks another with TEST_TARGET_REDIS_DB).
TARGET_REDIS_DB = int(os.environ.get("TEST_TARGET_REDIS_DB", "13"))
AUDIT_KEY = "test-audit-key-0123456789abcdef-0123456789abcdef"

# The OS account running the tests (root in CI): the console acts as the admin it is mapped to,
# and an admin's console may act as anyone else (--user), audited as impersonation.
OS_LOGIN = pwd.getpwuid(os.getuid()).pw_name
CONSOLE_ADMIN = "U0ADMIN"

ROLES_YAML: dict[str, Any] = {
    "roles": {
        "admin": ["U0ADMIN", "U0ADMIN2"],
        "operator": ["U0OPS", "S0ONCALL", "U0LEAD", "U0LEAD2"],
        "viewer": ["U0INTERN"],
    },
    "approvers": ["U0LEAD", "U0LEAD2", "U0ADMIN"],
    "default_role": "none",
    "channels": {"ops": "C0OPS", "alerts": "C0ALERTS", "incidents": "C0INC", "reports": "C0REPORTS"},
    # A full disk or busy machine must not make "all well" fail; the thresholds are tested elsewhere.
    "health": {"timeout_seconds": 2, "disk_fail_percent": 100, "memory_fail_percent": 100},
    "console": {"users": {OS_LOGIN: CONSOLE_ADMIN}},
}


def target_redis_url(db: int = TARGET_REDIS_DB) -> str:
    base, _, _ = REDIS_URL.rpartition("/")
    return f"{base}/{db}"


closed_port = free_port  # a port nobody listens on: an unreachable server


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class BotWorld:
    """One test's bot: its YAML, its environment, its private store and key prefix."""

    config_path: Path
    state_dir: Path
    database_url: str
    redis_prefix: str
    target_database_url: str
    api_url: str
    yaml_data: dict[str, Any] = field(default_factory=lambda: dict(ROLES_YAML))
    extra_env: dict[str, str] = field(default_factory=dict)

    def configure(self, **yaml_extra: Any) -> None:
        """Merge keys into the YAML file (e.g. health={"timeout_seconds": 1})."""
        self.yaml_data = merge(self.yaml_data, yaml_extra)
        self.write_yaml()

    def write_yaml(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.yaml_data, allow_unicode=True), encoding="utf-8")

    @property
    def env(self) -> dict[str, str]:
        return {
            "GARDENBOT_CONFIG": str(self.config_path),
            "GARDENBOT_STATE_DIR": str(self.state_dir),
            "GARDENBOT_REDIS_PREFIX": self.redis_prefix,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": REDIS_URL,
            "GARDEN_DATABASE_URL": self.target_database_url,
            "GARDEN_REDIS_URL": target_redis_url(),
            "GARDEN_API_URL": self.api_url,
            "GARDENBOT_AUDIT_KEY": AUDIT_KEY,
            **self.extra_env,
        }

    def settings(self) -> Settings:
        self.write_yaml()
        return load_settings(self.env, self.config_path)

    @property
    def spool_path(self) -> Path:
        return self.state_dir / "audit-spool.jsonl"

    @asynccontextmanager
    async def runtime(self) -> AsyncIterator[Runtime]:
        runtime = await open_runtime(self.settings())
        try:
            yield runtime
        finally:
            await runtime.close()

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `gardenbot ARGS` in a child process with this world's environment."""
        self.write_yaml()
        return run_gardenbot(self.env, *args, timeout=timeout)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the bot's store directly (as the superuser), outside the bot."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cur = conn.execute(sql.encode() if not params else sql, params)
            return cur.fetchall() if cur.description else []


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a `gardenbot` child process: `env` on a bare minimum (no inherited secrets)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        **env,
    }


def start_gardenbot(env: Mapping[str, str], *args: str) -> subprocess.Popen[str]:
    """`gardenbot ARGS` started in a child process, its output piped; the caller waits for it."""
    return subprocess.Popen(
        [str(GARDENBOT), *args],
        env=child_env(env),
        cwd=str(REPO_ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def bot_world_in(
    folder: Path,
    *,
    api_url: str,
    target_database_url: str,
    yaml_data: Mapping[str, Any] = ROLES_YAML,
    extra_env: Mapping[str, str] | None = None,
    store_prefix: str = "gbt",
) -> Iterator[BotWorld]:
    """A BotWorld in `folder` on a throwaway store and Redis prefix, both removed afterwards."""
    with throwaway_database(store_prefix) as database_url, redis_prefix() as prefix:
        world = BotWorld(
            config_path=folder / "gardenbot.yml",
            state_dir=folder / "state",
            database_url=database_url,
            redis_prefix=prefix,
            target_database_url=target_database_url,
            api_url=api_url,
            yaml_data=dict(yaml_data),
            extra_env=dict(extra_env or {}),
        )
        world.write_yaml()
        yield world


def run_gardenbot(
    env: Mapping[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GARDENBOT), *args],
        env=child_env(env),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def request(user: str, text: str, *, groups: frozenset[str] = frozenset()) -> Request:
    return Request(actor=Actor(user_id=user, group_ids=groups), text=text, source="console")


def table_of(reply: Reply) -> Table:
    tables = [e for e in reply.elements if isinstance(e, Table)]
    assert tables, f"no table in {reply}"
    return tables[0]


def row_named(reply: Reply, name: str) -> tuple[str, tuple[str, ...]]:
    """The (level, row) of the check whose first column is `name`."""
    table = table_of(reply)
    for level, row in zip(table.levels, table.rows, strict=True):
        if row[0] == name:
            return level, row
    raise AssertionError(f"no row {name!r} in {table.rows}")


# --- the target system's stand-ins -------------------------------------------------------------


class _HealthHandler(BaseHTTPRequestHandler):
    answer: tuple[int, bytes] = (200, b'{"status":"healthy"}')
    delay: float = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        status, body = self.answer if self.path == "/health" else (404, b"{}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def health_api(
    status: int = 200, body: bytes = b'{"status":"healthy"}', *, delay: float = 0.0
) -> Iterator[str]:
    """A local stand-in for the Garden DX API answering GET /health (by default at once: 200, healthy)."""
    handler = type("HealthHandler", (_HealthHandler,), {"answer": (status, body), "delay": delay})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="health-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def hanging_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word; yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # kept open, never read from or written to

    thread = threading.Thread(target=accept_forever, name="hanging-listener", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in held:
            with suppress(OSError):
                conn.close()


def target_redis(db: int = TARGET_REDIS_DB) -> redis.Redis:
    return redis.Redis.from_url(target_redis_url(db), decode_responses=True)


TARGET_KEYS = {"estimate:1": "見積", "estimate:2": "quote", "price:master": "v42", "session:abc": "U1"}


@contextmanager
def target_cache_holding(keys: Mapping[str, str], db: int = TARGET_REDIS_DB) -> Iterator[dict[str, str]]:
    """The target cache (Redis database `db`) holding just `keys`; emptied again afterwards."""
    client = target_redis(db)
    client.flushdb()
    client.mset(dict(keys))
    try:
        yield dict(keys)
    finally:
        client.flushdb()
        client.close()


def admin_dsn() -> str:
    return ADMIN_DSN
