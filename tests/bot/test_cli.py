"""`gardenbot` as a deployer and an operator use it: migrate, run (exit codes), approvals, verify."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess

from commands.base import Actor, ConsoleOrigin, Request
from store.db import Store, migration_files
from tests.support.runtime import (
    CONSOLE_ADMIN,
    GARDENBOT,
    OS_LOGIN,
    REPO_ROOT,
    BotWorld,
    closed_port,
    run_gardenbot,
    target_redis,
)
from tests.support.servers import throwaway_database

MIGRATIONS = [name for name, _ in migration_files()]


def tables_named(world_or_url: BotWorld | str, name: str) -> int:
    import psycopg

    url = world_or_url if isinstance(world_or_url, str) else world_or_url.database_url
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname = %s AND relkind = 'r'", (name,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def run_json(world: BotWorld, user: str, text: str) -> tuple[int, dict[str, object]]:
    result = world.cli("run", "--user", user, "--json", text)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def run_json_as_login(world: BotWorld, text: str) -> tuple[int, dict[str, object]]:
    """`gardenbot run --json TEXT` with no --user: as whoever the OS login maps to."""
    result = world.cli("run", "--json", text)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_migrate_applies_once_and_then_is_a_no_op(bot_world: BotWorld) -> None:
    first = bot_world.cli("migrate")
    second = bot_world.cli("migrate")

    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    assert first.stdout.strip() == "migrations applied: " + ", ".join(MIGRATIONS)
    assert second.stdout.strip() == "migrations applied: none (up to date)"
    versions = bot_world.query("SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in versions] == MIGRATIONS


def test_two_migrating_processes_on_a_fresh_database_both_succeed(bot_world: BotWorld) -> None:
    bot_world.write_yaml()
    env = {"PATH": "/usr/bin:/bin", **bot_world.env}
    children = [
        subprocess.Popen(
            [str(GARDENBOT), "migrate"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=60) for child in children]

    assert [child.returncode for child in children] == [0, 0], outputs
    assert sorted(out.strip() for out, _ in outputs) == sorted(
        ["migrations applied: " + ", ".join(MIGRATIONS), "migrations applied: none (up to date)"]
    )
    assert tables_named(bot_world, "audit_log") == 1
    assert tables_named(bot_world, "schema_migrations") == 1
    assert bot_world.query("SELECT count(*) FROM schema_migrations") == [(len(MIGRATIONS),)]


async def test_two_stores_migrating_at_once_apply_each_migration_once() -> None:
    with throwaway_database() as url:
        stores = [Store(url, max_size=2) for _ in range(2)]
        for store in stores:
            await store.open()
        try:
            applied = await asyncio.gather(*(store.migrate() for store in stores))
        finally:
            for store in stores:
                await store.close()
        assert sorted(applied, key=len) == [[], MIGRATIONS]
        assert tables_named(url, "jobs") == 1


def test_health_all_well_exits_0(bot_world: BotWorld) -> None:
    code, reply = run_json(bot_world, "U0INTERN", "health")

    assert code == 0, reply
    assert reply["status"] == "succeeded"
    assert "database" in str(reply["text"])


def test_health_with_the_target_database_down_exits_1_naming_it(bot_world: BotWorld) -> None:
    bot_world.target_database_url = f"postgresql://garden@127.0.0.1:{closed_port()}/garden_dx"

    result = bot_world.cli("run", "--user", "U0OPS", "health")

    assert result.returncode == 1, (result.stdout, result.stderr)
    [database_row] = [line for line in result.stdout.splitlines() if " database " in line]
    assert database_row.startswith("✗")
    assert "FAIL" in database_row
    for other in ("API /health", "cache (Redis)"):
        [row] = [line for line in result.stdout.splitlines() if other in line]
        assert row.startswith("✓"), row


def test_an_unknown_user_exits_2_with_a_polite_line(bot_world: BotWorld) -> None:
    result = bot_world.cli("run", "--user", "U0STRANGER", "health")

    assert result.returncode == 2
    assert result.stdout.strip().startswith("Sorry, you (U0STRANGER) have no role")


def test_run_without_a_user_acts_as_the_slack_user_the_os_login_maps_to(bot_world: BotWorld) -> None:
    # Changed with the console's identity rule: no --user needed, the OS login names the user.
    code, reply = run_json_as_login(bot_world, "help")

    assert code == 0, reply
    assert "cache flush" in str(reply["text"])  # help lists what an admin may run
    [(actor, console)] = bot_world.query("SELECT actor, detail->'console' FROM audit_log")
    assert actor == CONSOLE_ADMIN
    assert console == {"os_login": OS_LOGIN, "host": socket.gethostname()}


def test_a_viewer_asking_for_an_admin_command_exits_2(bot_world: BotWorld) -> None:
    code, reply = run_json(bot_world, "U0INTERN", "cache flush")

    assert code == 2
    assert reply["status"] == "refused"


async def test_cache_flush_waits_for_approval_then_runs_when_approved(
    bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    # Changed with the console's identity rule: the second person is another console login (in
    # process), since this OS login asked and may not decide whoever it acts as.
    code, asked = run_json(bot_world, "U0ADMIN", "cache flush")
    assert (code, asked["status"]) == (3, "pending"), asked
    approval_id = asked["approval_id"]
    assert isinstance(approval_id, int)

    own_code, own = run_json(bot_world, "U0ADMIN", f"approve {approval_id}")
    assert target_redis().dbsize() == len(target_keys)
    lead = Request(
        actor=Actor(user_id="U0LEAD"),
        text=f"approve {approval_id}",
        source="console",
        console=ConsoleOrigin(os_login="lead-login", host="lead-laptop"),
    )
    async with bot_world.runtime() as runtime:
        started = await runtime.pipeline.handle(lead)
        job_id = started.ids.get("job_id")
        assert isinstance(job_id, int), started
        done = await runtime.pipeline.runner.wait(job_id)

    assert (own_code, own["status"]) == (2, "refused")
    assert done.status == "succeeded", done
    assert target_redis().dbsize() == 0
    verify = bot_world.cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout
    events = [e for (e,) in bot_world.query("SELECT event FROM audit_log ORDER BY id")]
    for event in ("approval_opened", "approval_decision", "approval_approved", "job_started", "job_finished"):
        assert event in events


def test_the_console_needs_no_embedded_servers_when_stores_are_given(bot_world: BotWorld) -> None:
    result = run_gardenbot(bot_world.env, "run", "--user", "U0ADMIN", "help", timeout=60)

    assert result.returncode == 0
    assert "cache flush" in result.stdout
