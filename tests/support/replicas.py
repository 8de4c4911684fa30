"""Several `gardenbot serve` processes on the same stores, as replicas behind a load balancer are.

`replicas(...)` starts N servers (tests/support/serve.py) at once on one throwaway bot store, one
coordination Redis prefix, one target database and one shared backup folder, behind the same
signing secret and talking to one Slack Web API stand-in. Each keeps its own state directory, as a
pod keeps its own disk. `ReplicaSet` hands out each one as a `BotServer`, kills one with SIGKILL
and starts it again. pg_dump waits at a gate (tests/support/faults.py), so a backup runs exactly as
long as a test wants; the gate starts open.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.faults import GatedPgDump, gated_pg_dump
from tests.support.runtime import AUDIT_KEY, run_gardenbot
from tests.support.serve import BotServer, launch_server, stop_server, wait_healthy
from tests.support.servers import REDIS_URL, redis_prefix, throwaway_database
from tests.support.slack_api import SlackApiStandIn, workspace_standin

KILL_WAIT_S = 30.0


@dataclass
class ReplicaSet:
    """N `gardenbot serve` processes on one bot store and one coordination Redis prefix."""

    workdir: Path
    standin: SlackApiStandIn
    database_url: str
    target_database_url: str
    prefix: str
    gate: GatedPgDump
    backup_dir: Path
    config: Mapping[str, Any]
    servers: list[BotServer] = field(default_factory=list)

    def __getitem__(self, index: int) -> BotServer:
        return self.servers[index]

    def __len__(self) -> int:
        return len(self.servers)

    def _launch(self, index: int) -> BotServer:
        return launch_server(
            self.workdir / f"replica-{index}",
            standin=self.standin,
            database_url=self.database_url,
            target_database_url=self.target_database_url,
            prefix=self.prefix,
            extra_env={"GARDENBOT_PG_BIN_DIR": str(self.gate.folder)},
            config=self.config,
        )

    def start(self, count: int) -> None:
        """Start `count` replicas together (they race to migrate the fresh store) and wait for all."""
        self.servers = [self._launch(i) for i in range(count)]  # `stop` ends them if one fails
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(wait_healthy, self.servers))

    def kill(self, index: int) -> None:
        """SIGKILL one replica, as the kernel's OOM killer or a lost node would; wait until it is gone."""
        process = self.servers[index].process
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=KILL_WAIT_S)

    def ensure_running(self) -> None:
        """Start again every replica that is no longer running (a test before killed it)."""
        for index, server in enumerate(self.servers):
            if not server.is_running():
                restarted = self._launch(index)
                wait_healthy(restarted)
                self.servers[index] = restarted

    def stop(self) -> None:
        for server in self.servers:
            stop_server(server)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`gardenbot ARGS` on the replicas' stores (as an operator's shell beside them would run it)."""
        env = {
            "GARDENBOT_CONFIG": str(self.workdir / "replica-0" / "gardenbot.yml"),
            "GARDENBOT_STATE_DIR": str(self.workdir / "cli-state"),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": REDIS_URL,
            "GARDENBOT_REDIS_PREFIX": self.prefix,
            "GARDENBOT_AUDIT_KEY": AUDIT_KEY,
        }
        return run_gardenbot(env, *args, timeout=timeout)

    def logs(self) -> str:
        """Every replica's log tail, for failure messages."""
        return "\n".join(f"--- replica {i} ---\n{s.log_tail(60)}" for i, s in enumerate(self.servers))


@contextlib.contextmanager
def replicas(
    workdir: Path, *, count: int = 2, config: Mapping[str, Any] | None = None
) -> Iterator[ReplicaSet]:
    """`count` replicas on fresh throwaway stores; all stopped (SIGTERM) and removed afterwards."""
    backup_dir = workdir / "backups"  # one folder for all, as a shared volume
    settings: dict[str, Any] = {**(config or {}), "backup": {**dict((config or {}).get("backup", {}))}}
    settings["backup"]["dir"] = str(backup_dir)
    with (
        workspace_standin() as standin,
        throwaway_database("gbt_replicas") as store,
        throwaway_database("gbt_target") as target,
        redis_prefix() as prefix,
    ):
        gate = gated_pg_dump(workdir / "pg-bin")
        gate.open()
        replica_set = ReplicaSet(
            workdir=workdir,
            standin=standin,
            database_url=store,
            target_database_url=target,
            prefix=prefix,
            gate=gate,
            backup_dir=backup_dir,
            config=settings,
        )
        try:
            replica_set.start(count)
            yield replica_set
        finally:
            replica_set.stop()
            gate.open()  # a pg_dump still waiting (its replica killed) goes on and ends
