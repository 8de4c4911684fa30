"""A job's lock in the real world: Redis restarted empty, Redis gone, a second job, start-up
recovery beside a live job of another process namespace, and an approval whose job cannot start.

The backup jobs here run a pg_dump that waits at a gate (tests/support/faults.py), so a job is
running for exactly as long as a test needs; Redis is a private redis-server the test kills and
restarts. Heartbeats are a fraction of a second through the `jobs` settings.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.runtime import Runtime, keep_sweeping
from commands.base import Actor, Request
from core.reply import Reply
from store.coordination import Coordination
from tests.support.backup_env import ADMIN, LEAD, OPERATOR, BackupWorld, take_backup
from tests.support.faults import GatedPgDump, PrivateRedis, gated_pg_dump, private_redis
from tests.support.runtime import BotWorld
from tests.support.servers import REDIS_URL

QUICK = {"heartbeat_seconds": 0.2, "lock_ttl_seconds": 2, "stale_after_seconds": 2}
SLOW = {"heartbeat_seconds": 30, "lock_ttl_seconds": 60, "stale_after_seconds": 60}  # never beats in a test


def with_gate_and_redis(
    world: BackupWorld, tmp_path: Path, server: PrivateRedis, jobs: dict[str, float]
) -> GatedPgDump:
    gate = gated_pg_dump(tmp_path / "pg-bin")
    world.set_env(REDIS_URL=server.url, GARDENBOT_PG_BIN_DIR=str(gate.folder))
    world.bot.configure(jobs=jobs)
    return gate


async def start_backup(world: BackupWorld, rt: Any, gate: GatedPgDump) -> int:
    reply = await world.handle(rt, OPERATOR, "backup")
    assert reply.status == "running", reply
    await asyncio.to_thread(gate.wait_started)
    return int(reply.ids["job_id"])


def job_finished_audit(world: BackupWorld, job_id: int) -> list[dict[str, Any]]:
    return world.store_rows(
        "SELECT outcome, detail FROM audit_log WHERE event = 'job_finished' AND detail->>'job_id' = %s",
        (str(job_id),),
    )


async def test_a_backup_whose_lock_vanishes_with_a_redis_restart_stops_failed_saying_lock_lost(
    world: BackupWorld, tmp_path: Path
) -> None:
    with private_redis() as server:
        gate = with_gate_and_redis(world, tmp_path, server, QUICK)
        async with world.bot.runtime() as rt:
            job_id = await start_backup(world, rt, gate)
            server.kill()
            server.start()  # back, with nothing in it: the lock key is gone

            reply: Reply = await asyncio.wait_for(rt.pipeline.runner.wait(job_id), 10)

            assert reply.status == "failed"
            assert f"Job {job_id} was stopped: it lost its backup lock" in reply.summary
            [job] = world.store_rows("SELECT status, error FROM jobs WHERE id = %s", (job_id,))
            assert job["status"] == "failed" and "lost its backup lock" in job["error"]
            assert [b["status"] for b in world.backups()] != ["good"]
            [audit] = job_finished_audit(world, job_id)
            assert audit["outcome"] == "failed" and audit["detail"]["reason"] == "job.lock_lost"
            assert world.files() == []

            gate.open()
            again = await world.run(rt, OPERATOR, "backup")  # the stopped job let its lock go
            assert again.status == "succeeded", again.summary


async def test_a_second_backup_is_refused_while_the_first_runs_though_redis_restarted_empty(
    world: BackupWorld, tmp_path: Path
) -> None:
    with private_redis() as server:
        gate = with_gate_and_redis(world, tmp_path, server, SLOW)
        async with world.bot.runtime() as rt:
            first = await start_backup(world, rt, gate)
            server.kill()
            server.start()
            assert server.client().keys("*") == []

            second = await world.handle(rt, OPERATOR, "backup")

            assert second.status == "refused", second.summary
            assert f"job {first}" in second.summary
            assert [j["id"] for j in world.jobs()] == [first]
            gate.open()
            done = await asyncio.wait_for(rt.pipeline.runner.wait(first), 60)
            assert done.status == "succeeded"


async def test_a_job_whose_redis_stays_unreachable_stops_before_its_lock_could_expire(
    world: BackupWorld, tmp_path: Path
) -> None:
    with private_redis() as server:
        gate = with_gate_and_redis(world, tmp_path, server, QUICK)
        async with world.bot.runtime() as rt:
            job_id = await start_backup(world, rt, gate)
            server.kill()
            await asyncio.sleep(0.5)  # a short outage: the lock's TTL (2 s) still covers us
            assert job_id in rt.pipeline.runner.running()

            reply: Reply = await asyncio.wait_for(rt.pipeline.runner.wait(job_id), 10)

            assert reply.status == "failed"
            assert "could not be confirmed (Redis unreachable)" in reply.summary
            [job] = world.store_rows("SELECT status FROM jobs WHERE id = %s", (job_id,))
            assert job["status"] == "failed"
            [audit] = job_finished_audit(world, job_id)
            assert audit["detail"]["reason"] == "job.lock_unconfirmed"


# --- start-up recovery decides by heartbeat and lock, never by pid --------------------------------


def a_dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def insert_backup_job(world: BotWorld, *, heartbeat: str) -> int:
    """A running backup job of another instance on this host name whose pid is not visible here
    (another container or PID namespace), last heard from `heartbeat` ago."""
    [(job_id,)] = world.query(
        "INSERT INTO jobs (command, requested_by, source, correlation_id, status, owner_host,"
        " owner_pid, owner_instance, lock_name, heartbeat_at, started_at)"
        " VALUES ('backup', 'U0OPS', 'console', 'c-elsewhere', 'running', %s, %s, 'other-ns', 'backup',"
        f" now() - interval '{heartbeat}', now() - interval '{heartbeat}') RETURNING id",
        (socket.gethostname(), a_dead_pid()),
    )
    return int(job_id)


async def test_start_up_keeps_a_live_job_whose_pid_is_invisible_and_interrupts_a_silent_one(
    bot_world: BotWorld,
) -> None:
    async with bot_world.runtime():
        pass  # the first start creates the tables
    coordination = Coordination(REDIS_URL, prefix=bot_world.redis_prefix)
    try:
        live = insert_backup_job(bot_world, heartbeat="1 second")
        await coordination.acquire_lock("backup", holder={"job_id": live}, ttl_seconds=30)
        silent = insert_backup_job(bot_world, heartbeat="10 minutes")  # and it holds no lock

        async with bot_world.runtime() as runtime:
            reported = [job.id for job in runtime.startup.interrupted]

        assert reported == [silent]
        assert dict(bot_world.query("SELECT id, status FROM jobs")) == {
            live: "running",
            silent: "interrupted",
        }
        assert await coordination.lock_holder("backup") == {"job_id": live}  # its lock was not broken
    finally:
        await coordination.close()


async def test_start_up_keeps_a_job_that_still_holds_its_lock_though_its_heartbeat_is_late(
    bot_world: BotWorld,
) -> None:
    async with bot_world.runtime():
        pass
    coordination = Coordination(REDIS_URL, prefix=bot_world.redis_prefix)
    try:
        late = insert_backup_job(bot_world, heartbeat="10 minutes")  # its store beats failed meanwhile
        await coordination.acquire_lock("backup", holder={"job_id": late}, ttl_seconds=30)

        async with bot_world.runtime() as runtime:
            assert runtime.startup.interrupted == []

        assert bot_world.query("SELECT status FROM jobs") == [("running",)]
    finally:
        await coordination.close()


# --- an approval whose job cannot start is not used up ------------------------------------------------


async def test_an_approval_whose_job_finds_the_lock_busy_stays_pending_and_says_who_holds_it(
    world: BackupWorld, tmp_path: Path
) -> None:
    gate = gated_pg_dump(tmp_path / "pg-bin")
    gate.open()
    world.set_env(GARDENBOT_PG_BIN_DIR=str(gate.folder))
    async with world.bot.runtime() as rt:
        backup_id = await take_backup(world, rt)
        gate.close()
        running = await start_backup(world, rt, gate)
        asked = await world.handle(rt, ADMIN, f"restore {backup_id}")
        assert asked.status == "pending", asked.summary
        approval_id = int(asked.ids["approval_id"])

        busy = await rt.pipeline.decide(
            Request(actor=Actor(user_id=LEAD), text=f"approve {approval_id}", source="console", locale="en"),
            approval_id,
            "approved",
        )

        assert busy.status == "refused", busy.summary
        assert f"job {running}" in busy.summary and OPERATOR in busy.summary
        assert f"approval {approval_id} is still pending" in busy.summary
        [approval] = world.approvals()
        assert (approval["status"], approval["decided_by"], approval["job_id"]) == ("pending", None, None)
        assert [j["command"] for j in world.jobs()].count("restore") == 0

        gate.open()
        await asyncio.wait_for(rt.pipeline.runner.wait(running), 60)
        again = await world.approve(rt, LEAD, approval_id)
        assert again.status == "succeeded", again.summary
        assert world.approvals()[0]["status"] == "approved"


# --- while serving: a replica killed mid-job --------------------------------------------------------


class _Rounds(Exception):
    """Raised by the fake sleep to end `keep_sweeping` after its rounds."""


async def test_a_serving_bot_marks_a_job_interrupted_once_its_process_has_gone_silent(
    bot_runtime: Runtime, bot_world: BotWorld
) -> None:
    live = insert_backup_job(bot_world, heartbeat="1 second")
    rounds = iter(range(2))

    async def one_round_then_stop(_: float) -> None:
        if next(rounds) == 1:
            raise _Rounds

    # The other replica's job falls silent after this process started: no restart follows.
    silent = insert_backup_job(bot_world, heartbeat="10 minutes")
    with pytest.raises(_Rounds):
        await keep_sweeping(bot_runtime, sleep=one_round_then_stop)

    assert dict(bot_world.query("SELECT id, status FROM jobs")) == {live: "running", silent: "interrupted"}
    [(finished,)] = bot_world.query("SELECT finished_at IS NOT NULL FROM jobs WHERE id = %s", (silent,))
    assert finished


def record_lock_claims(world: BotWorld) -> None:
    """Every write of a job_locks row is copied to lock_claims (a trigger in this test's store)."""
    world.query(
        "CREATE TABLE lock_claims (name text, holder jsonb);"
        " CREATE FUNCTION note_claim() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN INSERT INTO lock_claims VALUES (NEW.name, NEW.holder); RETURN NEW; END$$;"
        " CREATE TRIGGER note_claim AFTER INSERT OR UPDATE ON job_locks"
        " FOR EACH ROW EXECUTE FUNCTION note_claim()"
    )


async def test_a_serving_bot_sweeping_with_nothing_to_clean_leaves_the_backup_lock_free_for_a_typed_backup(
    bot_runtime: Runtime, bot_world: BotWorld
) -> None:
    # A sweep that takes the backup lock to look for partial files refuses a backup typed meanwhile
    # ("already running (job cleanup …)"), on every replica, every round: it must not take it idly.
    record_lock_claims(bot_world)
    rounds = iter(range(2))

    async def one_round_then_stop(_: float) -> None:
        if next(rounds) == 1:
            raise _Rounds

    with pytest.raises(_Rounds):
        await keep_sweeping(bot_runtime, sleep=one_round_then_stop)

    assert bot_world.query("SELECT name, holder FROM lock_claims") == []


async def test_a_serving_bot_sweeping_removes_a_partial_backup_file_left_behind_under_the_backup_lock(
    bot_runtime: Runtime, bot_world: BotWorld
) -> None:
    record_lock_claims(bot_world)
    backup_dir = bot_runtime.settings.backup_dir
    backup_dir.mkdir(parents=True, exist_ok=True)
    left = backup_dir / "garden-20260101T020000Z.dump.partial"
    left.write_bytes(b"PGDMP")
    rounds = iter(range(2))

    async def one_round_then_stop(_: float) -> None:
        if next(rounds) == 1:
            raise _Rounds

    with pytest.raises(_Rounds):
        await keep_sweeping(bot_runtime, sleep=one_round_then_stop)

    assert not left.exists()
    assert bot_world.query("SELECT name, holder->>'job_id' FROM lock_claims") == [("backup", "cleanup")]
