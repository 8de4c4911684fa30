"""`gardenbot serve` as a child process, talking to a Slack Web API stand-in, driven over real HTTP.

The end-to-end tier: most Slack behaviour is tested in-process (tests/support/slack_scenario.py);
what needs the real server (start-up, HTTP, signatures and body sizes at the door, probes, metrics,
a frozen store) is tested here. `serving(...)` starts the production server (uvicorn) on a free
port with a throwaway bot store, a unique Redis prefix, a throwaway target database and its own
target Redis database, waits for /healthz, and stops it with SIGTERM afterwards. `BotServer` is a
`SlackDriver` that POSTs signed requests and reads back what the bot sent to the stand-in and wrote
to its store.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import redis
import yaml

from tests.support.runtime import (
    AUDIT_KEY,
    GARDENBOT,
    REPO_ROOT,
    ROLES_YAML,
    child_env,
    merge,
    target_redis_url,
)
from tests.support.servers import REDIS_URL, free_port, redis_prefix, throwaway_database
from tests.support.signing import SIGNING_SECRET
from tests.support.slack_api import SlackApiStandIn, workspace_standin
from tests.support.slack_driver import Acked, SlackDriver

AddressFrom = Literal["flags", "env", "yaml", "port-only"]

# `cache flush` empties this whole Redis database: only these tests' keys may live there.
SERVE_REDIS_DB = int(os.environ.get("TEST_SERVE_REDIS_DB", "12"))
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class BotServer(SlackDriver):
    """One running `gardenbot serve` and the stand-in it talks to."""

    def __init__(
        self,
        base_url: str,
        standin: SlackApiStandIn,
        database_url: str,
        process: subprocess.Popen[bytes],
        log_path: Path,
    ) -> None:
        super().__init__(standin, database_url, SERVE_REDIS_DB)
        self.base_url = base_url
        self.process = process
        self.log_path = log_path

    @property
    def events_url(self) -> str:
        return f"{self.base_url}/slack/events"

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def is_running(self) -> bool:
        return self.process.poll() is None

    async def post(self, body: bytes, headers: Mapping[str, str], *, timeout: float = 10.0) -> httpx.Response:
        async with httpx.AsyncClient(timeout=timeout) as http:
            return await http.post(self.events_url, content=body, headers=dict(headers))

    async def deliver(self, body: bytes, headers: Mapping[str, str], *, timeout: float = 10.0) -> Acked:
        response = await self.post(body, headers, timeout=timeout)
        return Acked(response.status_code, response.text)

    async def get(self, path: str, *, timeout: float = 10.0) -> httpx.Response:
        async with httpx.AsyncClient(timeout=timeout) as http:
            return await http.get(self.base_url + path)


def write_config(path: Path, extra: Mapping[str, Any] | None = None) -> Path:
    data = merge(ROLES_YAML, extra or {})
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _wait_healthy(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"gardenbot serve exited with {process.returncode}:\n"
                + log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base_url + "/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(
        "gardenbot serve did not answer /healthz in time:\n"
        + log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
    )


def launch_server(
    workdir: Path,
    *,
    standin: SlackApiStandIn,
    database_url: str,
    target_database_url: str,
    prefix: str,
    extra_env: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    address_from: AddressFrom = "flags",
) -> BotServer:
    """Start `gardenbot serve` against the given store without waiting for it (see `start_server`).

    The caller waits with `wait_healthy` and stops it with `stop_server`; several can start at once.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    state_dir = workdir / "state"
    port = free_port()
    address: dict[str, Any] = {"host": host, "port": port}
    if address_from == "yaml":
        config = {**(config or {}), "server": address}
    config_path = write_config(workdir / "gardenbot.yml", config)
    log_path = workdir / "serve.log"
    flags = ["--host", host, "--port", str(port)] if address_from == "flags" else []
    address_env = {"GARDENBOT_HOST": host, "PORT": str(port)} if address_from == "env" else {}
    if address_from == "port-only":
        address_env = {"PORT": str(port)}
    env = child_env(
        {
            "GARDENBOT_LOG_LEVEL": "INFO",
            "GARDENBOT_CONFIG": str(config_path),
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "GARDENBOT_REDIS_PREFIX": prefix,
            "GARDEN_DATABASE_URL": target_database_url,
            "GARDEN_REDIS_URL": target_redis_url(SERVE_REDIS_DB),
            "GARDENBOT_STATE_DIR": str(state_dir),
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "GARDENBOT_AUDIT_KEY": AUDIT_KEY,
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_API_URL": standin.url,
            **address_env,
            **(extra_env or {}),
        }
    )
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(GARDENBOT), "serve", *flags],
            env=env,
            cwd=str(REPO_ROOT),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return BotServer(f"http://{host}:{port}", standin, database_url, process, log_path)


def wait_healthy(server: BotServer) -> None:
    """Until /healthz answers 200; RuntimeError with the log if the process exits or never answers."""
    _wait_healthy(server.base_url, server.process, server.log_path)


def stop_server(server: BotServer) -> None:
    """SIGTERM, then SIGKILL if it has not stopped in STOP_TIMEOUT_S."""
    _stop(server.process)


@contextlib.contextmanager
def start_server(
    workdir: Path,
    *,
    standin: SlackApiStandIn,
    database_url: str,
    target_database_url: str,
    prefix: str,
    extra_env: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    address_from: AddressFrom = "flags",
) -> Iterator[BotServer]:
    """Run `gardenbot serve` against the given store; SIGTERM it afterwards.

    It listens on `host` and a free port, told by --host/--port, GARDENBOT_HOST/PORT or `server:`;
    "port-only" gives PORT alone, so the host is the default one (`host` must then be 127.0.0.1).
    """
    server = launch_server(
        workdir,
        standin=standin,
        database_url=database_url,
        target_database_url=target_database_url,
        prefix=prefix,
        extra_env=extra_env,
        config=config,
        host=host,
        address_from=address_from,
    )
    try:
        wait_healthy(server)
        yield server
    finally:
        stop_server(server)


@contextlib.contextmanager
def serving(
    workdir: Path,
    *,
    database_url: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    address_from: AddressFrom = "flags",
) -> Iterator[BotServer]:
    """A stand-in, throwaway databases and a Redis prefix, and the server on them; all removed after.

    `database_url` replaces the throwaway bot store (an unreachable or private one).
    """
    with (
        workspace_standin() as standin,
        throwaway_database("gbt_serve") as own_store,
        throwaway_database("gbt_target") as target,
        redis_prefix() as prefix,
        start_server(
            workdir,
            standin=standin,
            database_url=database_url or own_store,
            target_database_url=target,
            prefix=prefix,
            extra_env=extra_env,
            config=config,
            host=host,
            address_from=address_from,
        ) as server,
    ):
        yield server


def target_redis() -> redis.Redis:
    """The target Redis database of the servers started here."""
    return redis.Redis.from_url(target_redis_url(SERVE_REDIS_DB), decode_responses=True)


# --- a private PostgreSQL that a test may freeze ----------------------------------------------

PG_BIN = Path(os.environ.get("GARDENBOT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PrivatePostgresUnavailable(RuntimeError):
    """initdb/pg_ctl cannot run here; the caller skips with this reason."""


def _children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid` (PostgreSQL's backends and workers), read from /proc."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of one test's own, in a temporary directory, on a free port."""

    root: Path
    port: int
    as_postgres: bool
    frozen: list[int] | None = None
    options: str = ""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def postmaster_pid(self) -> int:
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(PG_BIN / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def freeze(self) -> list[int]:
        """SIGSTOP the postmaster first (so it forks no more), then every child it has."""
        postmaster = self.postmaster_pid
        os.kill(postmaster, signal.SIGSTOP)
        stopped = [postmaster]
        for child in _children_of(postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)
                stopped.append(child)
        self.frozen = stopped
        return stopped

    def start(self) -> None:
        log_file = str(self.root / "pg.log")
        started = self.run(
            "pg_ctl", "-D", str(self.data_dir), "-o", self.options, "-l", log_file, "-w", "start"
        )
        if started.returncode != 0:
            raise PrivatePostgresUnavailable(f"pg_ctl start failed: {started.stderr.strip()[-300:]}")

    def stop(self) -> None:
        """Stop the server for real (every connection closed), as a crash or a restart would."""
        self.run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")

    def thaw(self) -> None:
        for pid in reversed(self.frozen or []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen = None


@contextlib.contextmanager
def private_postgres(settings: Sequence[str] = ()) -> Iterator[PrivatePostgres]:
    """initdb + pg_ctl start in a temporary directory (as the postgres OS user when we are root).

    `settings` are extra server settings, `name=value` each (e.g. shared_preload_libraries=…).

    Raises PrivatePostgresUnavailable when that cannot be done here.
    """
    import shutil
    import tempfile

    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        raise PrivatePostgresUnavailable(f"no initdb/pg_ctl in {PG_BIN}")
    as_postgres = os.geteuid() == 0  # initdb refuses to run as root
    root = Path(tempfile.mkdtemp(prefix="gbt-pg-"))
    if as_postgres:
        if shutil.which("runuser") is None:
            shutil.rmtree(root, ignore_errors=True)
            raise PrivatePostgresUnavailable("running as root and no runuser to become postgres")
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise PrivatePostgresUnavailable("running as root and there is no postgres OS user") from None
        os.chown(root, user.pw_uid, user.pw_gid)
    pg = PrivatePostgres(root=root, port=free_port(), as_postgres=as_postgres)
    started = False
    try:
        init = pg.run(
            "initdb", "-D", str(pg.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"
        )
        if init.returncode != 0:
            raise PrivatePostgresUnavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
        pg.options = f"-p {pg.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg.options += "".join(f" -c {setting}" for setting in settings)
        start = pg.run(
            "pg_ctl", "-D", str(pg.data_dir), "-o", pg.options, "-l", str(root / "pg.log"), "-w", "start"
        )
        if start.returncode != 0:
            log = (root / "pg.log").read_text(errors="replace")[-500:] if (root / "pg.log").exists() else ""
            raise PrivatePostgresUnavailable(f"pg_ctl start failed: {start.stderr.strip()[-300:]} {log}")
        started = True
        yield pg
    finally:
        pg.thaw()  # never leave a stopped server behind
        if started:
            pg.run("pg_ctl", "-D", str(pg.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
