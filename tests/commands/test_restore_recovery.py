"""After a crash: a restore whose process died during the swap leaves the live database refusing
every login, and the next start-up allows it again and says so; copies a killed verify or restore
left on the target server are dropped by the next verify or restore, which says which.
"""

from __future__ import annotations

import socket

from core.reply import Text
from runbooks.verify_backup import scratch_database_name
from store.jobs import INTERRUPTED_ERROR
from tests.support.backup_env import ADMIN, LEAD, OPERATOR, BackupWorld, admin_query, take_backup
from tests.support.runtime import BotWorld
from tests.support.servers import drop_database


def insert_dead_restore_job(world: BotWorld) -> int:
    """A restore job of a process that stopped ten minutes ago (no heartbeat since, no lock)."""
    [(job_id,)] = world.query(
        "INSERT INTO jobs (command, requested_by, approved_by, source, correlation_id, status,"
        " owner_host, owner_pid, owner_instance, lock_name, heartbeat_at, started_at)"
        " VALUES ('restore', %s, %s, 'console', 'c-killed', 'running', %s, 1, 'killed', 'backup',"
        " now() - interval '10 minutes', now() - interval '10 minutes') RETURNING id",
        (ADMIN, LEAD, socket.gethostname()),
    )
    return int(job_id)


def allows_connections(name: str) -> bool:
    [(allowed,)] = admin_query("SELECT datallowconn FROM pg_database WHERE datname = %s", (name,))
    return bool(allowed)


async def test_start_up_after_a_restore_killed_mid_swap_allows_the_live_database_again_and_says_so(
    world: BackupWorld,
) -> None:
    async with world.bot.runtime():
        pass  # the first start creates the tables
    job_id = insert_dead_restore_job(world.bot)
    # What the killed swap left: committed before it drained sessions, undone only by its `finally`.
    admin_query(f'ALTER DATABASE "{world.target_name}" WITH ALLOW_CONNECTIONS false')
    try:
        async with world.bot.runtime() as rt:
            [job] = rt.startup.interrupted
            health = await world.run(rt, OPERATOR, "health")

        assert job.id == job_id and job.status == "interrupted"
        assert allows_connections(world.target_name)
        assert world.fingerprint()["counts"]  # logins work again
        assert job.error is not None and world.target_name in job.error
        assert "accept connections again" in job.error
        [row] = world.store_rows("SELECT status, error FROM jobs WHERE id = %s", (job_id,))
        assert row == {"status": "interrupted", "error": job.error}
        [audit] = world.store_rows(
            "SELECT detail FROM audit_log WHERE event = 'job_finished' AND detail->>'job_id' = %s",
            (str(job_id),),
        )
        assert audit["detail"]["recovery"] == job.error
        assert "refuses connections" not in " ".join(str(e) for e in health.elements)
    finally:
        admin_query(f'ALTER DATABASE "{world.target_name}" WITH ALLOW_CONNECTIONS true')


async def test_start_up_after_a_restore_killed_outside_the_swap_changes_nothing(world: BackupWorld) -> None:
    async with world.bot.runtime():
        pass
    job_id = insert_dead_restore_job(world.bot)

    async with world.bot.runtime() as rt:
        [job] = rt.startup.interrupted

    assert job.id == job_id and job.error == INTERRUPTED_ERROR
    assert allows_connections(world.target_name)


async def test_health_names_a_live_database_left_refusing_logins(world: BackupWorld) -> None:
    admin_query(f'ALTER DATABASE "{world.target_name}" WITH ALLOW_CONNECTIONS false')
    try:
        async with world.bot.runtime() as rt:
            reply = await world.run(rt, OPERATOR, "health")
    finally:
        admin_query(f'ALTER DATABASE "{world.target_name}" WITH ALLOW_CONNECTIONS true')
    said = " ".join(str(e) for e in reply.elements)
    assert "refuses connections" in said, said
    assert f"ALTER DATABASE {world.target_name} WITH ALLOW_CONNECTIONS true" in said


async def test_backup_verify_drops_what_a_killed_verify_or_restore_left_and_says_which(
    world: BackupWorld,
) -> None:
    scratch = scratch_database_name()
    abandoned = f"{world.target_name}_restore_20200101_000000"
    before = f"{world.target_name}_before_20200101_000000"
    for name in (scratch, abandoned, before):
        admin_query(f'CREATE DATABASE "{name}"')
    try:
        async with world.bot.runtime() as rt:
            backup_id = await take_backup(world, rt)
            reply = await world.run(rt, OPERATOR, f"backup verify {backup_id}")

        assert reply.status == "succeeded", reply
        [line] = [e.text for e in reply.elements if isinstance(e, Text) and "Dropped" in e.text]
        assert scratch in line and abandoned in line
        assert world.related_databases() == {before}  # retention's to drop, not the sweep's
        assert admin_query("SELECT 1 FROM pg_database WHERE datname = %s", (scratch,)) == []
        assert world.fingerprint()["counts"]
    finally:
        for name in (scratch, abandoned, before):
            drop_database(name)


async def test_a_restore_drops_an_abandoned_restore_copy_first_and_says_so(world: BackupWorld) -> None:
    abandoned = f"{world.target_name}_restore_20200101_000000"
    admin_query(f'CREATE DATABASE "{abandoned}"')
    try:
        async with world.bot.runtime() as rt:
            backup_id = await take_backup(world, rt)
            asked = await world.handle(rt, ADMIN, f"restore {backup_id}")
            done = await world.approve(rt, LEAD, int(asked.ids["approval_id"]))

        assert done.status == "succeeded", done
        said = " ".join(e.text for e in done.elements if isinstance(e, Text))
        assert f"Dropped what an interrupted verify or restore left on the target server: {abandoned}" in said
        [kept] = world.related_databases()
        assert kept.startswith(f"{world.target_name}_before_")
    finally:
        drop_database(abandoned)
