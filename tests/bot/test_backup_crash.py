"""kill -9 in the middle of a backup: the next start says so, cleans up, and frees the lock.

A real `gardenbot run backup` process dumps a pgbench database big enough to take a moment; it is
killed with SIGKILL once its `.dump.partial` file appears, then the next `gardenbot run` is looked at.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.backup_env import OPERATOR, BackupWorld, backup_world, load_pgbench, sha256_file
from tests.support.runtime import start_gardenbot

# The killed job's heartbeat and lock lapse within a second or two; start-up recovery looks at those
# (never at the pid, which another container could reuse), so the test waits that long.
JOBS_TIMING = {"heartbeat_seconds": 0.2, "lock_ttl_seconds": 1.0, "stale_after_seconds": 1.5}
PGBENCH_SCALE = 30  # ~3 million rows: about a second to make, a couple of seconds to dump
WAIT_FOR_PARTIAL_S = 60


def start_backup(world: BackupWorld) -> subprocess.Popen[str]:
    world.bot.write_yaml()
    return start_gardenbot(world.bot.env, "run", "--user", OPERATOR, "--json", "backup")


def wait_for_partial(world: BackupWorld, proc: subprocess.Popen[str]) -> Path:
    deadline = time.monotonic() + WAIT_FOR_PARTIAL_S
    while time.monotonic() < deadline:
        found = sorted(world.backup_dir.glob("*.dump.partial")) if world.backup_dir.is_dir() else []
        if found:
            return found[0]
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the backup ended (exit {proc.returncode}) before it could be killed:\n{out}\n{err}")
        time.sleep(0.01)
    proc.kill()
    proc.communicate()
    pytest.fail("no partial backup file appeared")


def target_sessions(world: BackupWorld) -> int:
    rows = world.target_rows(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return int(rows[0][0])


def test_a_backup_killed_with_sigkill_is_interrupted_cleaned_up_and_unlocked(
    tmp_path: Path, health_api_url: str
) -> None:
    with backup_world(tmp_path, health_api_url) as world:
        load_pgbench(world.target_url, PGBENCH_SCALE)
        world.bot.configure(jobs=JOBS_TIMING)
        proc = start_backup(world)
        try:
            partial = wait_for_partial(world, proc)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the backup finished before the kill"
        assert partial.exists()  # nobody cleaned up yet
        [dead_job] = world.jobs()
        assert dead_job["status"] == "running"  # as the killed process left it
        [dead_backup] = world.backups()
        assert dead_backup["status"] == "running"

        # The killed bot's pg_dump does not dump on: its pipe is gone, so its session ends.
        deadline = time.monotonic() + 20
        while target_sessions(world) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert target_sessions(world) == 0
        time.sleep(JOBS_TIMING["stale_after_seconds"] + 0.5)  # silent past the stale limit

        code, out, err = world.cli(OPERATOR, "jobs")

        assert code == 0, (out, err)
        assert f"Job {dead_job['id']} (backup) was interrupted" in err
        row = next(line for line in out["text"].splitlines() if line.lstrip().startswith(str(dead_job["id"])))
        assert "interrupted" in row, out["text"]
        assert world.jobs()[0]["status"] == "interrupted"
        backup = world.backups()[0]
        assert backup["status"] == "interrupted"  # never good
        assert backup["sha256"] is None and backup["size_bytes"] is None
        assert not partial.exists()
        assert world.files() == []

        # The dead job's lock is free: the start that found it interrupted broke it.
        code, out, err = world.cli(OPERATOR, "backup")

        assert code == 0, (out, err)
        assert out["status"] == "succeeded"
        assert isinstance(out["job_id"], int) and out["job_id"] != dead_job["id"]
        fresh = world.backup_row(int(out["backup_id"]))
        assert fresh["status"] == "good"
        assert fresh["row_counts"]["public.pgbench_accounts"] == PGBENCH_SCALE * 100_000
        assert world.files() == [fresh["file_name"]]
        assert sha256_file(world.backup_dir / fresh["file_name"]) == fresh["sha256"]
        assert "interrupted" not in err  # that was reported once, by the first start after the crash
        assert [b["status"] for b in world.backups()] == ["interrupted", "good"]
